"""The decision rule: how logits become multi-hot label predictions (sigmoidF1 paper 4.2; ZLPR).

One :class:`DecisionRule` is used everywhere a prediction is made or named: ``mlhead eval``, ``mlhead
sweep``, ``mlhead report`` (captions), validation during ``mlhead fit`` (``--select val_macro_f1``
selects on the number eval reports as ``macro_f1``) and ``mlhead predict``. A rule is

* an activation: ``softmax`` over the C classes of each example (the paper), ``sigmoid`` per class, or
  ``none`` (the logits themselves; ZLPR's rule is ``--activation none --threshold 0``);
* and a decision: a global ``threshold`` t (label j predicted when score_j >= t), exactly the ``top_k``
  highest-scoring labels, or per-class ``thresholds`` (tuned on a split, usually val, by
  :meth:`DecisionRule.tune` / :func:`tune_thresholds`).

Its ``name`` ("softmax>=0.05", "logit>=0", "top-3 (softmax)", "per-class tuned on val (sigmoid)") is
written into every result file and table caption; the rule is never guessed from value ranges.

Invalid rules raise :class:`~mlhead.errors.ConfigError` (a ``ValueError``) naming the CLI flag
(``--threshold``, ``--activation``, ``--top-k``, ``--tune-thresholds``) and the library argument.
This module also holds the shared validation of logits (N x C) and multi-hot targets (N x C) that
:mod:`mlhead.metrics` and :mod:`mlhead.report` use.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy.special import expit, logsumexp, softmax

from .errors import ConfigError, NumericalError

if TYPE_CHECKING:  # pragma: no cover
    import torch

ACTIVATIONS = ("softmax", "sigmoid", "none")

#: The global threshold a rule falls back to when none is given, per activation (paper 4.2 uses
#: softmax >= 0.05 for moviePosters/arXiv2020 and 0.5 for Pascal-VOC; ZLPR predicts logit > 0).
DEFAULT_THRESHOLDS = {"softmax": 0.05, "sigmoid": 0.5, "none": 0.0}

_DICT_KEYS = ("activation", "threshold", "top_k", "thresholds", "tuned_on")


# --------------------------------------------------------------------------------------------------
# input validation (shared with metrics and report)


def _to_numpy(x: Any, name: str) -> np.ndarray:
    if hasattr(x, "detach"):  # torch.Tensor (any dtype/device, bf16 included)
        x = x.detach().cpu()
        x = x.double() if x.is_floating_point() else x.long()
        return x.numpy()
    try:
        return np.asarray(x)
    except Exception as exc:  # pragma: no cover - exotic inputs
        raise ValueError(f"{name} must be an array-like N x C, got {type(x).__name__}") from exc


def as_logits(logits: Any, name: str = "logits") -> np.ndarray:
    """Validated logits as float64 N x C (N >= 1, C >= 1; numpy or torch input, any real dtype).

    Raises ValueError if not 2-D, empty, non-numeric, or containing NaN/inf (the first bad cell named).
    """
    z = _to_numpy(logits, name)
    if z.ndim != 2:
        raise ValueError(f"{name} must be 2-D (N examples x C classes), got shape {z.shape}")
    if z.shape[0] < 1 or z.shape[1] < 1:
        raise ValueError(f"{name} must have N >= 1 examples and C >= 1 classes, got shape {z.shape}")
    if not (np.issubdtype(z.dtype, np.number) or z.dtype == bool):
        raise ValueError(f"{name} must be numeric, got dtype {z.dtype}")
    z = z.astype(np.float64, copy=False)
    if not np.isfinite(z).all():
        bad = np.argwhere(~np.isfinite(z))[0]
        raise NumericalError(
            f"{name} contain NaN or inf (first at row {bad[0]}, column {bad[1]}); "
            "a diverged head cannot be evaluated"
        )
    return z


def as_targets(targets: Any, shape: tuple[int, int], name: str = "targets") -> np.ndarray:
    """Validated multi-hot targets as uint8 of ``shape`` (values 0/1; bool, int or float input).

    Raises ValueError on a shape mismatch, a non-numeric dtype, or a value other than 0 and 1.
    """
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


def _check_activation(activation: Any) -> str:
    if activation not in ACTIVATIONS:
        raise ConfigError(f"--activation {activation} invalid; "
                          f"valid: {', '.join(ACTIVATIONS)}")
    return activation


def _check_threshold(threshold: Any, activation: str) -> float:
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float, np.integer, np.floating)):
        raise ConfigError(f"--threshold must be a real number, got {threshold!r}")
    t = float(threshold)
    if not math.isfinite(t):
        raise ConfigError(f"--threshold must be finite, got {t}")
    if activation in ("softmax", "sigmoid") and not 0.0 < t <= 1.0:
        raise ConfigError(
            f"--threshold {t:g} outside (0, 1] for --activation {activation} (scores are "
            "probabilities); use --activation none to threshold raw logits"
        )
    return t


def _check_thresholds(thresholds: Any, activation: str) -> np.ndarray:
    th = np.asarray(_to_numpy(thresholds, "thresholds"), dtype=np.float64)
    if th.ndim != 1:
        raise ConfigError(f"per-class thresholds must be 1-D (one per class), got shape {th.shape}")
    if not np.isfinite(th).all():
        raise ConfigError("per-class thresholds contain NaN or inf")
    if activation in ("softmax", "sigmoid") and ((th < 0) | (th > 1)).any():
        raise ConfigError(f"per-class thresholds must lie in [0, 1] for --activation {activation}")
    return th


def _check_top_k(top_k: Any) -> int:
    if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)):
        raise ConfigError(f"--top-k must be a positive integer (top_k), got {top_k!r}")
    if top_k < 1:
        raise ConfigError(f"--top-k {top_k} is out of range: top_k must be >= 1")
    return int(top_k)


# --------------------------------------------------------------------------------------------------
# scores


def _scores(z: np.ndarray, activation: str) -> np.ndarray:
    if activation == "softmax":
        return softmax(z, axis=1)
    if activation == "sigmoid":
        return expit(z)
    return z.copy()


def order_scores(z: np.ndarray, activation: str) -> np.ndarray:
    """Same within-class and within-example order as the activation's scores, free of saturation
    ties (sigmoid(40.0) == 1.0): log-softmax for softmax, the logits otherwise. ``z``: float64 N x C.

    For softmax: the log-softmax ``d - logsumexp(d)`` of ``d = z - max(z)`` (softmax is
    shift-invariant), with the normaliser summed over ``d`` in sorted order, so rows whose logits are
    a permutation or a shift of each other get bit-identical normalisers and mathematically tied
    scores stay tied (otherwise rounding noise breaks such ties, which changes average precision).
    """
    if activation != "softmax":
        return z
    d = z - z.max(axis=1, keepdims=True)
    return d - logsumexp(np.sort(d, axis=1), axis=1, keepdims=True)


def scores(logits: Any, activation: str) -> np.ndarray:
    """Scores the decision threshold applies to: float64 N x C.

    ``"softmax"``: softmax over the C classes of each row (sigmoidF1 paper 4.2); ``"sigmoid"``:
    elementwise 1/(1+exp(-z)); ``"none"``: the logits unchanged (ZLPR). ``logits``: numpy array or
    torch tensor, N x C, finite. Raises ValueError for an unknown activation, a non-2-D input, or
    NaN/inf in the logits.
    """
    _check_activation(activation)
    return _scores(as_logits(logits), activation)


# --------------------------------------------------------------------------------------------------
# the rule


@dataclass(frozen=True, eq=False)
class DecisionRule:
    """An explicit decision rule turning logits (N x C) into multi-hot predictions (uint8 N x C).

    Attributes:
        activation: "softmax" (over classes, paper 4.2), "sigmoid", or "none" (raw logits; ZLPR).
        threshold: global threshold t, label j predicted when score_j >= t. Must be in (0, 1] for
            softmax/sigmoid, any finite real for "none". ``None`` means the activation's default
            (:data:`DEFAULT_THRESHOLDS`). Ignored (stored as ``None``) when ``top_k`` is set; kept as
            the fallback of classes without validation positives when per-class thresholds are tuned.
        top_k: predict exactly the K highest-scoring labels per example (1 <= K <= C; ties: the lower
            class index wins).
        thresholds: per-class thresholds (float64 array of C), label j predicted when
            score_j >= thresholds[j]. Mutually exclusive with ``top_k``.
        tuned_on: split the per-class thresholds were (or are to be) tuned on, e.g. "val". A rule
            with ``tuned_on`` but no ``thresholds`` is a recipe (``--tune-thresholds``): resolve it
            with :meth:`tune` before :meth:`apply`.

    ``name`` is the human-readable rule written into result files and table captions:
    "softmax>=0.05", "sigmoid>=0.5", "logit>=0", "top-3 (softmax)", "per-class tuned on val
    (sigmoid)". ``slug`` is a file-name-safe form of it. Raises ConfigError on invalid values.

    >>> DecisionRule("softmax", 0.05).apply([[2.0, 0.0, -3.0]]).tolist()
    [[1, 1, 0]]
    """

    activation: str = "softmax"
    threshold: float | None = None
    top_k: int | None = None
    thresholds: np.ndarray | None = field(default=None, repr=False)
    tuned_on: str | None = None

    def __post_init__(self) -> None:
        act = _check_activation(self.activation)
        if self.top_k is not None and (self.thresholds is not None or self.tuned_on is not None):
            raise ConfigError("top_k and thresholds are mutually exclusive: give --top-k or "
                              "--tune-thresholds, not both")
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
        if self.thresholds is not None or self.tuned_on is not None:
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

    @property
    def needs_tuning(self) -> bool:
        """True for a ``--tune-thresholds`` recipe whose per-class thresholds are not tuned yet."""
        return self.tuned_on is not None and self.thresholds is None

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
        """Inverse of :meth:`to_dict` (``name`` and ``slug`` are recomputed, not read).

        Raises ConfigError for a key that is not a rule field (the key named).
        """
        unknown = sorted(set(d) - set(_DICT_KEYS) - {"name", "slug"})
        if unknown:
            raise ConfigError(f"decision rule has unknown key(s) {unknown}; valid: {', '.join(_DICT_KEYS)}")
        th = d.get("thresholds")
        return cls(activation=d.get("activation", "softmax"), threshold=d.get("threshold"),
                   top_k=d.get("top_k"), thresholds=None if th is None else np.asarray(th, float),
                   tuned_on=d.get("tuned_on"))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, DecisionRule) and self.to_dict() == other.to_dict()

    def __hash__(self) -> int:
        return hash(self.name)

    def __str__(self) -> str:
        return self.name

    # -- application -------------------------------------------------------------------------------
    def check(self, n_classes: int) -> None:
        """Raise ConfigError if the rule cannot apply to C = ``n_classes`` classes (softmax over one
        class, top_k > C, per-class thresholds of another length, thresholds not tuned yet)."""
        if self.activation == "softmax" and n_classes == 1:
            raise ConfigError("--activation softmax over a single class scores every example 1.0; "
                              "use --activation sigmoid")
        if self.top_k is not None and self.top_k > n_classes:
            raise ConfigError(f"--top-k {self.top_k} exceeds the number of classes C={n_classes} (top_k)")
        if self.needs_tuning:
            raise ConfigError(f"per-class thresholds are not tuned yet: tune them on {self.tuned_on} "
                              "first (DecisionRule.tune)")
        if self.thresholds is not None and len(self.thresholds) != n_classes:
            raise ConfigError(f"per-class thresholds has {len(self.thresholds)} values but logits have "
                              f"C={n_classes} classes")

    def scores(self, logits: Any) -> np.ndarray:
        """The activation's scores of ``logits`` (N x C): float64 N x C (see :func:`scores`)."""
        z = as_logits(logits)
        self.check(z.shape[1])
        return _scores(z, self.activation)

    def apply(self, logits: Any) -> np.ndarray:
        """Multi-hot predictions, uint8 N x C: 1 where the rule predicts the label.

        ``logits``: numpy array or torch tensor N x C, finite. Raises ValueError/ConfigError for
        invalid logits or a rule that does not fit C (see :meth:`check`).
        """
        z = as_logits(logits)
        self.check(z.shape[1])
        return self.apply_checked(z)

    #: Former name of :meth:`apply`.
    decide = apply

    def apply_checked(self, z: np.ndarray) -> np.ndarray:
        """:meth:`apply` on logits already validated by :func:`as_logits` and :meth:`check`."""
        n, c = z.shape
        if self.top_k is not None:
            # Every activation is increasing within a row, so the row's order is the logits' order;
            # a partial top-k (ties to the lower class index, as a stable argsort) instead of a full sort
            from .ranking import topk_indices

            order = topk_indices(z, self.top_k)
            pred = np.zeros((n, c), dtype=np.uint8)
            np.put_along_axis(pred, order, 1, axis=1)
            return pred
        t = self.thresholds if self.thresholds is not None else self.threshold
        return (_scores(z, self.activation) >= t).astype(np.uint8)

    def apply_tensor(self, logits: torch.Tensor) -> torch.Tensor:
        """:meth:`apply` on a torch tensor, vectorised over leading axes and left on its device.

        ``logits``: float tensor ``(..., N, C)`` (e.g. K stacked runs x N examples x C classes), finite
        (callers mask out runs with non-finite logits). Returns a bool tensor of the same shape: True
        where the rule predicts the label. Scores are computed in float64 like :meth:`apply`
        (softmax/sigmoid from torch instead of scipy: a score within one float64 ulp of the threshold
        may fall on the other side; exact for ``none`` and top-k). top-k keeps the lower class index
        on ties, as :meth:`apply`. Raises ConfigError like :meth:`check`.
        """
        import torch

        self.check(int(logits.shape[-1]))
        z = logits.double()
        if self.top_k is not None:
            order = torch.sort(-z, dim=-1, stable=True).indices[..., : self.top_k]
            return torch.zeros_like(z, dtype=torch.bool).scatter_(-1, order, True)
        if self.activation == "softmax":
            z = torch.softmax(z, dim=-1)
        elif self.activation == "sigmoid":
            z = torch.sigmoid(z)
        t = self.threshold if self.thresholds is None else torch.as_tensor(self.thresholds, device=z.device)
        return z >= t

    def evaluate(self, logits: Any, targets: Any) -> dict[str, float]:
        """All metrics under this rule (see :func:`mlhead.metrics.evaluate`)."""
        from .metrics import evaluate_rule

        return evaluate_rule(logits, targets, self)

    def tune(self, val_logits: Any, val_targets: Any, split: str | None = None) -> DecisionRule:
        """This rule with per-class thresholds tuned on (``val_logits``, ``val_targets``) by
        :func:`tune_thresholds`; named "per-class tuned on <split> (<activation>)" (``split``
        defaults to ``tuned_on`` or "val"). Raises ConfigError for a top-k rule."""
        self.check_tunable()
        return self.with_tuned(tune_thresholds(val_logits, val_targets, self.activation, self.threshold), split)

    def check_tunable(self) -> None:
        """Raise ConfigError for a top-k rule (it has no thresholds to tune)."""
        if self.top_k is not None:
            raise ConfigError("--top-k rules have no thresholds to tune; drop --tune-thresholds")

    def with_tuned(self, thresholds: Any, split: str | None = None) -> DecisionRule:
        """This rule with per-class ``thresholds`` (C floats, e.g. from :func:`tune_thresholds` or
        :func:`mlhead.blockeval.tune_blocks`) tuned on ``split`` (default ``tuned_on`` or "val").
        Raises ConfigError for a top-k rule or invalid thresholds."""
        self.check_tunable()
        return replace(self, thresholds=thresholds, tuned_on=split or self.tuned_on or "val")


# --------------------------------------------------------------------------------------------------
# threshold tuning


def _best_f1_threshold(yj: np.ndarray, sj: np.ndarray) -> float:
    """The F1-maximising threshold of one class (midpoint below the winning candidate)."""
    from sklearn.metrics import precision_recall_curve

    prec, rec, cand = precision_recall_curve(yj, sj)
    prec, rec = prec[: len(cand)], rec[: len(cand)]
    denom = prec + rec
    f1 = np.divide(2 * prec * rec, denom, out=np.zeros_like(denom), where=denom > 0)
    k = int(np.argmax(f1))
    t = float(cand[k])
    if k > 0:
        mid = 0.5 * (float(cand[k - 1]) + t)
        if cand[k - 1] < mid <= t:
            t = mid
    return t


def tune_thresholds(val_logits: Any, val_targets: Any, activation: str,
                    threshold: float | None = None) -> np.ndarray:
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
    none). Use them via :meth:`DecisionRule.tune` or :func:`tuned_rule`. Raises ValueError like
    :func:`mlhead.metrics.evaluate`.
    """
    _check_activation(activation)
    z = as_logits(val_logits, "val_logits")
    y = as_targets(val_targets, z.shape, "val_targets")
    glob = _check_threshold(DEFAULT_THRESHOLDS[activation] if threshold is None else threshold, activation)
    s = _scores(z, activation)
    out = np.full(z.shape[1], glob, dtype=np.float64)
    for j in np.flatnonzero(y.sum(axis=0) > 0):
        out[j] = _best_f1_threshold(y[:, j], s[:, j])
    return out


def tuned_rule(val_logits: Any, val_targets: Any, activation: str, threshold: float | None = None,
               split: str = "val") -> DecisionRule:
    """:func:`tune_thresholds` wrapped as a DecisionRule named "per-class tuned on <split> (<activation>)"."""
    return DecisionRule(activation=activation, threshold=threshold).tune(val_logits, val_targets, split)
