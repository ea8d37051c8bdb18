"""On-device validation of K stacked runs: DecisionRule.apply_tensor and F1 from counts equal sklearn."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import f1_score

from mlhead.errors import ConfigError
from mlhead.metrics import f1_scores, f1_scores_tensor, f1_tensor
from mlhead.rules import DecisionRule

RULES = [DecisionRule("softmax", 0.05), DecisionRule("softmax", 0.2), DecisionRule("sigmoid", 0.5),
         DecisionRule("none", 0.0), DecisionRule("sigmoid", top_k=2), DecisionRule("softmax", top_k=1),
         DecisionRule("sigmoid", thresholds=np.linspace(0.2, 0.8, 6))]


def _case(seed, k=4, n=50, c=6, empty=(1, 4)):
    """Random K x N x C logits and N x C targets with the classes ``empty`` never positive."""
    rng = np.random.default_rng(seed)
    y = (rng.random((n, c)) < 0.3).astype(np.uint8)
    y[:, list(empty)] = 0
    z = rng.normal(size=(k, n, c)).astype(np.float32) + 1.5 * y
    z[0, :, 2] = z[0, :, 3]  # tied logits exercise top-k's lower-index rule
    return z, y


@pytest.mark.parametrize("rule", RULES, ids=lambda r: r.name)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_apply_tensor_equals_apply(rule, seed):
    z, _ = _case(seed)
    got = rule.apply_tensor(torch.from_numpy(z)).numpy()
    for k in range(z.shape[0]):
        np.testing.assert_array_equal(got[k], rule.apply(z[k]).astype(bool))


@pytest.mark.parametrize("average", ["micro", "macro", "weighted", "samples"])
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_f1_from_counts_equals_sklearn(average, seed):
    rng = np.random.default_rng(100 + seed)
    pred = rng.random((3, 40, 7)) < rng.uniform(0.05, 0.6)
    pred[1, :5] = False  # examples with no prediction (samples: 0/0 -> 0)
    y = (rng.random((40, 7)) < 0.25).astype(np.uint8)
    y[:, 3] = 0  # a class without positives
    y[:3] = 0  # examples without positives
    labels = np.flatnonzero(y.sum(0) > 0) if average in ("macro", "weighted") else None
    got = f1_tensor(torch.from_numpy(pred), torch.from_numpy(y), average).numpy()
    for k in range(3):
        want = 100 * f1_score(y, pred[k], average=average, labels=labels, zero_division=0)
        assert got[k] == pytest.approx(want, abs=1e-10)


def test_f1_from_counts_hand_example():
    pred = torch.tensor([[[1, 0], [1, 1], [0, 0]]], dtype=torch.bool)
    y = torch.tensor([[1, 0], [0, 1], [0, 0]])
    # class 0: tp 1 fp 1 fn 0 -> 2/3; class 1: tp 1 -> 1; micro tp 2 fp 1 fn 0 -> 4/5
    assert f1_tensor(pred, y, "macro").item() == pytest.approx(100 * (2 / 3 + 1) / 2)
    assert f1_tensor(pred, y, "micro").item() == pytest.approx(80.0)
    # examples: 2/2=1, 2*1/(2+1)=2/3, 0/0 -> 0
    assert f1_tensor(pred, y, "samples").item() == pytest.approx(100 * (1 + 2 / 3) / 3)


@pytest.mark.parametrize("rule", RULES, ids=lambda r: r.name)
def test_stacked_val_f1_equals_eval_f1_per_run(rule):
    z, y = _case(7, k=5, n=80, c=6)
    z[3, 10, 2] = np.inf  # a diverged run: NaN, never selected
    got = f1_scores_tensor(torch.from_numpy(z), torch.from_numpy(y), rule)
    for k in range(5):
        if k == 3:
            assert np.isnan(got["micro_f1"][k].item()) and np.isnan(got["macro_f1"][k].item())
            continue
        want = f1_scores(z[k], y, rule)
        assert got["micro_f1"][k].item() == pytest.approx(want["micro_f1"], abs=1e-10)
        assert got["macro_f1"][k].item() == pytest.approx(want["macro_f1"], abs=1e-10)


def test_no_positive_class_gives_nan_macro_like_eval():
    z, y = _case(3, k=2, n=20, c=4, empty=(0, 1, 2, 3))
    got = f1_scores_tensor(torch.from_numpy(z), torch.from_numpy(y), DecisionRule("sigmoid", 0.5))
    assert np.isnan(got["macro_f1"]).all() and np.isnan(f1_scores(z[0], y, DecisionRule("sigmoid", 0.5))["macro_f1"])
    assert (got["micro_f1"] == 0).all()


def test_bad_average_and_rule_that_does_not_fit_are_refused():
    with pytest.raises(ValueError, match="average"):
        f1_tensor(torch.zeros(2, 3, dtype=torch.bool), torch.zeros(2, 3), "binary")
    with pytest.raises(ConfigError, match="--top-k 5"):
        DecisionRule("sigmoid", top_k=5).apply_tensor(torch.zeros(1, 3, 4))
