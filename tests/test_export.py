"""mlhead export --format onnx on tiny random-init encoders: onnxruntime's scores equal torch's (images and
texts), the folder is self-contained (labels, rule, preprocessing, model card), and docs/export.md's
script (onnxruntime + numpy + Pillow only) gives the labels mlhead.load(...).predict gives."""

from __future__ import annotations

import json
import re
import sys
import types
from pathlib import Path

import numpy as np
import pytest

import mlhead
from mlhead.errors import ConfigError, DependencyError
from mlhead.export import export_run
from mlhead.rules import DecisionRule

ort = pytest.importorskip("onnxruntime")
DOC = Path(__file__).resolve().parents[1] / "docs" / "export.md"


def doc_script() -> types.ModuleType:
    """The Python block of docs/export.md as a module (it must import neither torch nor mlhead)."""
    code = re.search(r"```python\n(.*?)```", DOC.read_text(), re.S).group(1)
    assert not re.search(r"^\s*(import|from) (torch|mlhead)", code, re.M)
    mod = types.ModuleType("label_doc")
    exec(compile(code, str(DOC), "exec"), mod.__dict__)
    return mod


def test_image_export_round_trip(image_run, tmp_path):
    run_dir, paths, _ = image_run
    res = export_run(run_dir, tmp_path / "tagger")
    folder = res.path
    assert {"model.onnx", "labels.json", "rule.json", "preprocessing.json", "README.md"} <= set(res.files)
    assert res.max_abs_diff is not None and res.max_abs_diff < 1e-4
    clf = mlhead.load(run_dir, precision="fp32")
    assert json.loads((folder / "labels.json").read_text()) == clf.classes
    assert DecisionRule.from_dict(json.loads((folder / "rule.json").read_text())) == clf.rule
    card = (folder / "README.md").read_text()
    assert "sigmoid>=0.5" in card and "weighted_f1" in card and "train 12, val 4, test 4" in card
    files = sorted(paths.values())
    label = doc_script()
    pre = json.loads((folder / "preprocessing.json").read_text())
    pixels = np.stack([label.pixels(p, pre) for p in files])
    enc = clf.encoder  # the doc's numpy preprocessing equals the encoder's own, pixel for pixel
    want = enc.prepare(enc.collate([enc.read(p) for p in files])).numpy()
    np.testing.assert_allclose(pixels, want, atol=1e-6)
    sess = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    scores = sess.run(["scores"], {"pixels": pixels})[0]
    np.testing.assert_allclose(scores, clf.scores(files), atol=1e-4)
    assert label.label(folder, files) == clf.predict(files)


def test_text_export_round_trip(text_run, tmp_path):
    from tokenizers import Tokenizer

    run_dir, texts = text_run
    rule = DecisionRule(top_k=2)
    res = export_run(run_dir, tmp_path / "t", rule=rule)
    assert res.max_abs_diff < 1e-4 and "tokenizer/tokenizer.json" in res.files
    pre = json.loads((res.path / "preprocessing.json").read_text())
    tok = Tokenizer.from_file(str(res.path / pre["tokenizer"]))
    tok.enable_truncation(pre["max_length"])
    tok.enable_padding()
    enc = tok.encode_batch(texts)
    feeds = {"input_ids": np.array([e.ids for e in enc], np.int64),
             "attention_mask": np.array([e.attention_mask for e in enc], np.int64)}
    sess = ort.InferenceSession(str(res.path / "model.onnx"), providers=["CPUExecutionProvider"])
    logits, scores = sess.run(["logits", "scores"], feeds)
    clf = mlhead.load(run_dir, rule=rule, precision="fp32")
    np.testing.assert_allclose(scores, clf.scores(texts), atol=1e-4)
    label = doc_script()
    chosen = label.decide(label.activate(logits, "softmax"), json.loads((res.path / "rule.json").read_text()))
    assert [[c for c, on in zip(clf.classes, row) if on] for row in chosen] == clf.predict(texts)
    assert "not evaluated under this rule" in (res.path / "README.md").read_text()


def test_export_refusals(image_run, tmp_path, monkeypatch):
    run_dir = image_run[0]
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("keep me")
    with pytest.raises(ConfigError, match="not an empty folder"):
        export_run(run_dir, tmp_path / "full")
    assert (tmp_path / "full" / "x").read_text() == "keep me"
    with pytest.raises(ConfigError, match="--format 'tflite'"):
        export_run(run_dir, tmp_path / "o", "tflite")
    monkeypatch.setitem(sys.modules, "onnx", None)
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(DependencyError, match=r"pip install 'mlhead\[export\]'"):
        export_run(run_dir, tmp_path / "o")
    assert not (tmp_path / "o").exists()
