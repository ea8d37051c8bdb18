"""mlhead.metrics against scikit-learn called directly and against brute-force loops of ZLPR Eq. 25-30."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import expit, softmax
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    confusion_matrix,
    f1_score,
    precision_score,
    recall_score,
)

from mlhead import metrics as M

PCT = {"weighted_f1", "micro_f1", "macro_f1", "macro_precision", "macro_recall", "micro_precision",
       "micro_recall", "map", "map_binarized", "subset_accuracy", "example_f1", "lrap", "ranking_loss",
       "hamming_loss"}


def _data(seed: int, n: int = 60, c: int = 7, p: float = 0.3, empty_class: bool = False):
    rng = np.random.default_rng(seed)
    y = (rng.random((n, c)) < p).astype(np.uint8)
    z = rng.normal(scale=2.0, size=(n, c)) + 1.5 * y  # informative but imperfect
    if empty_class:
        y[:, -1] = 0
    return z, y


# --------------------------------------------------------------------------------------------------
# brute force: the papers' formulas as plain Python loops (ZLPR Eq. 25-30, Hamming loss, coverage)


def bf_subset_accuracy(Y, P):  # Eq. 25
    return sum(all(Y[i][j] == P[i][j] for j in range(len(Y[i]))) for i in range(len(Y))) / len(Y)


def bf_example_f1(Y, P):  # Eq. 26, 0/0 -> 0 (zero_division=0)
    tot = 0.0
    for y, p in zip(Y, P):
        inter = sum(a and b for a, b in zip(y, p))
        den = sum(y) + sum(p)
        tot += 2 * inter / den if den else 0.0
    return tot / len(Y)


def bf_macro_micro_f1(Y, P, present_only=True):  # Eq. 27, 28
    C = len(Y[0])
    f1s, TP, FP, FN = [], 0, 0, 0
    for j in range(C):
        tp = sum(1 for i in range(len(Y)) if Y[i][j] and P[i][j])
        fp = sum(1 for i in range(len(Y)) if not Y[i][j] and P[i][j])
        fn = sum(1 for i in range(len(Y)) if Y[i][j] and not P[i][j])
        TP, FP, FN = TP + tp, FP + fp, FN + fn
        if present_only and tp + fn == 0:
            continue
        f1s.append(2 * tp / (2 * tp + fp + fn) if (2 * tp + fp + fn) else 0.0)
    micro = 2 * TP / (2 * TP + FP + FN) if (2 * TP + FP + FN) else 0.0
    return (sum(f1s) / len(f1s) if f1s else math.nan), micro


def _rank(s, j):  # r_n(lambda): 1 + number of labels scored strictly higher, ties share the worst rank
    return sum(1 for v in s if v >= s[j])


def bf_lrap(Y, S):  # Eq. 29; all-negative / all-positive rows count 1 (sklearn)
    tot = 0.0
    for y, s in zip(Y, S):
        pos = [j for j in range(len(y)) if y[j]]
        if len(pos) in (0, len(y)):
            tot += 1.0
            continue
        tot += sum(sum(1 for k in pos if _rank(s, k) <= _rank(s, j)) / _rank(s, j) for j in pos) / len(pos)
    return tot / len(Y)


def bf_ranking_loss(Y, S):  # Eq. 30 normalised by |y| * |not y|; tied pairs are errors
    tot = 0.0
    for y, s in zip(Y, S):
        pos = [j for j in range(len(y)) if y[j]]
        neg = [j for j in range(len(y)) if not y[j]]
        if not pos or not neg:
            continue
        tot += sum(1 for a in pos for b in neg if s[a] <= s[b]) / (len(pos) * len(neg))
    return tot / len(Y)


def bf_hamming(Y, P):
    return sum(Y[i][j] != P[i][j] for i in range(len(Y)) for j in range(len(Y[0]))) / (len(Y) * len(Y[0]))


def bf_coverage(Y, S):  # labels to go down the ranking to cover every true label; 0 without one
    tot = 0
    for y, s in zip(Y, S):
        pos = [j for j in range(len(y)) if y[j]]
        if pos:
            tot += max(_rank(s, j) for j in pos)
    return tot / len(Y)


def check_bruteforce(z, y, out, pred):
    Y, P, S = y.tolist(), pred.tolist(), z.tolist()
    assert out["subset_accuracy"] == pytest.approx(100 * bf_subset_accuracy(Y, P), abs=1e-9)
    assert out["example_f1"] == pytest.approx(100 * bf_example_f1(Y, P), abs=1e-9)
    macro, micro = bf_macro_micro_f1(Y, P)
    assert out["micro_f1"] == pytest.approx(100 * micro, abs=1e-9)
    if math.isnan(macro):
        assert math.isnan(out["macro_f1"])
    else:
        assert out["macro_f1"] == pytest.approx(100 * macro, abs=1e-9)
    assert out["lrap"] == pytest.approx(100 * bf_lrap(Y, S), abs=1e-9)
    assert out["ranking_loss"] == pytest.approx(100 * bf_ranking_loss(Y, S), abs=1e-9)
    assert out["hamming_loss"] == pytest.approx(100 * bf_hamming(Y, P), abs=1e-9)
    assert out["coverage_error"] == pytest.approx(bf_coverage(Y, S), abs=1e-9)


# --------------------------------------------------------------------------------------------------
# references built per class from scikit-learn's BINARY functions, averaged by hand
# (torchmetrics' `_reference_sklearn_*` pattern): macro over the classes with a positive (the stated
# policy), weighted by support, micro from the summed tp/fp/fn, samples per row.


def _binary_counts(y, pred):
    """Per-class (tp, fp, fn) from sklearn's binary confusion_matrix on each column."""
    counts = np.array([confusion_matrix(y[:, j], pred[:, j], labels=[0, 1]).ravel()[[3, 1, 2]]
                       for j in range(y.shape[1])])
    return counts[:, 0], counts[:, 1], counts[:, 2]


def _micro(tp, fp, fn, which):
    tp, fp, fn = tp.sum(), fp.sum(), fn.sum()
    num, den = {"precision": (tp, tp + fp), "recall": (tp, tp + fn), "f1": (2 * tp, 2 * tp + fp + fn)}[which]
    return num / den if den else 0.0  # zero_division=0


def _reference_sklearn_prf(y, pred, which, average):
    """precision/recall/F1 of multi-hot y, pred: per class with the binary sklearn function, then averaged."""
    fn_binary = {"precision": precision_score, "recall": recall_score, "f1": f1_score}[which]
    if average == "micro":
        return _micro(*_binary_counts(y, pred), which)
    per_class = np.array([fn_binary(y[:, j], pred[:, j], zero_division=0) for j in range(y.shape[1])])
    support = y.sum(0)
    present = support > 0
    if not present.any():
        return math.nan
    if average == "macro":
        return per_class[present].mean()
    assert average == "weighted"
    return (per_class * support).sum() / support.sum()


def _reference_sklearn_example_f1(y, pred):
    """F1 of each example (binary f1_score on its row, 0/0 -> 0), averaged over examples."""
    return np.mean([f1_score(y[i], pred[i], zero_division=0) for i in range(len(y))])


def _reference_sklearn_map(y, s):
    """Binary average_precision_score of each class with a positive, averaged; NaN if none has one."""
    aps = [average_precision_score(y[:, j], s[:, j]) for j in range(y.shape[1]) if y[:, j].any()]
    return np.mean(aps) if aps else math.nan


def _reference_sklearn_hamming(y, pred):
    """Mean over classes of the binary error rate 1 - accuracy_score(column)."""
    return np.mean([1 - accuracy_score(y[:, j], pred[:, j]) for j in range(y.shape[1])])


def reference_metrics(z, y, pred, s):
    """Every percent metric of M.evaluate from the per-class / per-example references above and the
    brute-force ranking loops; ``s`` are the rule's scores (probabilities or logits), ``pred`` 0/1."""
    ref = {f"{avg}_{w}": _reference_sklearn_prf(y, pred, w, avg)
           for avg in ("macro", "micro") for w in ("precision", "recall", "f1")}
    ref["weighted_f1"] = _reference_sklearn_prf(y, pred, "f1", "weighted")
    ref["map"] = _reference_sklearn_map(y, s)
    ref["map_binarized"] = _reference_sklearn_map(y, pred)
    ref["subset_accuracy"] = np.mean([accuracy_score(y[i], pred[i]) == 1.0 for i in range(len(y))])
    ref["example_f1"] = _reference_sklearn_example_f1(y, pred)
    ref["hamming_loss"] = _reference_sklearn_hamming(y, pred)
    Y, S = y.tolist(), z.tolist()
    ref["lrap"], ref["ranking_loss"] = bf_lrap(Y, S), bf_ranking_loss(Y, S)
    out = {k: 100 * v for k, v in ref.items()}
    out["coverage_error"] = bf_coverage(Y, S)
    return out


def assert_matches_reference(out, ref):
    for k, v in ref.items():
        if math.isnan(v):
            assert math.isnan(out[k]), k
        else:
            assert out[k] == pytest.approx(v, abs=1e-9), k


# Generated edge-case inputs (torchmetrics `_inputs.py` style): each is (logits, multi-hot targets).
def _case_random(rng):
    y = (rng.random((40, 6)) < 0.3).astype(np.uint8)
    return rng.normal(scale=2.0, size=y.shape) + 1.5 * y, y


def _case_class_without_positives(rng):
    z, y = _case_random(rng)
    y[:, [1, 4]] = 0
    return z, y


def _case_rows_without_labels(rng):
    z, y = _case_random(rng)
    y[::3] = 0
    return z, y


def _case_all_zero_predictions(rng):  # nothing reaches sigmoid 0.5 / logit 0 / softmax 0.9
    y = (rng.random((30, 5)) < 0.4).astype(np.uint8)
    return -3.0 - rng.random(y.shape), y


def _case_ties(rng):  # integer logits: ties within rows and within classes, and at the threshold
    y = (rng.random((30, 5)) < 0.4).astype(np.uint8)
    return rng.integers(-1, 2, size=y.shape).astype(float), y


def _case_all_positive(rng):  # rows with every label, a class positive everywhere
    z, y = _case_random(rng)
    y[:5] = 1
    y[:, 2] = 1
    return z, y


def _case_perfect(rng):  # every label scored above every non-label
    y = (rng.random((30, 5)) < 0.4).astype(np.uint8)
    return np.where(y == 1, 3.0, -3.0) + 0.1 * rng.random(y.shape), y


def _case_single_row(rng):
    return np.array([[0.3, -1.0, 2.0, 0.1]]), np.array([[1, 0, 1, 0]], np.uint8)


CASES = {f.__name__[len("_case_"):]: f for f in (
    _case_random, _case_class_without_positives, _case_rows_without_labels, _case_all_zero_predictions,
    _case_ties, _case_all_positive, _case_perfect, _case_single_row)}

RULES = [
    {"activation": "softmax", "threshold": 0.05},
    {"activation": "softmax", "threshold": 0.9},
    {"activation": "sigmoid", "threshold": 0.5},
    {"activation": "none", "threshold": 0.0},
    {"activation": "none", "threshold": -0.7},
    {"activation": "sigmoid", "top_k": 2},
]


def _softmax_fsum(z):
    """Softmax of ``z - max`` with each row's normaliser summed by math.fsum (correctly rounded, so
    independent of the order of the classes: mathematically tied scores of rows whose integer logits
    are permutations or shifts of each other are bit-identical, as AP needs)."""
    m = z.max(axis=1, keepdims=True)
    e = np.exp(z - m)
    return e / np.array([[math.fsum(row)] for row in e.tolist()])


def _manual(z, activation, threshold=None, top_k=None, thresholds=None):
    """The rule's scores and 0/1 predictions, written out independently of mlhead."""
    s = {"softmax": _softmax_fsum(z), "sigmoid": expit(z), "none": z}[activation]
    if top_k is not None:
        pred = np.zeros(z.shape, np.uint8)
        for i in range(len(z)):
            pred[i, sorted(range(z.shape[1]), key=lambda j: (-z[i, j], j))[:top_k]] = 1
        return s, pred
    t = thresholds if thresholds is not None else threshold
    return s, (s >= t).astype(np.uint8)


@pytest.mark.parametrize("rule", RULES, ids=lambda r: "-".join(str(v) for v in r.values()))
@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("seed", [0, 1])
def test_every_metric_matches_per_class_sklearn_reference(seed, case, rule):
    z, y = CASES[case](np.random.default_rng(seed))
    out = M.evaluate(z, y, **rule)
    s, pred = _manual(z, **rule)
    np.testing.assert_array_equal(M.decide(z, **rule), pred)
    assert_matches_reference(out, reference_metrics(z, y, pred, s))
    assert out["n_classes_without_positives"] == int((y.sum(0) == 0).sum())
    assert out["n_examples_without_positives"] == int((y.sum(1) == 0).sum())
    assert out["n_examples_without_predictions"] == int((pred.sum(1) == 0).sum())
    assert out["label_cardinality"] == pytest.approx(y.sum() / len(y))
    assert out["predicted_cardinality"] == pytest.approx(pred.sum() / len(y))


def test_edge_cases_cover_what_they_claim():
    """The generated inputs really contain the edge cases they are named after (else the test above
    would pass without exercising them)."""
    rng = np.random.default_rng(0)
    _, y = CASES["class_without_positives"](rng)
    assert (y.sum(0) == 0).sum() == 2
    _, y = CASES["rows_without_labels"](rng)
    assert (y.sum(1) == 0).sum() >= 14
    z, y = CASES["all_zero_predictions"](rng)
    for rule in RULES[1:5]:
        assert M.decide(z, **rule).sum() == 0, rule
    z, _ = CASES["ties"](rng)
    assert any(len(set(row)) < len(row) for row in z.tolist()) and (z == 0).any()
    _, y = CASES["all_positive"](rng)
    assert y[:5].all() and y[:, 2].all()


def test_reference_averages_by_hand():
    """The hand-made averages on a 3 x 3 example (classes: 2 positives, 1, none)."""
    y = np.array([[1, 0, 0], [1, 1, 0], [0, 0, 0]], np.uint8)
    pred = np.array([[1, 1, 0], [0, 1, 1], [0, 0, 0]], np.uint8)
    # class 0: tp 1 fn 1 -> P 1, R 1/2, F1 2/3; class 1: tp 1 fp 1 -> P 1/2, R 1, F1 2/3; class 2: fp 1
    assert _reference_sklearn_prf(y, pred, "f1", "macro") == pytest.approx(2 / 3)
    assert _reference_sklearn_prf(y, pred, "precision", "macro") == pytest.approx(3 / 4)
    assert _reference_sklearn_prf(y, pred, "f1", "weighted") == pytest.approx((2 * 2 / 3 + 1 * 2 / 3) / 3)
    assert _reference_sklearn_prf(y, pred, "f1", "micro") == pytest.approx(2 * 2 / (2 * 2 + 2 + 1))
    assert _reference_sklearn_prf(y, pred, "precision", "micro") == pytest.approx(2 / 4)
    assert _reference_sklearn_example_f1(y, pred) == pytest.approx((2 / 3 + 2 / 4 + 0) / 3)
    assert _reference_sklearn_hamming(y, pred) == pytest.approx(3 / 9)


def test_hand_made_example():
    y = np.array([[1, 0, 1], [0, 1, 0]])
    z = np.array([[2.0, 1.0, -1.0], [-1.0, 3.0, -2.0]])  # sigmoid>=0.5 -> [[1,1,0],[0,1,0]]
    out = M.evaluate(z, y, activation="sigmoid", threshold=0.5)
    np.testing.assert_array_equal(M.decide(z, "sigmoid", 0.5), [[1, 1, 0], [0, 1, 0]])
    assert out["subset_accuracy"] == pytest.approx(50.0)
    assert out["hamming_loss"] == pytest.approx(100 * 2 / 6)
    assert out["example_f1"] == pytest.approx(100 * (0.5 + 1.0) / 2)
    assert out["micro_f1"] == pytest.approx(100 * 4 / 6)
    assert out["macro_f1"] == pytest.approx(100 * (1 + 2 / 3 + 0) / 3)
    assert out["macro_precision"] == pytest.approx(100 * (1 + 0.5 + 0) / 3)
    assert out["lrap"] == pytest.approx(100 * ((1 + 2 / 3) / 2 + 1) / 2)
    assert out["ranking_loss"] == pytest.approx(25.0)
    assert out["coverage_error"] == pytest.approx((3 + 1) / 2)  # row 1 needs all 3 labels, row 2 only its top one
    assert out["predicted_cardinality"] == pytest.approx(1.5)
    assert out["label_cardinality"] == pytest.approx(1.5)


@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, 6).flatmap(lambda n: st.integers(2, 5).flatmap(lambda c: st.tuples(
        st.lists(st.lists(st.integers(-2, 2), min_size=c, max_size=c), min_size=n, max_size=n),
        st.lists(st.lists(st.integers(0, 1), min_size=c, max_size=c), min_size=n, max_size=n),
    ))),
    st.sampled_from(RULES),
)
def test_zlpr_formulas_bruteforce_with_ties(data, rule):
    """Integer logits force ties; empty and full label rows and empty classes occur."""
    z, y = np.array(data[0], float), np.array(data[1], np.uint8)
    if rule.get("top_k", 0) > z.shape[1]:
        return
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = M.evaluate(z, y, **rule)
    check_bruteforce(z, y, out, M.decide(z, **rule))


def test_per_class_matches_sklearn():
    z, y = _data(3, empty_class=True)
    rule = M.DecisionRule("softmax", 0.1)
    rows = M.per_class(z, y, rule, [f"c{j}" for j in range(7)])
    pred = (softmax(z, axis=1) >= 0.1).astype(int)
    for j, row in enumerate(rows):  # binary sklearn functions on column j
        yj, pj = y[:, j], pred[:, j]
        assert row["class"] == f"c{j}"
        assert row["support"] == yj.sum() and row["n_predicted"] == pj.sum()
        assert (row["precision"], row["recall"], row["f1"]) == pytest.approx(
            tuple(100 * f(yj, pj, zero_division=0) for f in (precision_score, recall_score, f1_score)))
        if yj.any():
            assert row["ap"] == pytest.approx(100 * average_precision_score(y[:, j], softmax(z, axis=1)[:, j]))
    assert math.isnan(rows[-1]["ap"])
    out = M.evaluate(z, y, "softmax", 0.1)
    assert out["macro_f1"] == pytest.approx(np.mean([r_["f1"] for r_ in rows if r_["support"]]))
    assert out["map"] == pytest.approx(np.nanmean([r_["ap"] for r_ in rows]))


def test_torch_input_equals_numpy():
    z, y = _data(4)
    a = M.evaluate(z, y, "sigmoid", 0.5)
    b = M.evaluate(torch.tensor(z), torch.tensor(y, dtype=torch.bool), "sigmoid", 0.5)
    assert a == b


def test_map_uses_order_without_saturation_ties():
    # sigmoid(40) and sigmoid(45) are both 1.0 in float64; the logits still order them.
    z = np.array([[40.0, 0.0], [45.0, 0.0], [38.0, 1.0], [-3.0, 2.0]])
    y = np.array([[0, 1], [1, 0], [0, 1], [1, 1]])
    out = M.evaluate(z, y, "sigmoid", 0.5)
    exp = np.mean([average_precision_score(y[:, j], z[:, j]) for j in range(2)])
    assert out["map"] == pytest.approx(100 * exp)
    assert out["map"] == M.evaluate(z, y, "none", 0.0)["map"]


# --------------------------------------------------------------------------------------------------
# degenerate cases


def test_no_label_predicted():
    z, y = _data(5)
    y[0] = 0  # an example without labels: exact match when nothing is predicted
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = M.evaluate(z, y, "softmax", 1.0)  # no softmax score reaches 1 with C = 7
    for k in ("weighted_f1", "micro_f1", "macro_f1", "macro_precision", "macro_recall", "example_f1",
              "micro_precision", "micro_recall"):
        assert out[k] == 0.0, k
    assert out["n_examples_without_predictions"] == len(z)
    assert out["subset_accuracy"] == pytest.approx(100 * (y.sum(1) == 0).mean())
    assert out["hamming_loss"] == pytest.approx(100 * y.mean())
    assert out["map_binarized"] == pytest.approx(100 * y.mean(0).mean())  # AP of a constant = prevalence
    assert out["map"] == pytest.approx(100 * _reference_sklearn_map(y, softmax(z, axis=1)), abs=1e-9)


def test_class_without_positives_excluded_from_macro_only():
    z, y = _data(6, empty_class=True)
    base = M.evaluate(z, y, "sigmoid", 0.5)
    z2 = z.copy()
    z2[:, -1] = 10.0  # now every example predicts the empty class: pure false positives
    moved = M.evaluate(z2, y, "sigmoid", 0.5)
    for k in ("macro_f1", "macro_precision", "macro_recall", "weighted_f1"):
        assert moved[k] == pytest.approx(base[k]), k
    assert moved["micro_f1"] < base["micro_f1"]
    assert moved["hamming_loss"] > base["hamming_loss"]
    assert base["n_classes_without_positives"] == 1


def test_no_positive_anywhere():
    z = np.random.default_rng(7).normal(size=(5, 4))
    y = np.zeros((5, 4), np.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = M.evaluate(z, y, "sigmoid", 0.5)
    for k in ("macro_f1", "macro_precision", "macro_recall", "weighted_f1", "map", "map_binarized"):
        assert math.isnan(out[k]), k
    assert out["lrap"] == 100.0 and out["ranking_loss"] == 0.0 and out["coverage_error"] == 0.0
    assert out["n_classes_without_positives"] == 4 and out["n_examples_without_positives"] == 5


@pytest.mark.parametrize("rule", RULES[:4], ids=str)
def test_single_example(rule):
    z = np.array([[0.3, -1.0, 2.0, 0.1]])
    y = np.array([[1, 0, 1, 0]])
    out = M.evaluate(z, y, **rule)
    check_bruteforce(z, y, out, M.decide(z, **rule))
    assert out["n_classes_without_positives"] == 2 and out["n_examples"] == 1


# --------------------------------------------------------------------------------------------------
# decision rules


def test_softmax_005_and_sigmoid_05_differ_and_are_named():
    z = np.full((3, 10), -1.0)  # softmax 0.1 each >= 0.05 ; sigmoid(-1) = 0.27 < 0.5
    z[1, 0] = 2.0
    y = np.zeros((3, 10), np.uint8)
    y[:, 0] = 1
    r1, r2 = M.DecisionRule("softmax", 0.05), M.DecisionRule("sigmoid", 0.5)
    p1, p2 = r1.decide(z), r2.decide(z)
    assert not np.array_equal(p1, p2)
    assert p1[0].sum() == 10 and p2[0].sum() == 0
    assert r1.name == "softmax>=0.05" and r2.name == "sigmoid>=0.5"
    assert r1.to_dict()["name"] != r2.to_dict()["name"]
    assert r1.evaluate(z, y) != r2.evaluate(z, y)
    assert r1.evaluate(z, y) == M.evaluate(z, y, "softmax", 0.05)


def test_rule_names_and_roundtrip():
    z, y = _data(8)
    rules = [M.DecisionRule(), M.DecisionRule("sigmoid", 0.5), M.DecisionRule("none", 0),
             M.DecisionRule("softmax", top_k=3), M.tuned_rule(z, y, "sigmoid")]
    names = [r.name for r in rules]
    assert names == ["softmax>=0.05", "sigmoid>=0.5", "logit>=0", "top-3 (softmax)",
                     "per-class tuned on val (sigmoid)"]
    assert [r.slug for r in rules] == ["softmax-ge-0.05", "sigmoid-ge-0.5", "logit-ge-0", "top-3-softmax",
                                       "per-class-tuned-on-val-sigmoid"]
    for r in rules:
        back = M.DecisionRule.from_dict(r.to_dict())
        assert back == r and back.name == r.name
        np.testing.assert_array_equal(back.decide(z), r.decide(z))
    assert M.DecisionRule("softmax", top_k=3).threshold is None


def test_none_threshold_zero_is_greater_or_equal():
    z = np.array([[0.0, -1e-12, 1e-12]])
    np.testing.assert_array_equal(M.decide(z, "none", 0.0), [[1, 0, 1]])


@pytest.mark.parametrize("k", [1, 2, 5])
def test_top_k_exactly_k(k):
    z, _ = _data(9, c=5)
    z[0] = 0.0  # full tie: lower class indices win
    pred = M.decide(z, "softmax", top_k=k)
    assert (pred.sum(axis=1) == k).all()
    np.testing.assert_array_equal(pred[0], [1] * k + [0] * (5 - k))
    order = np.argsort(-z[1:], axis=1)[:, :k]
    assert all(pred[1 + i, order[i]].all() for i in range(len(order)))


def test_tune_thresholds_beats_or_equals_global():
    z, y = _data(10, n=200, c=6, empty_class=True)
    for act, glob in (("softmax", 0.05), ("sigmoid", 0.5), ("none", 0.0)):
        th = M.tune_thresholds(z, y, act, glob)
        assert th.shape == (6,) and th.dtype == np.float64
        assert th[-1] == glob  # no val positives: keeps the global threshold
        f_glob = [r["f1"] for r in M.per_class(z, y, M.DecisionRule(act, glob))]
        f_tuned = [r["f1"] for r in M.per_class(z, y, M.DecisionRule(act, glob, thresholds=th))]
        assert all(t >= g - 1e-9 for t, g in zip(f_tuned, f_glob)), (act, f_tuned, f_glob)
        assert sum(f_tuned) > sum(f_glob)
        # and it is the optimum: no cut at a distinct score does better for any class (plain numpy F1)
        s = M.scores(z, act)
        for j in range(5):
            cuts = s[:, j][None, :] >= np.unique(s[:, j])[:, None]  # candidates x N
            tp = (cuts & (y[:, j] == 1)).sum(1)
            f1 = 2 * tp / (cuts.sum(1) + y[:, j].sum())
            assert f_tuned[j] == pytest.approx(100 * f1.max())


# --------------------------------------------------------------------------------------------------
# validation


@pytest.mark.parametrize("kwargs, match", [
    ({"activation": "relu"}, "activation"),
    ({"activation": "softmax", "threshold": 0.0}, "threshold"),
    ({"activation": "sigmoid", "threshold": 1.5}, "threshold"),
    ({"activation": "sigmoid", "threshold": float("nan")}, "threshold"),
    ({"top_k": 0}, "top_k"),
    ({"top_k": 8}, "top_k"),
    ({"top_k": 2.5}, "top_k"),
    ({"thresholds": [0.5] * 3}, "thresholds"),
    ({"activation": "sigmoid", "thresholds": [1.5] * 7}, "thresholds"),
    ({"top_k": 2, "thresholds": [0.5] * 7}, "top_k and thresholds"),
])
def test_invalid_rules_raise(kwargs, match):
    z, y = _data(11)
    with pytest.raises(ValueError, match=match):
        M.evaluate(z, y, **kwargs)


def test_invalid_inputs_raise():
    z, y = _data(12)
    with pytest.raises(ValueError, match="targets shape"):
        M.evaluate(z, y[:, :3])
    with pytest.raises(ValueError, match="targets shape"):
        M.evaluate(z, y[:-1])
    bad = z.copy()
    bad[3, 2] = np.nan
    with pytest.raises(ValueError, match="logits contain NaN"):
        M.evaluate(bad, y)
    with pytest.raises(ValueError, match="targets must contain only 0 and 1"):
        M.evaluate(z, y * 0.5)
    with pytest.raises(ValueError, match="logits must be 2-D"):
        M.evaluate(z[0], y[0])
    with pytest.raises(ValueError, match="class_names"):
        M.per_class(z, y, M.DecisionRule(), ["a"])
    with pytest.raises(ValueError, match="activation"):
        M.scores(z, "tanh")


def test_metric_directions_and_keys():
    """METRIC_DOCS' "higher"/"lower" is the truth: a perfect ranking and perfect 0/1 predictions give
    every "higher" percent metric 100, every "lower" percent metric 0, coverage_error its minimum (the
    number of true labels per example) and the worst predictions (the complement) the opposite."""
    rng = np.random.default_rng(13)
    y = (rng.random((25, 5)) < 0.4).astype(np.uint8)
    y[0], y[1] = [1, 0, 0, 0, 0], [0, 1, 1, 0, 0]  # no all-negative row: rank metrics are not trivial
    y[y.sum(1) == 0, 3] = 1
    y[y.sum(1) == 5, 4] = 0
    best = M.evaluate(np.where(y == 1, 4.0, -4.0), y, "none", 0.0)
    worst = M.evaluate(np.where(y == 1, -4.0, 4.0), y, "none", 0.0)
    assert set(best) == set(M.METRIC_DOCS) and M.POLICY in M.__doc__
    for k, (unit, better, _) in M.METRIC_DOCS.items():
        if unit != "%":
            continue
        assert best[k] == (100.0 if better == "higher" else 0.0), k
        if k in ("map", "map_binarized"):  # all positives ranked (tied) last: AP = precision at full
            assert worst[k] == pytest.approx(100 * y.mean(0).mean()), k  # recall = the prevalence
        elif k == "lrap":  # each positive shares the last rank C with the other positives: k_i / C
            assert worst[k] == pytest.approx(100 * (y.sum(1) / 5).mean())
        else:
            assert worst[k] == (0.0 if better == "higher" else 100.0), k
    assert best["coverage_error"] == pytest.approx(y.sum(1).mean())
    assert worst["coverage_error"] == pytest.approx(5.0)
    assert M.LOWER_IS_BETTER == {"ranking_loss", "hamming_loss", "coverage_error"}


def test_old_metric_names_are_upgraded():
    assert M.upgrade_metric_keys({"coverage": 2.5, "map": 40.0}) == {"coverage_error": 2.5, "map": 40.0}
    assert M.upgrade_metric_keys({"coverage": 1.0, "coverage_error": 2.0}) == {"coverage_error": 2.0}
    assert set(M.RENAMED_METRICS.values()) <= set(M.METRIC_DOCS)
    assert not set(M.RENAMED_METRICS) & set(M.METRIC_DOCS)
