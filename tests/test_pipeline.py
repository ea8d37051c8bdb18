"""embed -> fit -> eval end to end through the CLI, on generated images and texts, offline."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import TINY_IMAGE_BACKBONE
from mlhead.cache import open_cache
from mlhead.cli import main
from mlhead.metrics import evaluate
from mlhead.runs import predict


def run(args, ok=True):
    res = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    if ok:
        assert res.exit_code == 0, res.output
    return res


def _fit_eval(tmp_path, cache):
    runs = tmp_path / "runs"
    run(["fit", "--cache", cache, "--loss", "sigmoidf1", "--beta", "1", "--eta", "0", "--epochs", 3,
         "--batch-size", 8, "--hidden", 16, "--runs-dir", runs])
    out = tmp_path / "m.json"
    res = run(["eval", "--runs-dir", runs, "--threshold", "0.05", "--output", out])
    assert "softmax>=0.05" in res.output
    doc = json.loads(out.read_text())
    assert doc["rule"]["activation"] == "softmax" and doc["rule"]["threshold"] == 0.05
    run_dir = next(runs.iterdir())
    logits, targets, _, _ = predict(run_dir, "test")  # the saved head on the cached test split
    want = evaluate(logits, targets, "softmax", 0.05)
    assert {k: doc["metrics"][k] for k in want} == pytest.approx(want, nan_ok=True)
    assert set(doc["metrics"]) - set(want) == {f"{m}@{k}" for m in ("p", "r", "ndcg", "psp") for k in (1, 3)}
    assert {"config.json", "head.safetensors", "history.csv", "metrics.json", "per_class.csv"} <= \
        {p.name for p in run_dir.iterdir()}
    return doc


def test_image_table_pipeline(tmp_path, image_table):
    cache_dir = tmp_path / "cache"
    run(["embed", "--dataset", "table", "--data-dir", image_table, "--image-column", "image",
         "--id-column", "id", "--backbone", TINY_IMAGE_BACKBONE, "--random-init", "--cache-dir", cache_dir,
         "--batch-size", 8, "--workers", 0])
    path = cache_dir / "table" / f"{TINY_IMAGE_BACKBONE}.h5"
    c = open_cache(path)
    assert c.classes == ["bird", "cat", "dog"]
    assert sum(c.shapes[s][0] for s in c.splits) == 30
    X, Y, ids = c.load("train")
    # the table's seeded hash split (each id's split fixed by blake2b(f"44:{id}")): 17 / 7 / 6 of 30
    assert X.shape[0] == 17 and np.isfinite(X.numpy()).all() and set(ids) <= {f"im{i}" for i in range(30)}
    # rerun with the same inputs: reused, not rebuilt
    res = run(["embed", "--dataset", "table", "--data-dir", image_table, "--image-column", "image",
               "--id-column", "id", "--backbone", TINY_IMAGE_BACKBONE, "--random-init", "--cache-dir", cache_dir,
               "--batch-size", 8, "--workers", 0])
    assert "up to date" in res.output
    _fit_eval(tmp_path, path)


def test_text_table_pipeline(tmp_path, text_table, tiny_text_model):
    cache_dir = tmp_path / "cache"
    run(["embed", "--dataset", "table", "--data-dir", text_table, "--text-column", "text",
         "--backbone", tiny_text_model, "--random-init", "--pooling", "mean", "--cache-dir", cache_dir,
         "--batch-size", 16, "--workers", 0])
    path = next(cache_dir.rglob("*.h5"))
    c = open_cache(path)
    assert c.shapes["train"] == (21, 32)  # the seeded hash split of 40 row numbers
    assert c.attrs["preprocessing"]["pooling"] == "mean"
    doc = _fit_eval(tmp_path, path)
    assert doc["run"]["loss"] == "sigmoidf1"


def test_python_dash_m_runs():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "mlhead", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "embed" in out.stdout
