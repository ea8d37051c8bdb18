"""mlhead.load / Classifier and the predict input stream, on tiny random-init encoders (timm test model with
a saved weights file; a 2-layer BERT): predictions on raw inputs equal eval's on the cached embeddings;
the encoder is rebuilt from the cache and its weights checked; inputs from folders, tables, text files
and stdin; bad rows raised or skipped; output streamed to CSV/JSONL."""

from __future__ import annotations

import csv
import io
import itertools
import json
import shutil

import numpy as np
import pytest
from PIL import Image

import mlhead
from conftest import fit_tiny_run, make_images
from mlhead.cache import open_cache
from mlhead.errors import BackboneError, CacheError, ConfigError, DatasetError
from mlhead.inputs import BadRow, InputOptions, iter_inputs
from mlhead.predict import PredictionWriter, cache_batches, predict_to
from mlhead.rules import DecisionRule
from mlhead.runs import evaluate_run, predict as eval_logits

def test_image_predictions_equal_eval_on_the_cache(image_run):
    run_dir, paths, _ = image_run
    clf = mlhead.load(run_dir)
    assert clf.rule.name == "sigmoid>=0.5" and clf.classes == ["a", "b", "c"]  # the rule eval last used
    want, _, ids, _ = eval_logits(run_dir, "test")
    files = [paths[i] for i in ids]
    np.testing.assert_allclose(clf.logits(files), want, atol=1e-5)
    scores = clf.scores([str(f) for f in files])
    assert scores.dtype == np.float32 and scores.shape == (len(ids), 3)
    np.testing.assert_allclose(scores, 1 / (1 + np.exp(-want)), atol=1e-5)
    assert clf.predict(files) == clf.label_names(clf.rule.apply(want))
    with Image.open(files[0]) as im:  # PIL images and embedding arrays take the same path to the head
        np.testing.assert_allclose(clf.scores([im.copy()]), scores[:1], atol=1e-6)
    X, _, _ = open_cache(clf.config.cache).load("test")
    np.testing.assert_allclose(clf.logits(X.numpy()), want, atol=1e-6)


def test_text_predictions_equal_eval_on_the_cache(text_run):
    run_dir, texts = text_run
    clf = mlhead.load(run_dir, batch_size=3)
    assert clf.rule.name == "softmax>=0.05"  # never evaluated: the run's validation rule
    want, _, ids, _ = eval_logits(run_dir, "test")
    got = clf.logits([texts[int(i)] for i in ids])
    np.testing.assert_allclose(got, want, atol=1e-5)
    with pytest.raises(ConfigError, match="take"):
        clf.logits(np.zeros((2, 5), np.float32))


def test_text_chunks_are_length_batched_in_input_order_with_bad_rows(text_run):
    """Texts take the read_block path: one tokenization per chunk, batches by length (longest first), the
    logits back in input order and equal to encoding each text alone; an empty text is skipped (listed)
    or raised, named by its row."""
    from mlhead.datasets.base import Example

    run_dir, texts = text_run
    clf = mlhead.load(run_dir, batch_size=2)
    assert clf.encoder.read_block is not None
    inputs = texts[:7] + [""] + texts[7:12]
    rows = [Example(f"r{i}", t, [], f"in.txt:{i + 1}") for i, t in enumerate(inputs)]
    skipped = []
    out = list(clf.iter_logits(rows, "skip", skipped))
    assert len(out) == 1  # 13 rows < batch_size x SORT_WINDOW: one chunk
    ids, logits = out[0]
    assert ids == [f"r{i}" for i in range(13) if i != 7]
    assert [(s["id"], s["where"], s["error"]) for s in skipped] == [("r7", "in.txt:8", "empty text")]
    alone = mlhead.load(run_dir, batch_size=1)
    want = np.concatenate([alone.logits([t]) for t in texts[:12]])
    np.testing.assert_allclose(logits, want, atol=1e-5)
    with pytest.raises(DatasetError, match=r"in.txt:8: .*empty text"):
        list(clf.iter_logits(rows))


def test_tuned_thresholds_are_the_default_rule(image_run, tmp_path):
    run_dir = shutil.copytree(image_run[0], tmp_path / "run")
    doc = evaluate_run(run_dir, "test", DecisionRule("sigmoid", tuned_on="val"))
    clf = mlhead.load(run_dir)
    assert clf.rule.name == "per-class tuned on val (sigmoid)"
    np.testing.assert_array_equal(clf.rule.thresholds, doc["rule"]["thresholds"])
    assert mlhead.load(run_dir, rule=DecisionRule(top_k=1)).rule.name == "top-1 (softmax)"


def test_missing_or_wrong_weights_are_named(image_run, tmp_path):
    run_dir, paths, weights = image_run
    moved = tmp_path / "moved.safetensors"
    shutil.move(weights, moved)
    try:
        clf = mlhead.load(run_dir)
        with pytest.raises(BackboneError, match=f"missing: {weights}.*--weights PATH"):
            clf.predict([paths["im00"]])
        assert mlhead.load(run_dir, weights=moved).logits([paths["im00"]]).shape == (1, 3)  # --weights PATH
        from safetensors.torch import load_file, save_file

        state = load_file(str(moved))
        state = {k: v + 0.01 if v.is_floating_point() else v for k, v in state.items()}
        other = tmp_path / "other.safetensors"
        save_file(state, str(other))
        with pytest.raises(BackboneError, match="weights_sha256.*--weights PATH"):
            mlhead.load(run_dir, weights=other).predict([paths["im00"]])
    finally:
        shutil.move(moved, weights)


def test_moved_weights_give_the_same_scores(image_run, tmp_path):
    run_dir, paths, weights = image_run
    copy = shutil.copy(weights, tmp_path / "copy.safetensors")
    files = list(paths.values())[:4]
    np.testing.assert_array_equal(mlhead.load(run_dir, weights=copy).scores(files), mlhead.load(run_dir).scores(files))


def test_inputs_folder_table_text_file_and_stdin(tmp_path):
    imgs = make_images(tmp_path / "f" / "sub", 2) + make_images(tmp_path / "f", 1)
    (tmp_path / "f" / "notes.md").write_text("not an image")
    rows = list(iter_inputs([tmp_path / "f"], InputOptions("image")))
    assert [r.id for r in rows] == sorted(str(p) for p in imgs)
    (tmp_path / "t.txt").write_text("one text\nsecond text\n")
    table = tmp_path / "t.csv"
    table.write_text("key,text,labels\nk1,hello there,a\nk2,bye,\n")
    got = list(iter_inputs([tmp_path / "t.txt", table, "-"],
                           InputOptions("text", id_column="key", stdin=io.StringIO("from stdin\n"))))
    assert [(r.id, r.input) for r in got] == [(f"{tmp_path}/t.txt:1", "one text"), (f"{tmp_path}/t.txt:2", "second text"),
                                              ("k1", "hello there"), ("k2", "bye"), ("-:1", "from stdin")]
    with pytest.raises(DatasetError, match=r"no column 'body'; columns: key, text, labels \(pass --text-column"):
        list(iter_inputs([table], InputOptions("text", text_column="body")))
    with pytest.raises(DatasetError, match="no such file"):
        list(iter_inputs([tmp_path / "nope.png"], InputOptions("image")))
    with pytest.raises(ConfigError, match="--image-column"):
        InputOptions("text", image_column="image")
    bad = tmp_path / "bad.csv"
    bad.write_text("text,labels\nfine,a\ntoo,many,fields\n")
    got = list(iter_inputs([bad], InputOptions("text")))
    assert isinstance(got[1], BadRow) and "3 fields" in got[1].error


def test_bad_rows_raise_or_are_skipped_and_listed(image_run, tmp_path):
    run_dir, paths, _ = image_run
    (tmp_path / "broken.png").write_bytes(b"not a png")
    files = [paths["im00"], tmp_path / "broken.png", paths["im01"], tmp_path / "gone.png"]
    table = tmp_path / "in.csv"
    table.write_text("image\n" + "\n".join(str(f) for f in files) + "\n")
    clf = mlhead.load(run_dir)
    rows = lambda: iter_inputs([table], InputOptions("image"))  # noqa: E731
    with pytest.raises(DatasetError, match=r"in.csv:3: .*broken.png.*--on-error skip"):
        list(clf.iter_logits(rows()))
    skipped: list = []
    out = tmp_path / "p.jsonl"
    summary = predict_to(clf, clf.iter_logits(rows(), "skip", skipped), out, skipped=skipped)
    got = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in got] == ["0", "2"] and summary.rows == 2
    assert [s["id"] for s in summary.skipped] == ["1", "3"] and "gone.png" in summary.skipped[1]["error"]
    np.testing.assert_allclose([list(r["scores"].values()) for r in got],
                               clf.scores([paths["im00"], paths["im01"]]), atol=1e-6)
    assert all(r["rule"] == "sigmoid>=0.5" for r in got)


def test_stream_is_lazy_and_bounded(image_run):
    """An endless input stream yields batches one at a time (nothing is collected first)."""
    run_dir, paths, _ = image_run
    clf = mlhead.load(run_dir, batch_size=4)
    endless = itertools.cycle(iter_inputs([paths["im00"], paths["im01"]], InputOptions("image")))
    batches = list(itertools.islice(clf.iter_logits(endless), 3))
    assert [len(ids) for ids, _ in batches] == [4, 4, 4]


def test_csv_output_cache_input_and_top_scores(image_run, tmp_path):
    run_dir, _, _ = image_run
    clf = mlhead.load(run_dir, rule=DecisionRule(top_k=2))
    n, batches = cache_batches(clf, clf.config.cache, "test", batch_size=3)
    out = tmp_path / "p.csv"
    predict_to(clf, batches, out, top_scores=1)
    rows = list(csv.DictReader(open(out)))
    want, _, ids, _ = eval_logits(run_dir, "test")
    assert len(rows) == n == len(ids) and [r["id"] for r in rows] == ids
    assert [json.loads(r["labels"]) for r in rows] == clf.label_names(clf.rule.apply(want))
    assert all(len(json.loads(r["scores"])) == 1 and r["rule"] == "top-2 (softmax)" for r in rows)
    with pytest.raises(ConfigError, match="FILE.csv, FILE.jsonl"):
        PredictionWriter(tmp_path / "p.txt")
    # a failed run leaves no half-written output and keeps an older file
    def failing():
        yield ids[:1], want[:1]
        raise DatasetError("boom")
    with pytest.raises(DatasetError):
        predict_to(clf, failing(), out)
    assert len(list(csv.DictReader(open(out)))) == n and not list(tmp_path.glob(".*tmp"))


def test_features_cache_runs_predict_only_on_arrays(tmp_path):
    from conftest import make_cache

    cache = make_cache(tmp_path / "c.h5", dim=6, n_classes=3)
    clf = mlhead.load(fit_tiny_run(cache, tmp_path / "runs"))
    assert clf.scores(np.ones((2, 6), np.float32)).shape == (2, 3)
    with pytest.raises(BackboneError, match="without an encoder"):
        clf.predict(["x.png"])


def test_run_record_carries_the_encoder_so_predict_needs_no_cache(image_run, tmp_path):
    run_dir = shutil.copytree(image_run[0], tmp_path / "run")
    cfg = json.loads((run_dir / "config.json").read_text())
    assert cfg["encoder"]["weights_sha256"] and cfg["encoder"]["preprocessing"]["kind"]
    cfg["cache"] = str(tmp_path / "gone.h5")
    (run_dir / "config.json").write_text(json.dumps(cfg))
    images = [str(p) for p in list(image_run[1].values())[:3]]
    np.testing.assert_array_equal(mlhead.load(run_dir).scores(images), mlhead.load(image_run[0]).scores(images))


def test_missing_cache_is_named(image_run, tmp_path):
    run_dir = shutil.copytree(image_run[0], tmp_path / "run")
    cfg = json.loads((run_dir / "config.json").read_text())
    cfg["cache"] = str(tmp_path / "gone.h5")
    cfg.pop("encoder")  # a schema-3 run: the encoder is described by its cache only
    cfg["schema_version"] = 3
    (run_dir / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CacheError, match="gone.h5, which is missing: pass --cache FILE"):
        mlhead.load(run_dir)
    original = json.loads((image_run[0] / "config.json").read_text())["cache"]
    assert mlhead.load(run_dir, cache=original).classes == ["a", "b", "c"]
