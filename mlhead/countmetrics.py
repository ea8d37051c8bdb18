"""Confusion-count metrics and column-wise average precision for many classes (issue #19).

scikit-learn computes multilabel F1/precision/recall through per-class validation and a sparse
multilabel confusion matrix, and average precision one class at a time (``average_precision_score`` in
a Python loop: ~5 ms per class, so 25 s for 5,000 classes on a loaded 2-core CPU). :mod:`mlhead.metrics`
uses the functions here instead when C > :data:`mlhead.metrics.MANY_CLASSES`; they compute the same
numbers (tested against scikit-learn to float rounding) from per-class counts and one sort per block of
columns:

* :func:`confusion_counts` -- per-class tp, fp, fn (int64, C) from 0/1 N x C arrays (numpy sums).
* :func:`prf_from_counts` -- micro/macro/weighted precision, recall, F1 with sklearn's
  ``zero_division=0`` and ``labels=`` semantics (fractions in [0, 1], not percent).
* :func:`example_f1` -- sklearn ``f1_score(average="samples", zero_division=0)`` (per row:
  :func:`example_f1_rows`).
* :func:`label_ranking_metrics` -- sklearn lrap, ranking loss and coverage error from each row's positives
  (per row: :func:`label_ranking_rows`, means: :func:`label_ranking_means`).
* :func:`average_precision_columns` -- sklearn ``average_precision_score`` of each column (ties grouped
  as sklearn's ``precision_recall_curve`` groups them: one threshold per distinct score).
* :func:`average_precision_from_counts` -- the same AP from each positive's score and the number of
  examples scoring at least as high (counted over row blocks with :func:`count_at_least`), for eval in
  bounded memory (:mod:`mlhead.blockeval`).
* :func:`best_f1_thresholds` -- :func:`mlhead.rules.tune_thresholds` from the same per-positive counts.
"""

from __future__ import annotations

import numpy as np

#: cells (rows x columns) sorted at once by :func:`average_precision_columns`
BLOCK_CELLS = 1 << 22


def confusion_counts(y: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(tp, fp, fn): int64 arrays of length C from targets ``y`` and predictions ``pred`` (N x C, 0/1)."""
    yb, pb = y.astype(bool, copy=False), pred.astype(bool, copy=False)
    tp = (yb & pb).sum(0, dtype=np.int64)
    return tp, pb.sum(0, dtype=np.int64) - tp, yb.sum(0, dtype=np.int64) - tp


def ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den, 0 where den == 0 (sklearn's zero_division=0)."""
    num, den = np.asarray(num, np.float64), np.asarray(den, np.float64)
    return np.divide(num, den, out=np.zeros_like(num), where=den > 0)


def prf_from_counts(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Precision, recall and F1 (fractions) as sklearn's ``precision_score``/``recall_score``/``f1_score``
    with ``zero_division=0``: ``micro_*`` over all classes; ``macro_*`` and ``weighted_f1`` over the class
    indices ``labels`` (NaN when empty), weighted by support (0 when the supports sum to 0)."""
    per_p, per_r, per_f = ratio(tp, tp + fp), ratio(tp, tp + fn), ratio(2 * tp, 2 * tp + fp + fn)
    T, P, F = tp.sum(), fp.sum(), fn.sum()
    out = {"micro_precision": float(ratio(T, T + P)), "micro_recall": float(ratio(T, T + F)),
           "micro_f1": float(ratio(2 * T, 2 * T + P + F))}
    labels = np.asarray(labels, np.int64)
    if not len(labels):
        return {**out, "macro_precision": np.nan, "macro_recall": np.nan, "macro_f1": np.nan, "weighted_f1": np.nan}
    support = (tp + fn)[labels].astype(np.float64)
    weighted = float((per_f[labels] * support).sum() / support.sum()) if support.sum() > 0 else 0.0
    return {**out, "macro_precision": float(per_p[labels].mean()), "macro_recall": float(per_r[labels].mean()),
            "macro_f1": float(per_f[labels].mean()), "weighted_f1": weighted}


def example_f1_rows(y: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Per-row F1 2 tp / (2 tp + fp + fn), float64 (N,), 0 for a row with no true and no predicted label
    (sklearn's ``zero_division=0``). ``y``, ``pred``: 0/1 N x C."""
    yb, pb = y.astype(bool, copy=False), pred.astype(bool, copy=False)
    tp = (yb & pb).sum(1, dtype=np.int64)
    den = yb.sum(1, dtype=np.int64) + pb.sum(1, dtype=np.int64)
    return ratio(2 * tp, den)


def example_f1(y: np.ndarray, pred: np.ndarray) -> float:
    """Mean over rows of :func:`example_f1_rows`: sklearn ``f1_score(average="samples", zero_division=0)``,
    as a fraction (0 for no rows)."""
    rows = example_f1_rows(y, pred)
    return float(rows.mean()) if len(rows) else 0.0


def _ap_block(y: np.ndarray, s: np.ndarray) -> np.ndarray:
    """AP of every column of one block (N x m; every column with a positive)."""
    n = s.shape[0]
    order = np.argsort(-s, axis=0, kind="stable")
    ss, ys = np.take_along_axis(s, order, 0), np.take_along_axis(y, order, 0).astype(np.float64)
    tp = np.cumsum(ys, axis=0)
    last = np.ones(ss.shape, bool)  # the last row of each run of tied scores: one threshold each
    last[:-1] = ss[:-1] != ss[1:]
    rows = np.arange(n)[:, None]
    ends = np.minimum.accumulate(np.where(last, rows, n)[::-1], axis=0)[::-1]  # each row's threshold row
    precision = np.take_along_axis(tp, ends, 0) / (ends + 1)
    return (ys * precision).sum(0) / ys.sum(0)


def average_precision_columns(y: np.ndarray, s: np.ndarray, cols) -> np.ndarray:
    """sklearn ``average_precision_score(y[:, j], s[:, j])`` for each column ``j`` in ``cols`` (each must
    have a positive), as fractions: AP = sum over thresholds (distinct scores, high to low) of
    (R_k - R_{k-1}) P_k. Columns are sorted in blocks of :data:`BLOCK_CELLS` cells."""
    cols = np.asarray(cols, np.int64)
    out = np.empty(len(cols))
    step = max(1, BLOCK_CELLS // max(y.shape[0], 1))
    for a in range(0, len(cols), step):
        c = cols[a:a + step]
        out[a:a + step] = _ap_block(y[:, c], np.asarray(s[:, c], np.float64))
    return out


def label_ranking_rows(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-row (lrap, ranking loss, coverage), each float64 (N,), of targets ``y`` (N x C, 0/1) and
    scores ``s``, from each row's positives only (P x C comparisons per row instead of a rank of all C
    labels): for a positive j, rank_j = #{l: s_l >= s_j} (ties take the worst rank) and
    L_j = #{positive l: s_l >= s_j}; lrap = mean_j L_j / rank_j (1 for a row with no or only
    positives), ranking loss = sum_j (rank_j - L_j) / (P (C - P)) (0 for such rows), coverage =
    max_j rank_j (0 for a row without positives). Their means are :func:`label_ranking_metrics`."""
    n, c = y.shape
    lrap, loss, cover = np.ones(n), np.zeros(n), np.zeros(n)
    for i in range(n):
        pos = np.flatnonzero(y[i])
        if not len(pos):
            continue
        row = np.asarray(s[i], np.float64)
        at_least = row[None, :] >= row[pos][:, None]  # P x C
        rank = at_least.sum(1)
        cover[i] = rank.max()
        if len(pos) == c:
            continue
        above = at_least[:, pos].sum(1)
        lrap[i] = (above / rank).mean()
        loss[i] = (rank - above).sum() / (len(pos) * (c - len(pos)))
    return lrap, loss, cover


def label_ranking_means(lrap: np.ndarray, loss: np.ndarray, cover: np.ndarray) -> dict[str, float]:
    """The dict of :func:`label_ranking_metrics` from the per-row arrays of :func:`label_ranking_rows`
    (all rows of the evaluated data; 0 for no rows)."""
    n = len(lrap)
    return {"lrap": float(lrap.mean()) if n else 0.0, "ranking_loss": float(loss.mean()) if n else 0.0,
            "coverage_error": float(cover.mean()) if n else 0.0}


def label_ranking_metrics(y: np.ndarray, s: np.ndarray) -> dict[str, float]:
    """sklearn ``label_ranking_average_precision_score``, ``label_ranking_loss`` and ``coverage_error`` of
    targets ``y`` (N x C, 0/1) and scores ``s``: the means over rows of :func:`label_ranking_rows`
    (see there for the per-row definitions). Fractions, except coverage (a count)."""
    return label_ranking_means(*label_ranking_rows(y, s))


def lower_bound(sorted_cols: np.ndarray, cols: np.ndarray, t: np.ndarray) -> np.ndarray:
    """For each query q, the first index i with ``sorted_cols[cols[q], i] >= t[q]`` (b when none): int64 (Q,).
    ``sorted_cols``: m x b, every row sorted ascending (one class's scores of b examples); ``cols``: int
    (Q,) row indices into it; ``t``: float (Q,). One vectorised binary search over all queries
    (bit_length(b) gathers of Q values), so memory is O(Q) beyond the input."""
    b = sorted_cols.shape[1]
    lo, hi = np.zeros(len(t), np.int64), np.full(len(t), b, np.int64)
    if not b or not len(t):
        return hi
    for _ in range(b.bit_length()):
        mid = (lo + hi) // 2
        less = sorted_cols[cols, np.minimum(mid, b - 1)] < t
        open_ = lo < hi
        lo = np.where(open_ & less, mid + 1, lo)
        hi = np.where(open_ & ~less, mid, hi)
    return lo


def count_at_least(sorted_cols: np.ndarray, cols: np.ndarray, t: np.ndarray) -> np.ndarray:
    """For each query q, #{i: sorted_cols[cols[q], i] >= t[q]}: int64 (Q,) (see :func:`lower_bound`)."""
    return sorted_cols.shape[1] - lower_bound(sorted_cols, cols, t)


def _ranked_positives(cls: np.ndarray, score: np.ndarray, at_least: np.ndarray) \
        -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One entry per positive (class ``cls``, ``score``, ``at_least`` examples scoring >= it), sorted by
    class then score ascending: ``(order, c, s, tp, precision)`` -- the sort order, the sorted classes and
    scores, tp = #positives of the same class scoring >= it (ties included; float64) and precision =
    tp / at_least (the precision of the rule "score >= its own score")."""
    cls = np.asarray(cls, np.int64)
    order = np.lexsort((score, cls))
    c, s = cls[order], np.asarray(score, np.float64)[order]
    k = len(c)
    new = np.ones(k, bool)
    new[1:] = (c[1:] != c[:-1]) | (s[1:] != s[:-1])  # first entry of each (class, score) tie group
    first = np.maximum.accumulate(np.where(new, np.arange(k), 0))
    tp = (np.searchsorted(c, c, side="right") - first).astype(np.float64)
    return order, c, s, tp, tp / np.asarray(at_least, np.float64)[order]


def best_f1_thresholds(cls: np.ndarray, score: np.ndarray, at_least: np.ndarray, below: np.ndarray,
                       n_classes: int, fallback: float) -> np.ndarray:
    """:func:`mlhead.rules.tune_thresholds` of every class from its positives only: float64 (C,).

    One entry per positive (example, class): ``cls``, its ``score``, ``at_least`` (#examples scoring >= it
    in that class) and ``below`` (the highest score of that class below it, -inf if none). The F1 of the
    rule "score >= t" is highest at some positive's score (a candidate holding negatives only has the
    recall of the next higher candidate and a lower precision), so only positives' scores are candidates:
    F1 = 2 P R / (P + R) with P = tp / at_least, R = tp / positives (the arithmetic of
    ``tune_thresholds``), ties to the lowest score; the threshold is the midpoint between the winner and
    ``below`` (the winner itself when nothing is below). Classes without positives get ``fallback``."""
    order, c, s, tp, prec = _ranked_positives(cls, score, at_least)
    rec = tp / np.bincount(c, minlength=n_classes)[c]
    denom = prec + rec
    f1 = np.divide(2 * prec * rec, denom, out=np.zeros_like(denom), where=denom > 0)
    win = np.lexsort((s, -f1, c))  # per class: highest F1 first, then the lowest score
    win = win[np.r_[True, c[win][1:] != c[win][:-1]]]
    t, prev = s[win], np.asarray(below, np.float64)[order][win]
    mid = 0.5 * (prev + t)
    out = np.full(n_classes, float(fallback))
    out[c[win]] = np.where(np.isfinite(prev) & (prev < mid) & (mid <= t), mid, t)
    return out


def average_precision_from_counts(cls: np.ndarray, score: np.ndarray, at_least: np.ndarray,
                                  n_classes: int) -> np.ndarray:
    """sklearn ``average_precision_score`` of every class from its positives only, as fractions: float64
    (C,), NaN for a class without positives.

    One entry per positive (example i, class j): ``cls`` = j, ``score`` = the example's score for j,
    ``at_least`` = #examples whose score for j is >= that score (all examples, positive or not). With
    L = #positives of j scoring >= it (ties included), AP_j = mean over j's positives of L / at_least:
    sklearn's sum over thresholds (one per distinct score) of (R_k - R_{k-1}) P_k, the same value
    :func:`average_precision_columns` computes from whole columns. This form needs the positives' scores
    and counts only, so it can be accumulated over row blocks (:mod:`mlhead.blockeval`)."""
    _, c, _, _, precision = _ranked_positives(cls, score, at_least)
    n_pos = np.bincount(c, minlength=n_classes)
    sums = np.bincount(c, weights=precision, minlength=n_classes)
    return np.divide(sums, n_pos, out=np.full(n_classes, np.nan), where=n_pos > 0)
