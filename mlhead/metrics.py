"""Decision rules and every multilabel metric, computed with scikit-learn.

Implements the evaluation of the sigmoidF1 paper (Table 2: weightedF1, microF1, macroF1, Precision,
mAP; decision rule of section 4.2: ``p = softmax(z)``, label j predicted when ``p_j >= t``) and of
the ZLPR paper (Eq. 25-30: SubACC, example-based F1, macro/micro F1, ranking average precision,
ranking loss), plus Hamming loss and coverage_error. Every metric that scikit-learn has is computed by
scikit-learn; this module only chooses the inputs (scores, 0/1 predictions, which classes) and the
unit (percent).

Public API (shapes: N examples x C classes, C >= 2):

* :func:`scores` -- activation applied to logits (float64 N x C).
* :func:`decide` -- 0/1 predictions (uint8 N x C) under an explicit :class:`DecisionRule`.
* :func:`evaluate` -- dict of all metrics (percent, see :data:`METRIC_DOCS` for each unit).
* :func:`per_class` -- per-class support/precision/recall/F1/AP rows.
* :func:`tune_thresholds` / :func:`tuned_rule` -- per-class thresholds maximising each class's F1
  on validation data.
* :class:`DecisionRule` -- the rule as a value with a printable ``name`` and a JSON ``to_dict()``.

The policy below (also available as the :data:`POLICY` string, for ``mlhead eval`` to print) is the
single source of truth for units, ties, ``zero_division`` and degenerate classes/examples.

POLICY
------
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.special import expit, logsumexp, softmax
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    coverage_error,
    f1_score,
    hamming_loss,
    label_ranking_average_precision_score,
    label_ranking_loss,
    precision_recall_curve,
    precision_recall_fscore_support,
    precision_score,
    recall_score,
)

ACTIVATIONS = ("softmax", "sigmoid", "none")

#: The global threshold a rule falls back to when none is given, per activation (paper 4.2 uses
#: softmax >= 0.05 for moviePosters/arXiv2020 and 0.5 for Pascal-VOC; ZLPR predicts logit > 0).
DEFAULT_THRESHOLDS = {"softmax": 0.05, "sigmoid": 0.5, "none": 0.0}

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
# input validation


def _to_numpy(x: Any, name: str) -> np.ndarray:
    if hasattr(x, "detach"):  # torch.Tensor (any dtype/device, bf16 included)
        x = x.detach().cpu()
        x = x.double() if x.is_floating_point() else x.long()
        return x.numpy()
    try:
        return np.asarray(x)
    except Exception as exc:  # pragma: no cover - exotic inputs
        raise ValueError(f"{name} must be an array-like N x C, got {type(x).__name__}") from exc


def _as_logits(logits: Any, name: str = "logits") -> np.ndarray:
    z = _to_numpy(logits, name)
    if z.ndim != 2:
        raise ValueError(f"{name} must be 2-D (N examples x C classes), got shape {z.shape}")
    if z.shape[0] < 1 or z.shape[1] < 2:
        raise ValueError(f"{name} must have N >= 1 examples and C >= 2 classes, got shape {z.shape}")
    if not (np.issubdtype(z.dtype, np.number) or z.dtype == bool):
        raise ValueError(f"{name} must be numeric, got dtype {z.dtype}")
    z = z.astype(np.float64, copy=False)
    if not np.isfinite(z).all():
        bad = np.argwhere(~np.isfinite(z))[0]
        raise ValueError(
            f"{name} contain NaN or inf (first at row {bad[0]}, column {bad[1]}); "
            "a diverged head cannot be evaluated"
        )
    return z


def _as_targets(targets: Any, shape: tuple[int, int], name: str = "targets") -> np.ndarray:
    y = _to_numpy(targets, name)
    if y.shape != shape:
        raise ValueError(f"{name} shape {y.shape} does not match logits shape {shape}")
    if not (np.issubdtype(y.dtype, np.number) or y.dtype == bool):
        raise ValueError(f"{name} must be numeric 0/1, got dtype {y.dtype}")
    ok = (y == 0) | (y == 1)
    if not ok.all():
        bad = np.argwhere(~ok)[0]
        raise ValueError(
            f"{name} must contain only 0 and 1 (multi-hot); found {y[bad[0], bad[1]]!r} at row "
            f"{bad[0]}, column {bad[1]}"
        )
    return y.astype(np.uint8)


def _check_activation(activation: str) -> str:
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation {activation!r} invalid; valid: {', '.join(ACTIVATIONS)}")
    return activation


def _check_threshold(threshold: Any, activation: str) -> float:
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float, np.integer, np.floating)):
        raise ValueError(f"threshold must be a real number, got {threshold!r}")  # noqa: TRY004
    t = float(threshold)
    if not math.isfinite(t):
        raise ValueError(f"threshold must be finite, got {t}")
    if activation in ("softmax", "sigmoid") and not 0.0 < t <= 1.0:
        raise ValueError(
            f"threshold {t:g} outside (0, 1] for activation {activation!r} (scores are "
            "probabilities); use activation='none' to threshold raw logits"
        )
    return t


def _check_thresholds(thresholds: Any, activation: str) -> np.ndarray:
    th = np.asarray(_to_numpy(thresholds, "thresholds"), dtype=np.float64)
    if th.ndim != 1:
        raise ValueError(f"thresholds must be 1-D (one per class), got shape {th.shape}")
    if not np.isfinite(th).all():
        raise ValueError("thresholds contain NaN or inf")
    if activation in ("softmax", "sigmoid") and ((th < 0) | (th > 1)).any():
        raise ValueError(f"thresholds must lie in [0, 1] for activation {activation!r}")
    return th


def _check_top_k(top_k: Any) -> int:
    if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)):
        raise ValueError(f"top_k must be a positive integer, got {top_k!r}")  # noqa: TRY004
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    return int(top_k)


# --------------------------------------------------------------------------------------------------
# decision rule


@dataclass(frozen=True, eq=False)
class DecisionRule:
    """An explicit decision rule turning logits into 0/1 label predictions.

    Attributes:
        activation: "softmax" (over classes, paper 4.2), "sigmoid", or "none" (raw logits; ZLPR).
        threshold: global threshold t, label j predicted when score_j >= t. Must be in (0, 1] for
            softmax/sigmoid, any finite real for "none". ``None`` means the activation's default
            (:data:`DEFAULT_THRESHOLDS`). Ignored (stored as ``None``) when ``top_k`` is set; kept as
            the documentation of the fallback when per-class ``thresholds`` are set.
        top_k: predict exactly the K highest-scoring labels per example (1 <= K <= C).
        thresholds: per-class thresholds (float64 array of C), label j predicted when
            score_j >= thresholds[j]. Mutually exclusive with ``top_k``.
        tuned_on: name of the split the per-class thresholds were tuned on (e.g. "val"), or None.

    ``name`` is the human-readable rule written into result files and table captions:
    "softmax>=0.05", "sigmoid>=0.5", "logit>=0", "top-3 (softmax)", "per-class tuned on val
    (sigmoid)". ``slug`` is a file-name-safe form of it. Raises ValueError on invalid values.
    """

    activation: str = "softmax"
    threshold: float | None = 0.05
    top_k: int | None = None
    thresholds: np.ndarray | None = field(default=None, repr=False)
    tuned_on: str | None = None

    def __post_init__(self) -> None:
        act = _check_activation(self.activation)
        if self.top_k is not None and self.thresholds is not None:
            raise ValueError("top_k and thresholds are mutually exclusive; give one of them")
        if self.top_k is not None:
            object.__setattr__(self, "top_k", _check_top_k(self.top_k))
            object.__setattr__(self, "threshold", None)
        else:
            t = DEFAULT_THRESHOLDS[act] if self.threshold is None else self.threshold
            object.__setattr__(self, "threshold", _check_threshold(t, act))
        if self.thresholds is not None:
            object.__setattr__(self, "thresholds", _check_thresholds(self.thresholds, act))

    # -- naming ------------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        """Human-readable rule, e.g. "softmax>=0.05" (see class docstring)."""
        if self.top_k is not None:
            return f"top-{self.top_k} ({self.activation})"
        if self.thresholds is not None:
            where = f"tuned on {self.tuned_on}" if self.tuned_on else "thresholds"
            return f"per-class {where} ({self.activation})"
        prefix = "logit" if self.activation == "none" else self.activation
        return f"{prefix}>={self.threshold:g}"

    @property
    def slug(self) -> str:
        """File-name-safe ``name``: "softmax-ge-0.05", "top-3-softmax", "per-class-tuned-on-val-sigmoid"."""
        s = self.name.replace(">=", "-ge-")
        s = re.sub(r"[^A-Za-z0-9.+-]+", "-", s)
        return re.sub(r"-{3,}", "--", s).strip("-")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict: name, activation, threshold, top_k, thresholds (list or None), tuned_on."""
        return {
            "name": self.name,
            "activation": self.activation,
            "threshold": self.threshold,
            "top_k": self.top_k,
            "thresholds": None if self.thresholds is None else [float(v) for v in self.thresholds],
            "tuned_on": self.tuned_on,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DecisionRule:
        """Inverse of :meth:`to_dict` (``name`` is recomputed, not read)."""
        return cls(
            activation=d.get("activation", "softmax"),
            threshold=d.get("threshold"),
            top_k=d.get("top_k"),
            thresholds=None if d.get("thresholds") is None else np.asarray(d["thresholds"], float),
            tuned_on=d.get("tuned_on"),
        )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, DecisionRule) and self.to_dict() == other.to_dict()

    def __hash__(self) -> int:
        return hash(self.name)

    def __str__(self) -> str:
        return self.name

    # -- application -------------------------------------------------------------------------------
    def check(self, n_classes: int) -> None:
        """Raise ValueError if the rule cannot apply to C = ``n_classes`` classes."""
        if self.top_k is not None and self.top_k > n_classes:
            raise ValueError(f"top_k={self.top_k} exceeds the number of classes C={n_classes}")
        if self.thresholds is not None and len(self.thresholds) != n_classes:
            raise ValueError(
                f"thresholds has {len(self.thresholds)} values but logits have C={n_classes} classes"
            )

    def decide(self, logits: Any) -> np.ndarray:
        """0/1 predictions, uint8 N x C (see :func:`decide`)."""
        z = _as_logits(logits)
        self.check(z.shape[1])
        return _decide(z, self)

    def evaluate(self, logits: Any, targets: Any) -> dict[str, float]:
        """All metrics under this rule (see :func:`evaluate`)."""
        return _evaluate(logits, targets, self)


def _rule(activation: str, threshold: Any, top_k: Any, thresholds: Any) -> DecisionRule:
    return DecisionRule(activation=activation, threshold=threshold, top_k=top_k, thresholds=thresholds)


# --------------------------------------------------------------------------------------------------
# scores and decisions


def scores(logits: Any, activation: str) -> np.ndarray:
    """Scores the decision threshold applies to: float64 N x C.

    ``"softmax"``: softmax over the C classes of each row (sigmoidF1 paper 4.2); ``"sigmoid"``:
    elementwise 1/(1+exp(-z)); ``"none"``: the logits unchanged (ZLPR). ``logits``: numpy array or
    torch tensor, N x C, finite. Raises ValueError for an unknown activation, a non-2-D input,
    C < 2, or NaN/inf in the logits.
    """
    _check_activation(activation)
    z = _as_logits(logits)
    return _scores(z, activation)


def _scores(z: np.ndarray, activation: str) -> np.ndarray:
    if activation == "softmax":
        return softmax(z, axis=1)
    if activation == "sigmoid":
        return expit(z)
    return z.copy()


def _order_scores(z: np.ndarray, activation: str) -> np.ndarray:
    """Same within-class and within-example order as ``_scores`` but free of saturation ties.

    For softmax: the log-softmax ``d - logsumexp(d)`` of ``d = z - max(z)`` (softmax is
    shift-invariant), with the normaliser summed over ``d`` in sorted order, so rows whose logits are
    a permutation or a shift of each other get bit-identical normalisers and mathematically tied
    scores stay tied (otherwise rounding noise breaks such ties, which changes average precision).
    """
    if activation != "softmax":
        return z
    d = z - z.max(axis=1, keepdims=True)
    return d - logsumexp(np.sort(d, axis=1), axis=1, keepdims=True)


def _decide(z: np.ndarray, rule: DecisionRule) -> np.ndarray:
    n, c = z.shape
    if rule.top_k is not None:
        # Every activation is increasing within a row, so the row's order is the logits' order.
        order = np.argsort(-z, axis=1, kind="stable")[:, : rule.top_k]
        pred = np.zeros((n, c), dtype=np.uint8)
        np.put_along_axis(pred, order, 1, axis=1)
        return pred
    s = _scores(z, rule.activation)
    t = rule.thresholds if rule.thresholds is not None else rule.threshold
    return (s >= t).astype(np.uint8)


def decide(
    logits: Any,
    activation: str = "softmax",
    threshold: float | None = 0.05,
    top_k: int | None = None,
    thresholds: Any = None,
) -> np.ndarray:
    """Apply a decision rule: uint8 N x C, 1 where the label is predicted.

    Threshold rule: ``scores(logits, activation) >= threshold`` (or ``>= thresholds[j]`` per class).
    ``top_k=K``: exactly the K highest-scoring labels of each row (ties -> lower class index).
    Raises ValueError (naming the argument) for an unknown activation, a threshold outside (0, 1]
    for softmax/sigmoid, top_k < 1 or > C, top_k together with thresholds, thresholds of the wrong
    length, non-2-D logits, or NaN/inf logits.
    """
    rule = _rule(activation, threshold, top_k, thresholds)
    return rule.decide(logits)


# --------------------------------------------------------------------------------------------------
# metrics


def _pct(x: float) -> float:
    return float(100.0 * x)


def _class_mean_ap(y: np.ndarray, s: np.ndarray, present: np.ndarray) -> float:
    if not present.any():
        return float("nan")
    return _pct(np.mean([average_precision_score(y[:, j], s[:, j]) for j in np.flatnonzero(present)]))


def _evaluate(logits: Any, targets: Any, rule: DecisionRule) -> dict[str, float]:
    z = _as_logits(logits)
    y = _as_targets(targets, z.shape)
    n, c = z.shape
    rule.check(c)
    pred = _decide(z, rule)
    order = _order_scores(z, rule.activation)
    present = y.sum(axis=0) > 0
    labels = np.flatnonzero(present).tolist()
    nan = float("nan")

    def per_class_avg(fn, average: str) -> float:
        if not labels:
            return nan
        return _pct(fn(y, pred, average=average, labels=labels, zero_division=0))

    out: dict[str, float] = {
        "weighted_f1": per_class_avg(f1_score, "weighted"),
        "micro_f1": _pct(f1_score(y, pred, average="micro", zero_division=0)),
        "macro_f1": per_class_avg(f1_score, "macro"),
        "macro_precision": per_class_avg(precision_score, "macro"),
        "macro_recall": per_class_avg(recall_score, "macro"),
        "micro_precision": _pct(precision_score(y, pred, average="micro", zero_division=0)),
        "micro_recall": _pct(recall_score(y, pred, average="micro", zero_division=0)),
        "map": _class_mean_ap(y, order, present),
        "map_binarized": _class_mean_ap(y, pred, present),
        "subset_accuracy": _pct(accuracy_score(y, pred)),
        "example_f1": _pct(f1_score(y, pred, average="samples", zero_division=0)),
        "lrap": _pct(label_ranking_average_precision_score(y, z)),
        "ranking_loss": _pct(label_ranking_loss(y, z)),
        "hamming_loss": _pct(hamming_loss(y, pred)),
        "coverage_error": float(coverage_error(y, z)),
        "n_examples": float(n),
        "n_classes": float(c),
        "n_classes_without_positives": float(c - len(labels)),
        "n_examples_without_positives": float((y.sum(axis=1) == 0).sum()),
        "n_examples_without_predictions": float((pred.sum(axis=1) == 0).sum()),
        "label_cardinality": float(y.sum(axis=1).mean()),
        "predicted_cardinality": float(pred.sum(axis=1).mean()),
    }
    return out


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
        logits: numpy array or torch tensor, N x C (C >= 2), any real dtype, finite.
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
    return _evaluate(logits, targets, _rule(activation, threshold, top_k, thresholds))


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
    if not isinstance(rule, DecisionRule):
        raise ValueError(f"rule must be a DecisionRule, got {type(rule).__name__}")  # noqa: TRY004
    z = _as_logits(logits)
    y = _as_targets(targets, z.shape)
    c = z.shape[1]
    rule.check(c)
    names = [f"class_{j}" for j in range(c)] if class_names is None else [str(v) for v in class_names]
    if len(names) != c:
        raise ValueError(f"class_names has {len(names)} names but logits have C={c} classes")
    pred = _decide(z, rule)
    order = _order_scores(z, rule.activation)
    p, r, f, support = precision_recall_fscore_support(
        y, pred, average=None, labels=list(range(c)), zero_division=0
    )
    present = support > 0
    ap = np.full(c, np.nan)
    for j in np.flatnonzero(present):
        ap[j] = average_precision_score(y[:, j], order[:, j])
    return [
        {
            "class": names[j],
            "support": int(support[j]),
            "n_predicted": int(pred[:, j].sum()),
            "precision": _pct(p[j]),
            "recall": _pct(r[j]),
            "f1": _pct(f[j]),
            "ap": _pct(ap[j]),
        }
        for j in range(c)
    ]


# --------------------------------------------------------------------------------------------------
# threshold tuning


def tune_thresholds(
    val_logits: Any,
    val_targets: Any,
    activation: str,
    threshold: float | None = None,
) -> np.ndarray:
    """Per-class thresholds maximising each class's F1 on validation data (float64 array of C).

    For class j, the candidates are the distinct validation scores of j (sklearn
    precision_recall_curve: precision/recall of ``score >= candidate``); the one with the highest F1
    wins (ties: the lowest candidate). The returned threshold is the midpoint between the winner and
    the next lower distinct score (the winner itself if it is the lowest), so on the validation data
    it makes exactly the winner's predictions and is less tight on new data. A class with no
    validation positive keeps the global ``threshold`` (default: :data:`DEFAULT_THRESHOLDS` of the
    activation: softmax 0.05, sigmoid 0.5, none 0). Because the global threshold's predictions for a
    class equal those of one candidate (or are empty, F1 0), each tuned per-class F1 on the
    validation data is >= the global threshold's.

    Thresholds are in score units of ``activation`` (probabilities for softmax/sigmoid, logits for
    none). Use them via ``DecisionRule(activation, threshold, thresholds=..., tuned_on="val")`` or
    :func:`tuned_rule`. Raises ValueError like :func:`evaluate`.
    """
    _check_activation(activation)
    z = _as_logits(val_logits, "val_logits")
    y = _as_targets(val_targets, z.shape, "val_targets")
    glob = _check_threshold(DEFAULT_THRESHOLDS[activation] if threshold is None else threshold, activation)
    s = _scores(z, activation)
    out = np.full(z.shape[1], glob, dtype=np.float64)
    for j in range(z.shape[1]):
        yj = y[:, j]
        if yj.sum() == 0:
            continue
        prec, rec, cand = precision_recall_curve(yj, s[:, j])
        prec, rec = prec[: len(cand)], rec[: len(cand)]
        denom = prec + rec
        f1 = np.divide(2 * prec * rec, denom, out=np.zeros_like(denom), where=denom > 0)
        k = int(np.argmax(f1))
        t = float(cand[k])
        if k > 0:
            mid = 0.5 * (float(cand[k - 1]) + t)
            if cand[k - 1] < mid <= t:
                t = mid
        out[j] = t
    return out


def tuned_rule(
    val_logits: Any,
    val_targets: Any,
    activation: str,
    threshold: float | None = None,
    split: str = "val",
) -> DecisionRule:
    """:func:`tune_thresholds` wrapped as a DecisionRule named "per-class tuned on <split> (<activation>)"."""
    th = tune_thresholds(val_logits, val_targets, activation, threshold)
    return DecisionRule(activation=activation, threshold=threshold, thresholds=th, tuned_on=split)
