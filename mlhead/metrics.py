"""Every multilabel metric under an explicit decision rule, computed with scikit-learn.

Implements the evaluation of the sigmoidF1 paper (Table 2: weightedF1, microF1, macroF1, Precision,
mAP; decision rule of section 4.2: ``p = softmax(z)``, label j predicted when ``p_j >= t``) and of
the ZLPR paper (Eq. 25-30: SubACC, example-based F1, macro/micro F1, ranking average precision,
ranking loss), plus Hamming loss and coverage_error. Every metric that scikit-learn has is computed by
scikit-learn; this module only chooses the inputs (scores, 0/1 predictions, which classes) and the
unit (percent).

Public API (shapes: N examples x C classes):

* :func:`evaluate` / :func:`evaluate_rule` -- dict of all metrics (percent, see :data:`METRIC_DOCS`
  for each unit) under one explicit decision rule (:class:`mlhead.rules.DecisionRule`).
* :func:`f1_scores` -- micro and macro F1 only: the code ``evaluate`` reports them with, cheap
  enough for validation during ``mlhead fit`` (``--select val_macro_f1``).
* :func:`f1_scores_tensor` / :func:`f1_tensor` -- the same F1s for K stacked runs at once, on the
  logits' device, from tp/fp/fn counts (validation of a grid during ``mlhead fit``).
* :func:`per_class` -- per-class support/precision/recall/F1/AP rows (built by :func:`class_rows`, which
  :mod:`mlhead.blockeval` shares, as it shares :func:`ranking_percent`).
* :func:`decide` -- 0/1 predictions (uint8 N x C); shorthand for ``DecisionRule(...).apply``.
* Re-exported from :mod:`mlhead.rules`: :class:`DecisionRule`, :func:`scores`,
  :func:`tune_thresholds`, :func:`tuned_rule`.

The policy below (also available as the :data:`POLICY` string, for ``mlhead eval`` to print) is the
single source of truth for units, ties, ``zero_division`` and degenerate classes/examples.

POLICY
------
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    coverage_error,
    f1_score,
    hamming_loss,
    label_ranking_average_precision_score,
    label_ranking_loss,
    precision_recall_fscore_support,
    precision_score,
    recall_score,
)

from . import countmetrics as CM
from .rules import (  # noqa: F401  (scores, tune_thresholds, tuned_rule, ACTIVATIONS... re-exported)
    ACTIVATIONS,
    DEFAULT_THRESHOLDS,
    DecisionRule,
    as_logits as _as_logits,
    as_targets as _as_targets,
    order_scores as _order_scores,
    scores,
    tune_thresholds,
    tuned_rule,
)

POLICY = """\
Decision rule. scores = softmax(logits) over the C classes of each example ("softmax"),
sigmoid(logits) ("sigmoid"), or the logits themselves ("none"). Label j is predicted when
score_j >= t: greater-or-equal for every activation and every threshold. With "none" and t = 0 this
is ZLPR's rule "logit > 0" except for a logit of exactly 0.0, which is predicted here. For
softmax/sigmoid the global threshold t must lie in (0, 1]; for "none" any finite real. top-k: exactly
the K highest-scoring labels of each example are predicted (ties: the lower class index wins; the
threshold is ignored). Per-class thresholds: label j predicted when score_j >= t_j (t_j in [0, 1] for
softmax/sigmoid). The rule is always given explicitly and written with every result; it is never
guessed from the range of the values.

Units. All metrics are percentages in [0, 100] except coverage_error and the n_*/cardinality counts.
ranking_loss and hamming_loss are percentages where lower is better. coverage_error is a count
(sklearn coverage_error: mean number of top-ranked labels needed to cover all true labels of an
example, between 1 and C; lower is better; the Zhang-Zhou "coverage" is this minus 1).

zero_division = 0. Precision, recall and F1 (per class, micro, macro, weighted and per example) use
scikit-learn's zero_division=0: a 0/0 ratio counts as 0, silently. So an example with no true and no
predicted label has example_f1 = 0, and if no label is predicted at all every precision and F1 is 0.

Classes without positives. A class with no positive target in the evaluated data is excluded from
the per-class averages macro_f1, macro_precision, macro_recall, map and map_binarized (its recall
and average precision are undefined; scoring it 0 would shift the average by an amount no model can
change); weighted_f1 gives it weight 0 anyway. It still counts in micro_*, hamming_loss,
subset_accuracy, example_f1 and the ranking metrics, where predicting it is an error. Their number
is reported as n_classes_without_positives; per_class() gives such a class ap = NaN. If no class has
a positive, those averages are NaN.

Ranking metrics (scikit-learn behaviour, kept). lrap (label_ranking_average_precision_score, ZLPR
Eq. 29 AvgPrec) counts an example whose labels are all negative or all positive as 100; ranking_loss
(label_ranking_loss, ZLPR Eq. 30 normalised by |y_n| x |C minus y_n|) counts such an example as 0 and
counts a tied (positive, negative) pair as mis-ordered; coverage_error counts an example with no positive
label as 0. Tied scores share the worst (largest) rank.

Average precision. map = mean over classes (with positives) of average_precision_score of the
scores of the chosen activation: threshold-free. AP depends only on the order of the scores within a
class, so map is the same for "sigmoid" and "none" and differs for "softmax" (the softmax
normalisation reorders examples within a class). Orders are computed from the logits (sigmoid/none)
or the log-softmax (softmax), which give the same order as the probabilities but without the ties
that float saturation creates (sigmoid(40.0) == 1.0); equal softmax scores stay tied (the
normaliser is summed in sorted order after subtracting the row maximum, so it depends neither on
the order of the classes nor on a common shift of the logits). map_binarized = the same mean of
average_precision_score of the 0/1 predictions, as the sigmoidF1 code did for moviePosters/arXiv.
"""

__doc__ = (__doc__ or "") + POLICY

#: Alias kept for the CLI (``mlhead eval --explain`` may print it).
DOCS = POLICY

#: key -> (unit, better, what it is and where it comes from).
METRIC_DOCS: dict[str, tuple[str, str, str]] = {
    "weighted_f1": ("%", "higher", "sklearn f1_score(average='weighted'); sigmoidF1 Table 2 weightedF1"),
    "micro_f1": ("%", "higher", "sklearn f1_score(average='micro'); ZLPR Eq. 28, Table 2 microF1"),
    "macro_f1": ("%", "higher", "sklearn f1_score(average='macro') over classes with positives; ZLPR Eq. 27"),
    "macro_precision": ("%", "higher", "sklearn precision_score(average='macro'); Table 2 Precision"),
    "macro_recall": ("%", "higher", "sklearn recall_score(average='macro') over classes with positives"),
    "micro_precision": ("%", "higher", "sklearn precision_score(average='micro')"),
    "micro_recall": ("%", "higher", "sklearn recall_score(average='micro')"),
    "map": ("%", "higher", "mean over classes of sklearn average_precision_score(scores); Table 2 mAP"),
    "map_binarized": ("%", "higher", "mean over classes of average_precision_score(0/1 predictions)"),
    "subset_accuracy": ("%", "higher", "sklearn accuracy_score (exact match); ZLPR Eq. 25 SubACC"),
    "example_f1": ("%", "higher", "sklearn f1_score(average='samples'); ZLPR Eq. 26 MLC-F1"),
    "lrap": ("%", "higher", "sklearn label_ranking_average_precision_score; ZLPR Eq. 29 AvgPrec"),
    "ranking_loss": ("%", "lower", "sklearn label_ranking_loss; ZLPR Eq. 30 RankLoss"),
    "hamming_loss": ("%", "lower", "sklearn hamming_loss: fraction of wrong (example, label) cells"),
    "coverage_error": ("labels", "lower", "sklearn coverage_error: mean labels to cover all true ones (1..C)"),
    "n_examples": ("count", "", "N"),
    "n_classes": ("count", "", "C"),
    "n_classes_without_positives": ("count", "", "classes excluded from macro averages and map"),
    "n_examples_without_positives": ("count", "", "examples with no true label"),
    "n_examples_without_predictions": ("count", "", "examples with no predicted label"),
    "label_cardinality": ("labels", "", "mean number of true labels per example"),
    "predicted_cardinality": ("labels", "", "mean number of predicted labels per example"),
}

#: ``<name>@k`` ranking metrics of :mod:`mlhead.ranking` (any k): name -> (unit, better, meaning)
RANKING_DOCS: dict[str, tuple[str, str, str]] = {
    "p": ("%", "higher", "precision@k: true labels among the k top-scored / k (mlhead.ranking; LibMultiLabel P@k)"),
    "r": ("%", "higher", "recall@k: true labels among the k top-scored / true labels (LibMultiLabel R@k)"),
    "ndcg": ("%", "higher", "nDCG@k, binary gains, log2 discounts (LibMultiLabel NDCG@k)"),
    "psp": ("%", "higher", "propensity-scored P@k, Jain et al. KDD 2016, A=0.55 B=1.5, train-split propensities"),
}


def metric_doc(key: str) -> tuple[str, str, str]:
    """(unit, better, meaning) of a metric key: :data:`METRIC_DOCS`, ``<name>@k`` keys of any k from
    :data:`RANKING_DOCS`, else empty strings."""
    name, at, _ = key.partition("@")
    return METRIC_DOCS.get(key) or (RANKING_DOCS.get(name, ("", "", "")) if at else ("", "", ""))


#: Old metric key -> current key. Result files written before a rename still load through
#: :func:`upgrade_metric_keys` (``coverage`` became ``coverage_error``, sklearn's name: the suffix
#: says lower is better).
RENAMED_METRICS: dict[str, str] = {"coverage": "coverage_error"}


def upgrade_metric_keys(values: dict[str, Any]) -> dict[str, Any]:
    """A copy of a metrics dict (e.g. an old ``metrics.json``) with renamed keys under their current
    names (:data:`RENAMED_METRICS`); values unchanged. A current key already present wins.

    >>> upgrade_metric_keys({"coverage": 2.5, "map": 40.0})
    {'coverage_error': 2.5, 'map': 40.0}
    """
    out: dict[str, Any] = {}
    for k, v in values.items():
        new = RENAMED_METRICS.get(k, k)
        if new == k or new not in values:
            out[new] = v
    return out


#: Metrics where a smaller value is better (report.py bolds the minimum for these).
LOWER_IS_BETTER = frozenset(k for k, (_, better, _) in METRIC_DOCS.items() if better == "lower")


# --------------------------------------------------------------------------------------------------
# decisions (the rule itself lives in mlhead.rules)


def decide(
    logits: Any,
    activation: str = "softmax",
    threshold: float | None = 0.05,
    top_k: int | None = None,
    thresholds: Any = None,
) -> np.ndarray:
    """Apply a decision rule: uint8 N x C, 1 where the label is predicted.

    Shorthand for ``DecisionRule(activation, threshold, top_k, thresholds).apply(logits)`` (see
    :class:`mlhead.rules.DecisionRule`). Threshold rule: ``scores(logits, activation) >= threshold``
    (or ``>= thresholds[j]`` per class). ``top_k=K``: exactly the K highest-scoring labels of each row
    (ties -> lower class index). Raises ValueError (ConfigError, naming the CLI flag) for an unknown
    activation, a threshold outside (0, 1] for softmax/sigmoid, top_k < 1 or > C, top_k together
    with thresholds, thresholds of the wrong length, non-2-D logits, or NaN/inf logits.
    """
    return _rule(activation, threshold, top_k, thresholds).apply(logits)


def _rule(activation: str, threshold: Any, top_k: Any, thresholds: Any) -> DecisionRule:
    return DecisionRule(activation=activation, threshold=threshold, top_k=top_k, thresholds=thresholds)


# --------------------------------------------------------------------------------------------------
# metrics


def _pct(x: float) -> float:
    return float(100.0 * x)


#: above this many classes, F1/precision/recall come from numpy confusion counts and AP from one sort per
#: block of columns (:mod:`mlhead.countmetrics`; same values as scikit-learn, tested) instead of
#: scikit-learn's per-class validation and per-class loop (seconds per eval at 5,000 classes)
MANY_CLASSES = 1000


def many_classes(c: int) -> bool:
    """Whether ``c`` classes take the count-based paths (> :data:`MANY_CLASSES`): metrics from confusion
    counts (:mod:`mlhead.countmetrics`), ``mlhead eval`` and ``--tune-thresholds`` in row blocks
    (:mod:`mlhead.blockeval`)."""
    return c > MANY_CLASSES


def _aps(y: np.ndarray, s: np.ndarray, cols) -> np.ndarray:
    """average_precision_score of each column in ``cols`` (each with a positive), as fractions."""
    if many_classes(y.shape[1]):
        return CM.average_precision_columns(y, s, cols)
    return np.array([average_precision_score(y[:, j], s[:, j]) for j in cols], dtype=np.float64)


def _class_mean_ap(y: np.ndarray, s: np.ndarray, present: np.ndarray) -> float:
    if not present.any():
        return float("nan")
    return _pct(np.mean(_aps(y, s, np.flatnonzero(present))))


def _decided(logits: Any, targets: Any, rule: DecisionRule) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validated logits (float64), targets (uint8) and the rule's predictions (uint8), all N x C."""
    if not isinstance(rule, DecisionRule):
        raise ValueError(f"rule must be a DecisionRule, got {type(rule).__name__}")  # noqa: TRY004
    z = _as_logits(logits)
    y = _as_targets(targets, z.shape)
    rule.check(z.shape[1])
    return z, y, rule.apply_checked(z)


def _confusion_metrics(y: np.ndarray, pred: np.ndarray, labels: list[int]) -> dict[str, float]:
    """weighted/micro/macro F1, macro/micro precision and recall (percent): per-class averages over the
    classes ``labels`` (those with positives), micro over all cells. scikit-learn, or its numbers from
    confusion counts above :data:`MANY_CLASSES` classes."""
    if many_classes(y.shape[1]):
        return {k: _pct(v) for k, v in CM.prf_from_counts(*CM.confusion_counts(y, pred), labels).items()}
    nan = float("nan")

    def per_class_avg(fn, average: str) -> float:
        return _pct(fn(y, pred, average=average, labels=labels, zero_division=0)) if labels else nan

    return {**_f1(y, pred, labels), "weighted_f1": per_class_avg(f1_score, "weighted"),
            "macro_precision": per_class_avg(precision_score, "macro"),
            "macro_recall": per_class_avg(recall_score, "macro"),
            "micro_precision": _pct(precision_score(y, pred, average="micro", zero_division=0)),
            "micro_recall": _pct(recall_score(y, pred, average="micro", zero_division=0))}


def _f1(y: np.ndarray, pred: np.ndarray, labels: list[int]) -> dict[str, float]:
    """micro_f1 over all cells; macro_f1 over the classes ``labels`` (those with positives)."""
    if many_classes(y.shape[1]):
        counts = CM.prf_from_counts(*CM.confusion_counts(y, pred), labels)
        return {k: _pct(counts[k]) for k in ("micro_f1", "macro_f1")}
    macro = _pct(f1_score(y, pred, average="macro", labels=labels, zero_division=0)) if labels else float("nan")
    return {"micro_f1": _pct(f1_score(y, pred, average="micro", zero_division=0)), "macro_f1": macro}


def f1_scores(logits: Any, targets: Any, rule: DecisionRule) -> dict[str, float]:
    """``{"micro_f1", "macro_f1"}`` (percent) under ``rule``: the very values :func:`evaluate` reports.

    macro_f1 averages over the classes with a positive target (see :data:`POLICY`; NaN if none).
    Used for validation during ``mlhead fit`` so ``--select val_macro_f1`` selects on eval's
    ``macro_f1``. Shapes and errors as :func:`evaluate`.
    """
    _, y, pred = _decided(logits, targets, rule)
    return _f1(y, pred, np.flatnonzero(y.sum(axis=0) > 0).tolist())


def _label_ranking(y: np.ndarray, z: np.ndarray) -> dict[str, float]:
    """lrap and ranking_loss (percent) and coverage_error (labels): scikit-learn, or its numbers from each
    row's positives above :data:`MANY_CLASSES` classes."""
    if many_classes(y.shape[1]):
        return ranking_percent(CM.label_ranking_metrics(y, z))
    return {"lrap": _pct(label_ranking_average_precision_score(y, z)), "ranking_loss": _pct(label_ranking_loss(y, z)),
            "coverage_error": float(coverage_error(y, z))}


def ranking_percent(r: dict[str, float]) -> dict[str, float]:
    """lrap and ranking_loss of :func:`mlhead.countmetrics.label_ranking_metrics` (fractions) in percent;
    coverage_error stays a count."""
    return {"lrap": _pct(r["lrap"]), "ranking_loss": _pct(r["ranking_loss"]), "coverage_error": r["coverage_error"]}


F1_AVERAGES = ("micro", "macro", "weighted", "samples")


def _f1_ratio(tp: torch.Tensor, fp: torch.Tensor, fn: torch.Tensor) -> torch.Tensor:
    """2 tp / (2 tp + fp + fn) in float64, 0 where the denominator is 0 (sklearn zero_division=0)."""
    num, den = 2.0 * tp.double(), (2 * tp + fp + fn).double()
    return torch.where(den > 0, num / den.clamp(min=1), torch.zeros((), dtype=torch.float64, device=num.device))


def f1_tensor(pred: torch.Tensor, targets: torch.Tensor, average: str) -> torch.Tensor:
    """F1 in percent from 0/1 predictions and targets, vectorised over leading axes (on their device).

    ``pred``: bool ``(..., N, C)`` (e.g. K stacked runs; :meth:`DecisionRule.apply_tensor`);
    ``targets``: 0/1 ``(N, C)`` or ``(..., N, C)``. Returns float64 ``(...)``, the value of sklearn
    ``f1_score(y, pred, average=average, zero_division=0)`` with the :data:`POLICY` for classes
    without positives: ``macro`` and ``weighted`` average over the classes with a positive target (NaN
    if none has one), ``micro`` pools tp/fp/fn over all cells, ``samples`` is the mean per-example F1.
    Computed from integer counts tp/fp/fn (exact). Raises ValueError for another ``average``.
    """
    if average not in F1_AVERAGES:
        raise ValueError(f"average {average!r} invalid; valid: {', '.join(F1_AVERAGES)}")
    y = targets.bool()
    axis = -1 if average == "samples" else -2  # per example (samples) or per class (the rest)
    tp, fp, fn = (pred & y).sum(axis), (pred & ~y).sum(axis), (~pred & y).sum(axis)
    if average == "samples":
        return 100.0 * _f1_ratio(tp, fp, fn).mean(-1)
    if average == "micro":
        return 100.0 * _f1_ratio(tp.sum(-1), fp.sum(-1), fn.sum(-1))
    support = (tp + fn).double()  # per class, the same for every run
    weight = (support > 0).double() if average == "macro" else support
    return 100.0 * (_f1_ratio(tp, fp, fn) * weight).sum(-1) / weight.sum(-1)  # 0/0 -> NaN: no positives


def f1_scores_tensor(logits: torch.Tensor, targets: torch.Tensor, rule: DecisionRule) -> dict[str, torch.Tensor]:
    """:func:`f1_scores` for K stacked runs at once, on the logits' device (validation during fit).

    ``logits``: float ``K x N x C``; ``targets``: 0/1 ``N x C`` on the same device. Returns
    ``{"micro_f1", "macro_f1"}``, each a float64 K tensor in percent, equal to :func:`f1_scores` per
    run (see :meth:`DecisionRule.apply_tensor` for the one float64-ulp caveat); NaN for a run whose
    logits are not all finite (a diverged run is never selected). Raises ConfigError like
    :meth:`DecisionRule.check`.
    """
    finite = torch.isfinite(logits).all(-1).all(-1)
    pred = rule.apply_tensor(torch.where(finite[:, None, None], logits, torch.zeros((), device=logits.device)))
    nan = torch.tensor(float("nan"), dtype=torch.float64, device=logits.device)
    return {f"{a}_f1": torch.where(finite, f1_tensor(pred, targets, a), nan) for a in ("micro", "macro")}


def evaluate_rule(logits: Any, targets: Any, rule: DecisionRule) -> dict[str, float]:
    """:func:`evaluate` under a :class:`DecisionRule` object (same keys, units and errors)."""
    z, y, pred = _decided(logits, targets, rule)
    n, c = z.shape
    order = _order_scores(z, rule.activation)
    present = y.sum(axis=0) > 0
    labels = np.flatnonzero(present).tolist()
    conf = _confusion_metrics(y, pred, labels)
    out: dict[str, float] = {
        **{k: conf[k] for k in ("weighted_f1", "micro_f1", "macro_f1", "macro_precision", "macro_recall",
                                "micro_precision", "micro_recall")},
        "map": _class_mean_ap(y, order, present),
        "map_binarized": _class_mean_ap(y, pred, present),
        "subset_accuracy": _pct(accuracy_score(y, pred)),
        "example_f1": _pct(CM.example_f1(y, pred) if many_classes(c) else
                           f1_score(y, pred, average="samples", zero_division=0)),
        **_label_ranking(y, z),
        "hamming_loss": _pct(hamming_loss(y, pred)),
        "n_examples": float(n),
        "n_classes": float(c),
        "n_classes_without_positives": float(c - len(labels)),
        "n_examples_without_positives": float((y.sum(axis=1) == 0).sum()),
        "n_examples_without_predictions": float((pred.sum(axis=1) == 0).sum()),
        "label_cardinality": float(y.sum(axis=1).mean()),
        "predicted_cardinality": float(pred.sum(axis=1).mean()),
    }
    return out


#: Fraction of examples above which a rule predicting no label at all is reported (:func:`rule_warnings`).
EMPTY_PREDICTION_FRACTION = 0.5


def rule_warnings(values: dict[str, float], rule: DecisionRule) -> list[str]:
    """Warnings about a decision rule's result, in CLI terms (``mlhead eval`` prints them and writes them
    into the evaluation JSON as ``warnings``).

    One today: the rule predicts no label for more than :data:`EMPTY_PREDICTION_FRACTION` of the examples,
    and for more examples than have no true label (so a table of mostly no-label rows does not trigger
    it). Typical cause: softmax >= 0.05 over thousands of classes, where softmax scores are ~1/C. The
    message names the rules that predict labels there. ``values``: the dict of :func:`evaluate_rule`
    (``n_examples``, ``n_examples_without_predictions``, ``n_examples_without_positives``, ``n_classes``).
    """
    n = values.get("n_examples", 0.0)
    empty = values.get("n_examples_without_predictions", 0.0)
    if not n or empty <= EMPTY_PREDICTION_FRACTION * n or empty <= values.get("n_examples_without_positives", 0.0):
        return []
    fits = []
    if rule.activation != "sigmoid" or rule.thresholds is not None:
        fits.append("--activation sigmoid (independent per-class scores, threshold 0.5)")
    fits.append("--top-k K (the K highest-scoring labels of every example)")
    if rule.thresholds is None:
        fits.append("--tune-thresholds (per-class thresholds tuned on val)")
    return [f"decision rule {rule.name} predicts no label for {int(empty):,} of {int(n):,} examples "
            f"({100 * empty / n:.1f}%) over {int(values.get('n_classes', 0)):,} classes; rules that predict "
            f"labels here: {'; '.join(fits)}"]


def evaluate(
    logits: Any,
    targets: Any,
    activation: str = "softmax",
    threshold: float | None = 0.05,
    top_k: int | None = None,
    thresholds: Any = None,
) -> dict[str, float]:
    """Every metric of sigmoidF1 Table 2 and ZLPR Eq. 25-30 under one explicit decision rule.

    Args:
        logits: numpy array or torch tensor, N x C, any real dtype, finite (C >= 2 for softmax).
        targets: N x C multi-hot (values 0/1; bool, int or float).
        activation, threshold, top_k, thresholds: the decision rule (see :class:`DecisionRule`
            and :func:`decide`); ``threshold`` is ignored when ``top_k`` is given.

    Returns:
        dict key -> float. Percent (0-100): weighted_f1, micro_f1, macro_f1, macro_precision,
        macro_recall, micro_precision, micro_recall, map, map_binarized, subset_accuracy, example_f1,
        lrap, ranking_loss (lower is better), hamming_loss (lower is better). Count: coverage_error (mean
        number of labels, 1..C, lower is better), n_examples, n_classes, n_classes_without_positives,
        n_examples_without_positives, n_examples_without_predictions; label_cardinality and
        predicted_cardinality (mean labels per example). Units, sources and the treatment of
        degenerate classes/examples are in :data:`METRIC_DOCS` and :data:`POLICY`.

    Raises:
        ValueError: unknown activation, threshold outside (0, 1] for softmax/sigmoid, top_k < 1 or
        > C, shape mismatch between logits and targets, targets not 0/1, NaN/inf in logits.
    """
    return evaluate_rule(logits, targets, _rule(activation, threshold, top_k, thresholds))


def per_class(
    logits: Any,
    targets: Any,
    rule: DecisionRule,
    class_names: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """Per-class report under ``rule``: one dict per class, in class order.

    Keys: ``class`` (name; "class_<j>" when ``class_names`` is None), ``support`` (int, number of
    positive targets), ``n_predicted`` (int), ``precision``, ``recall``, ``f1`` (percent; sklearn
    precision_recall_fscore_support(average=None, zero_division=0)) and ``ap`` (percent; sklearn
    average_precision_score of the rule's activation scores; NaN for a class without positives).

    Raises ValueError like :func:`evaluate`, or if ``len(class_names) != C``.
    """
    z, y, pred = _decided(logits, targets, rule)
    c = z.shape[1]
    names = class_names_of(class_names, c)
    order = _order_scores(z, rule.activation)
    if many_classes(c):
        tp, fp, fn = CM.confusion_counts(y, pred)
        p, r, f, support = CM.ratio(tp, tp + fp), CM.ratio(tp, tp + fn), CM.ratio(2 * tp, 2 * tp + fp + fn), tp + fn
    else:
        p, r, f, support = precision_recall_fscore_support(
            y, pred, average=None, labels=list(range(c)), zero_division=0
        )
    present = support > 0
    ap = np.full(c, np.nan)
    ap[present] = _aps(y, order, np.flatnonzero(present))
    return class_rows(names, support, pred.sum(axis=0), p, r, f, ap)


def class_names_of(class_names: Sequence[str] | None, c: int) -> list[str]:
    """``class_names`` as strings ("class_<j>" when None); ValueError unless there are C = ``c`` of them."""
    names = [f"class_{j}" for j in range(c)] if class_names is None else [str(v) for v in class_names]
    if len(names) != c:
        raise ValueError(f"class_names has {len(names)} names but logits have C={c} classes")
    return names


def class_rows(names: list[str], support, n_predicted, precision, recall, f1, ap) -> list[dict[str, Any]]:
    """The rows of :func:`per_class` from per-class arrays (length C): counts as ints, ``precision``,
    ``recall``, ``f1`` and ``ap`` fractions turned into percent (NaN kept)."""
    return [
        {
            "class": names[j],
            "support": int(support[j]),
            "n_predicted": int(n_predicted[j]),
            "precision": _pct(precision[j]),
            "recall": _pct(recall[j]),
            "f1": _pct(f1[j]),
            "ap": _pct(ap[j]),
        }
        for j in range(len(names))
    ]
