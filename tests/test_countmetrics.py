"""Many-class metrics from confusion counts and column-wise AP equal scikit-learn (issue #19)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import (
    average_precision_score,
    coverage_error,
    f1_score,
    label_ranking_average_precision_score,
    label_ranking_loss,
    precision_score,
    recall_score,
)

import mlhead.metrics as M
from mlhead import countmetrics as CM
from mlhead.rules import DecisionRule


def _data(seed, n=60, c=40, p=0.08):
    rng = np.random.default_rng(seed)
    y = (rng.random((n, c)) < p).astype(np.uint8)
    y[:, 3] = 0  # a class without positives
    y[5] = 0  # a row without labels
    pred = (rng.random((n, c)) < p).astype(np.uint8)
    pred[7] = 0
    return y, pred, rng


@pytest.mark.parametrize("seed", range(4))
def test_prf_from_counts_equals_sklearn(seed):
    y, pred, _ = _data(seed)
    labels = np.flatnonzero(y.sum(0) > 0).tolist()
    got = CM.prf_from_counts(*CM.confusion_counts(y, pred), labels)
    want = {"micro_f1": f1_score(y, pred, average="micro", zero_division=0),
            "micro_precision": precision_score(y, pred, average="micro", zero_division=0),
            "micro_recall": recall_score(y, pred, average="micro", zero_division=0),
            "macro_f1": f1_score(y, pred, average="macro", labels=labels, zero_division=0),
            "macro_precision": precision_score(y, pred, average="macro", labels=labels, zero_division=0),
            "macro_recall": recall_score(y, pred, average="macro", labels=labels, zero_division=0),
            "weighted_f1": f1_score(y, pred, average="weighted", labels=labels, zero_division=0)}
    for k, v in want.items():
        assert got[k] == pytest.approx(v, rel=1e-12, abs=1e-15), k
    assert CM.example_f1(y, pred) == pytest.approx(f1_score(y, pred, average="samples", zero_division=0), rel=1e-12)


def test_prf_hand_example():
    # class 0: tp 1, fp 1, fn 0 -> P 1/2, R 1, F 2/3; class 1: tp 0, fp 0, fn 1 -> 0, 0, 0
    y = np.array([[1, 1], [0, 0]])
    pred = np.array([[1, 0], [1, 0]])
    got = CM.prf_from_counts(*CM.confusion_counts(y, pred), [0, 1])
    assert got["macro_f1"] == pytest.approx(1 / 3) and got["micro_f1"] == pytest.approx(2 * 1 / (2 + 1 + 1))
    assert got["weighted_f1"] == pytest.approx((2 / 3 * 1 + 0 * 1) / 2)


@pytest.mark.parametrize("seed", range(4))
def test_average_precision_columns_equals_sklearn_with_ties(seed, monkeypatch):
    y, pred, rng = _data(seed)
    s = np.round(rng.normal(size=y.shape), 1)  # many tied scores
    cols = np.flatnonzero(y.sum(0) > 0)
    monkeypatch.setattr(CM, "BLOCK_CELLS", 7 * y.shape[0])  # several column blocks
    got = CM.average_precision_columns(y, s, cols)
    want = [average_precision_score(y[:, j], s[:, j]) for j in cols]
    np.testing.assert_allclose(got, want, rtol=1e-12)
    np.testing.assert_allclose(CM.average_precision_columns(y, pred, cols),  # 0/1 scores: map_binarized
                               [average_precision_score(y[:, j], pred[:, j]) for j in cols], rtol=1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_label_ranking_metrics_equal_sklearn_with_ties_and_degenerate_rows(seed):
    y, _, rng = _data(seed)
    y[8] = 1  # a row with every label
    s = np.round(rng.normal(size=y.shape), 1)
    got = CM.label_ranking_metrics(y, s)
    assert got["lrap"] == pytest.approx(label_ranking_average_precision_score(y, s), rel=1e-12)
    assert got["ranking_loss"] == pytest.approx(label_ranking_loss(y, s), rel=1e-12)
    assert got["coverage_error"] == pytest.approx(coverage_error(y, s), rel=1e-12)


@pytest.mark.parametrize("rule", [DecisionRule("sigmoid", 0.9), DecisionRule("softmax", None, 3),
                                  DecisionRule("softmax", 0.02)])
def test_many_class_path_of_evaluate_equals_sklearn_path(rule, monkeypatch):
    y, _, rng = _data(9, n=50, c=80)
    z = rng.normal(size=y.shape).astype(np.float32)
    monkeypatch.setattr(M, "MANY_CLASSES", 10**9)
    want, want_rows, want_f1 = M.evaluate_rule(z, y, rule), M.per_class(z, y, rule), M.f1_scores(z, y, rule)
    monkeypatch.setattr(M, "MANY_CLASSES", 10)
    got, got_rows, got_f1 = M.evaluate_rule(z, y, rule), M.per_class(z, y, rule), M.f1_scores(z, y, rule)
    for k in want:
        assert got[k] == pytest.approx(want[k], rel=1e-10, nan_ok=True), k
    assert got_f1 == pytest.approx(want_f1, rel=1e-10)
    for a, b in zip(got_rows, want_rows):
        assert a.pop("class") == b.pop("class")
        assert a == pytest.approx(b, rel=1e-10, nan_ok=True)
