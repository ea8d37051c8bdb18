"""Stage two: grids, stacked heads equal single fits, training improves, run directories."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from conftest import make_cache
from mlhead.heads import MLPHead, StackedHeads, init_head_state
from mlhead.train import FitConfig, RunSpec, expand_grid, fit


def test_expand_grid_gives_each_loss_only_its_options():
    specs = expand_grid(["sigmoidf1", "crossentropy"], seeds=[0, 1], options={"beta": [1, 5], "eta": [0]})
    sig = [s for s in specs if s.loss == "sigmoidf1"]
    ce = [s for s in specs if s.loss == "crossentropy"]
    assert len(sig) == 4 and len(ce) == 2
    assert {s.options["beta"] for s in sig} == {1.0, 5.0}
    assert all(s.options == {} for s in ce)


def test_expand_grid_rejects_unused_and_bad_options():
    with pytest.raises(ValueError, match="gamma"):
        expand_grid(["sigmoidf1"], options={"gamma": [2]})
    with pytest.raises(ValueError, match="beta"):
        expand_grid(["sigmoidf1"], options={"beta": [0]})
    with pytest.raises(ValueError, match="lr"):
        expand_grid(["crossentropy"], lrs=[0.0])


@pytest.mark.parametrize("hidden", [0, 8])
def test_stacked_heads_forward_equals_mlp_heads(hidden):
    x = torch.randn(5, 6)
    stacked = StackedHeads(6, hidden, 3, [0, 1, 2])
    out = stacked(x)
    for i, seed in enumerate([0, 1, 2]):
        head = MLPHead(6, hidden, 3, seed=seed)
        torch.testing.assert_close(out[i], head(x), rtol=1e-5, atol=1e-6)
        head.load_state_dict(stacked.head_state(i))
        torch.testing.assert_close(out[i], head(x), rtol=1e-5, atol=1e-6)


def test_init_matches_nn_linear_range():
    st = init_head_state(100, 10, 4, seed=3)
    assert st["fc1.weight"].abs().max() <= 0.1 and st["fc2.weight"].abs().max() <= 1 / np.sqrt(10)
    assert not torch.equal(st["fc1.weight"], init_head_state(100, 10, 4, seed=4)["fc1.weight"])


def test_stacked_fit_equals_single_fits(tmp_path):
    cache = make_cache(tmp_path / "c.h5", n=(96, 32, 32), dim=12, n_classes=4)
    cfg = FitConfig(epochs=4, batch_size=32, hidden=8, precision="fp32")
    specs = expand_grid(["sigmoidf1", "crossentropy", "zlpr"], seeds=[0, 1], options={"beta": [2.0]})
    stacked = fit(cache, specs, cfg, write=False)
    for spec, rec in zip(specs, stacked):
        alone = fit(cache, [spec], cfg, write=False)[0]
        assert rec.config["best_epoch"] == alone.config["best_epoch"]
        for k in alone.state:
            torch.testing.assert_close(rec.state[k], alone.state[k], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose([h["val_loss"] for h in rec.history], [h["val_loss"] for h in alone.history],
                                   rtol=1e-4, atol=1e-6)


def test_fit_reduces_loss_and_writes_run_dir(tmp_path):
    cache = make_cache(tmp_path / "c.h5", n=(200, 60, 60), dim=16, n_classes=5)
    recs = fit(cache, [RunSpec("crossentropy", (), 0, 1e-2)], FitConfig(epochs=15, batch_size=32, hidden=16),
               tmp_path / "runs")
    rec = recs[0]
    hist = rec.history
    assert hist[-1]["train_loss"] < 0.7 * hist[0]["train_loss"]
    assert hist[-1]["val_micro_f1"] > hist[0]["val_micro_f1"]
    cfg = json.loads((rec.path / "config.json").read_text())
    assert cfg["cache_fingerprint"] and cfg["loss"] == "crossentropy" and cfg["best_epoch"] >= 1
    assert set(load_file(str(rec.path / "head.safetensors"))) == {"fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"}
    with open(rec.path / "history.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 15 and {"train_loss", "val_loss", "val_micro_f1"} <= set(rows[0])
    best = min(rows, key=lambda r: float(r["val_loss"]))
    assert int(best["epoch"]) == cfg["best_epoch"]


def test_bf16_fit_is_close_to_fp32(tmp_path):
    from mlhead.device import cpu_has_fast_bf16

    if not cpu_has_fast_bf16():
        pytest.skip("CPU without fast bf16")
    cache = make_cache(tmp_path / "c.h5", n=(200, 60, 60), dim=16, n_classes=5)
    spec = [RunSpec("crossentropy", (), 0, 1e-2)]
    a = fit(cache, spec, FitConfig(epochs=10, batch_size=32, hidden=16, precision="fp32"), write=False)[0]
    b = fit(cache, spec, FitConfig(epochs=10, batch_size=32, hidden=16, precision="bf16"), write=False)[0]
    assert b.config["precision"] == "bf16"
    assert abs(a.history[-1]["val_loss"] - b.history[-1]["val_loss"]) < 0.05


def test_fit_refuses_bad_config(tmp_path):
    cache = make_cache(tmp_path / "c.h5")
    for kw, name in (({"epochs": 0}, "epochs"), ({"batch_size": 0}, "batch-size"), ({"hidden": -1}, "hidden")):
        with pytest.raises(ValueError, match=name):
            fit(cache, expand_grid(["crossentropy"]), FitConfig(**kw), write=False)


def test_standardize_is_stored_with_the_head_and_applied_at_predict(tmp_path):
    from mlhead.runs import evaluate_run, predict

    cache = make_cache(tmp_path / "c.h5", n=(120, 40, 40), dim=6, n_classes=3)
    rec = fit(cache, [RunSpec("crossentropy", (), 0, 1e-2)],
              FitConfig(epochs=3, batch_size=32, hidden=8, precision="fp32", standardize=True), tmp_path / "runs")[0]
    state = load_file(str(rec.path / "head.safetensors"))
    from mlhead.cache import open_cache
    X, _, _ = open_cache(cache).load("train")
    torch.testing.assert_close(state["input_mean"], X.mean(0))
    logits, _, _, _ = predict(rec.path, "test")
    Xt, _, _ = open_cache(cache).load("test")
    h = MLPHead(6, 8, 3)
    h.load_state_dict({k: v for k, v in state.items() if not k.startswith("input_")})
    with torch.no_grad():
        ref = h((Xt - state["input_mean"]) / state["input_std"]).numpy()
    np.testing.assert_allclose(logits, ref, rtol=1e-5, atol=1e-5)
    # the written evaluation is the metrics of these independently recomputed logits (default rule)
    from mlhead.metrics import evaluate

    doc = evaluate_run(rec.path)
    _, Yt, _ = open_cache(cache).load("test")
    assert doc["rule"]["name"] == "softmax>=0.05"
    want = evaluate(ref, Yt.numpy(), "softmax", 0.05)  # (eval adds the ranking metrics p@k... to these)
    assert {k: doc["metrics"][k] for k in want} == pytest.approx(want, rel=1e-6, abs=1e-9, nan_ok=True)


def test_standardize_leaves_constant_columns_unscaled(tmp_path):
    """A feature constant on train (e.g. an unseen word in MULAN medical) must not blow up at test."""
    from mlhead.cache import write_cache
    from mlhead.runs import predict

    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 4)).astype(np.float32)
    X[:, 3] = 0.0
    Xt = X[:20].copy()
    Xt[:, 3] = 1.0
    Y = (X[:, :2] > 0).astype(np.uint8)
    cache = write_cache(tmp_path / "c.h5", {"train": (X, Y, [f"a{i}" for i in range(60)]),
                                            "val": (X[:20], Y[:20], [f"b{i}" for i in range(20)]),
                                            "test": (Xt, Y[:20], [f"c{i}" for i in range(20)])}, ["p", "q"])
    rec = fit(cache, [RunSpec("crossentropy")], FitConfig(epochs=2, hidden=4, precision="fp32", standardize=True),
              tmp_path / "runs")[0]
    assert load_file(str(rec.path / "head.safetensors"))["input_std"][3] == 1.0
    assert np.abs(predict(rec.path, "test")[0]).max() < 100


@pytest.mark.parametrize("select, key", [("val_macro_f1", "macro_f1"), ("val_micro_f1", "micro_f1")])
def test_selected_val_metric_is_what_eval_reports_for_the_saved_head(tmp_path, select, key):
    """--select val_macro_f1 selects on eval's macro_f1 (over classes with positives, under the same
    rule), and the saved head is the selected epoch's: evaluating it on val gives the selected value."""
    from mlhead.cache import write_cache
    from mlhead.metrics import evaluate_rule
    from mlhead.rules import DecisionRule
    from mlhead.runs import predict

    rng = np.random.default_rng(5)
    W = rng.normal(size=(8, 4))
    splits = {}
    for name, m in (("train", 120), ("val", 40), ("test", 40)):
        X = rng.normal(size=(m, 8)).astype(np.float32)
        Y = (X @ W > 0.3).astype(np.uint8)
        if name == "val":
            Y[:, 3] = 0  # a class without val positives: excluded from eval's macro average
        splits[name] = (X, Y, [f"{name}{i}" for i in range(m)])
    cache = write_cache(tmp_path / "c.h5", splits, ["a", "b", "c", "d"], attrs={"dataset": "synthetic"})
    rule = DecisionRule("sigmoid", 0.5)
    rec = fit(cache, [RunSpec("crossentropy", (), 0, 3e-2)],
              FitConfig(epochs=12, batch_size=16, hidden=8, precision="fp32", select=select, val_rule=rule),
              tmp_path / "runs")[0]
    values = [h[select] for h in rec.history]
    assert rec.config.best_epoch != len(values), "want a best epoch before the last (the saved head must not drift)"
    assert rec.config.best_value == max(values) == values[rec.config.best_epoch - 1]
    logits, targets, _, _ = predict(rec.path, "val")
    assert evaluate_rule(logits, targets, rule)[key] == pytest.approx(rec.config.best_value, abs=1e-9)
