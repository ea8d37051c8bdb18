"""mlhead predict / mlhead export through the CLI on the tiny runs of conftest: stdin and folder inputs,
an unknown column, skipped rows listed, rule overrides named in every row, --cache, CSV output, export."""

from __future__ import annotations

import csv
import json

import numpy as np
from click.testing import CliRunner

import mlhead
from mlhead.cli import main


def run(args, ok=True, **kw):
    res = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False, **kw)
    if ok:
        assert res.exit_code == 0, res.output
    return res


def rows_of(text):
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_folder_and_stdin_inputs(image_run, text_run, tmp_path):
    run_dir, paths, _ = image_run
    res = run(["predict", "--run", run_dir, paths["im00"].parent])
    rows = rows_of(res.stdout)
    assert [r["id"] for r in rows] == [str(p) for p in sorted(paths.values())]
    clf = mlhead.load(run_dir)
    assert [r["labels"] for r in rows] == clf.predict(sorted(paths.values()))
    assert all(r["rule"] == "sigmoid>=0.5" and list(r["scores"]) == clf.classes for r in rows)
    text_dir, texts = text_run
    res = run(["predict", "--run", text_dir, "-", "--top-k", "1", "--scores", "2"], input="\n".join(texts[:3]) + "\n")
    rows = rows_of(res.stdout)
    assert [r["id"] for r in rows] == ["-:1", "-:2", "-:3"]
    assert all(r["rule"] == "top-1 (softmax)" and len(r["labels"]) == 1 and len(r["scores"]) == 2 for r in rows)
    np.testing.assert_allclose([max(r["scores"].values()) for r in rows],
                               mlhead.load(text_dir).scores(texts[:3]).max(1), rtol=1e-5)


def test_unknown_column_and_bad_rows(image_run, tmp_path):
    run_dir, paths, _ = image_run
    table = tmp_path / "in.csv"
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 broken")
    table.write_text("name,path\na," + str(paths["im00"]) + "\nb," + str(tmp_path / "broken.jpg") + "\n")
    res = run(["predict", "--run", run_dir, table], ok=False)
    assert res.exit_code == 2 and "no column 'image'; columns: name, path (pass --image-column NAME)" in res.output
    res = run(["predict", "--run", run_dir, table, "--image-column", "path"], ok=False)
    assert res.exit_code == 2 and "in.csv:3" in res.output and "--on-error skip" in res.output
    out = tmp_path / "p.csv"
    res = run(["predict", "--run", run_dir, table, "--image-column", "path", "--id-column", "name",
               "--on-error", "skip", "-o", out])
    assert [r["id"] for r in csv.DictReader(open(out))] == ["a"]
    assert "skipped 1 bad rows" in res.stderr and "broken.jpg" in res.stderr


def test_cache_input_and_missing_weights(image_run, tmp_path):
    run_dir, paths, weights = image_run
    cache = json.loads((run_dir / "config.json").read_text())["cache"]
    out = tmp_path / "p.jsonl"
    run(["predict", "--run", run_dir, "--cache", cache, "--split", "test", "--activation", "softmax", "-o", out])
    rows = rows_of(out.read_text())
    assert len(rows) == 4 and all(r["rule"] == "softmax>=0.05" for r in rows)
    res = run(["predict", "--run", run_dir, paths["im00"], "--weights", tmp_path / "nope.safetensors"], ok=False)
    assert res.exit_code == 2 and "nope.safetensors" in res.output


def test_export_command(image_run, tmp_path):
    res = run(["export", "--run", image_run[0], "--format", "onnx", "-o", tmp_path / "tagger", "--top-k", "2"])
    assert "top-2 (sigmoid)" in res.stdout and "model.onnx" in res.stdout
    assert json.loads((tmp_path / "tagger" / "rule.json").read_text())["top_k"] == 2
