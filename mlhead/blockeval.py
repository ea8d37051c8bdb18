"""Evaluation in bounded memory at many classes: row blocks of logits, never N x C (issue #19).

Above :data:`mlhead.metrics.MANY_CLASSES` classes, ``mlhead eval`` (:func:`mlhead.runs.evaluate_run`)
no longer materialises the split's N x C logits, targets and decisions. The head runs over the split in
row blocks read from the HDF5 cache (:meth:`mlhead.cache.Cache.iter_embeddings`), each block of at most
:data:`BLOCK_CELLS` scores (4,194,304: 32 MiB as float64, the dtype the metrics use; 16 MiB as the head's
float32 output; 209 rows at 20,000 classes), and the metrics are accumulated block by block:

* pass 1 (one forward pass over the row blocks): the one :class:`~mlhead.rules.DecisionRule` applied to
  each block (a block holds whole rows, so softmax and top-k see every class of a row); per-class tp, fp,
  fn and predicted counts (:func:`mlhead.countmetrics.confusion_counts`); per-row exact match, example
  F1 (:func:`~mlhead.countmetrics.example_f1_rows`), lrap / ranking loss / coverage
  (:func:`~mlhead.countmetrics.label_ranking_rows`); the per-row top-k for P@k/R@k/nDCG@k/PSP@k
  (:func:`mlhead.ranking.topk_indices`); and the score of every positive (example, class) pair.
* pass 2 (a second forward pass, same blocks, bit-identical logits): per positive, the number of
  examples scoring at least as high in its class (each block's columns sorted once,
  :func:`~mlhead.countmetrics.count_at_least`). Per-class average precision (``map``, per-class ``ap``)
  then follows from those counts alone (:func:`~mlhead.countmetrics.average_precision_from_counts`);
  ``map_binarized`` needs no second pass (the counts of 0/1 scores are the predicted counts).

So AP needs no whole column: instead of a pass over column blocks (N x column-block logits, recomputed
by the head for every column block, or the N x H hidden activations kept), the head runs twice over row
blocks. Peak memory is O(row block x C + nnz + N) -- a few copies of one block, the positives of the
split (CSR labels, their scores and counts) and a few floats per row -- never N x C. Values equal the
in-memory :func:`mlhead.metrics.evaluate_rule` / :func:`~mlhead.metrics.per_class` on the same logits
(tested to 1e-9 relative; only the order of float64 sums differs).

:func:`tune_blocks` tunes ``--tune-thresholds`` per-class thresholds the same way (two passes over the
val split's row blocks; :func:`mlhead.countmetrics.best_f1_thresholds`), equal to
:meth:`mlhead.rules.DecisionRule.tune` on the whole val logits.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from . import countmetrics as CM
from .errors import NumericalError
from .metrics import class_names_of, class_rows, ranking_percent
from .rules import DecisionRule, as_logits, order_scores

#: scores per row block (rows x C): 2**22 = 4,194,304, i.e. 32 MiB of float64 logits (16 MiB float32). The
#: metrics hold a few same-size float64 temporaries per block (logits, rule scores, order scores and the
#: softmax normaliser's sort): measured numpy peak at 20,000 classes ~300 MiB for softmax rules, ~140 MiB
#: for sigmoid, whatever N (tracemalloc; the head's own float32 block comes on top)
BLOCK_CELLS = 1 << 22

#: a function returning a fresh iterator over the split's logits in row blocks (b x C, in row order);
#: called once per pass, and must give the same values both times
BlockSource = Callable[[], Iterable[Any]]


def block_rows(n_classes: int) -> int:
    """Rows per block so that a block holds at most :data:`BLOCK_CELLS` scores (at least 1 row)."""
    return max(1, BLOCK_CELLS // max(int(n_classes), 1))


@dataclass
class _Totals:
    """What pass 1 accumulates: per-class counts, per-row values, per-positive scores, top-k."""

    n_classes: int
    tp: np.ndarray = field(init=False)
    fp: np.ndarray = field(init=False)
    fn: np.ndarray = field(init=False)
    exact: int = 0
    no_prediction: int = 0
    parts: dict[str, list[np.ndarray]] = field(default_factory=lambda: {k: [] for k in _PARTS})

    def __post_init__(self) -> None:
        self.tp, self.fp, self.fn = (np.zeros(self.n_classes, np.int64) for _ in range(3))

    def joined(self, key: str) -> np.ndarray:
        parts = self.parts[key]
        return np.concatenate(parts) if parts else np.zeros(0)


_PARTS = ("example_f1", "lrap", "ranking_loss", "coverage", "pos_score", "pos_pred", "topk")


def _blocks(source: BlockSource, labels: sp.csr_matrix) -> Iterator[tuple[np.ndarray, np.ndarray, sp.csr_matrix]]:
    """(float32 logits block as given, float64 validated logits, the block's CSR labels), checking that
    the blocks cover exactly the rows and classes of ``labels``."""
    n, c = labels.shape
    start = 0
    for block in source():
        raw = block.detach().cpu().numpy() if isinstance(block, torch.Tensor) else np.asarray(block)
        stop = start + raw.shape[0]
        z = as_logits(raw, f"logits of rows {start}..{stop - 1}")
        if z.shape[1] != c or stop > n:
            raise ValueError(f"logits block of shape {z.shape} at row {start} does not fit targets of shape {(n, c)}")
        yield raw, z, labels[start:stop]
        start = stop
    if not start:
        as_logits(np.zeros((0, c)))  # no rows at all: the in-memory error (N >= 1)
    if start != n:
        raise ValueError(f"logits have {start} rows but targets {n}")


def _positives(y: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
    """(row, class) of every positive of a CSR block, in CSR order."""
    return np.repeat(np.arange(y.shape[0]), np.diff(y.indptr)), y.indices


def _first_pass(source: BlockSource, labels: sp.csr_matrix, rule: DecisionRule, kmax: int) -> _Totals:
    from .ranking import topk_indices

    tot = _Totals(labels.shape[1])
    for raw, z, yb in _blocks(source, labels):
        y, pred = yb.toarray(), rule.apply_checked(z)
        tp, fp, fn = CM.confusion_counts(y, pred)
        tot.tp += tp
        tot.fp += fp
        tot.fn += fn
        tot.exact += int((y == pred).all(axis=1).sum())
        tot.no_prediction += int((pred.sum(axis=1) == 0).sum())
        rows, cols = _positives(yb)
        new = dict(zip(("lrap", "ranking_loss", "coverage"), CM.label_ranking_rows(y, z)),
                   example_f1=CM.example_f1_rows(y, pred), pos_score=order_scores(z, rule.activation)[rows, cols],
                   pos_pred=pred[rows, cols])
        if kmax:
            new["topk"] = topk_indices(raw, kmax)
        for key, value in new.items():
            tot.parts[key].append(value)
    return tot


def _count_pass(source: BlockSource, labels: sp.csr_matrix, transform: Callable[[np.ndarray], np.ndarray],
                pos_score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per positive of ``labels`` (CSR order, score ``pos_score``): #examples whose ``transform``-ed score
    in its class is >= its own, and the highest such score below its own (-inf if none)."""
    at_least = np.zeros(labels.nnz, np.int64)
    below = np.full(labels.nnz, -np.inf)
    for _, z, _ in _blocks(source, labels):
        cols = np.ascontiguousarray(transform(z).T)  # C x b
        cols.sort(axis=1)
        lo = CM.lower_bound(cols, labels.indices, pos_score)
        at_least += cols.shape[1] - lo
        np.maximum(below, np.where(lo > 0, cols[labels.indices, np.maximum(lo - 1, 0)], -np.inf), out=below)
    return at_least, below


def _checked_counts(at_least: np.ndarray) -> np.ndarray:
    if (at_least < 1).any():  # a positive always counts itself: the source gave other values the second time
        raise NumericalError("the logits differed between the two passes over the row blocks (a block source "
                             "must give the same values each time it is called)")
    return at_least


def _mean_present(ap: np.ndarray, present: np.ndarray) -> float:
    return float(100.0 * np.mean(ap[present])) if present.any() else float("nan")


def _values(tot: _Totals, labels: sp.csr_matrix, ap: np.ndarray, ap_binarized: np.ndarray) -> dict[str, float]:
    """The dict of :func:`mlhead.metrics.evaluate_rule` from the accumulated totals."""
    n, c = labels.shape
    support = tot.tp + tot.fn
    present = support > 0
    conf = CM.prf_from_counts(tot.tp, tot.fp, tot.fn, np.flatnonzero(present))
    ranking = CM.label_ranking_means(tot.joined("lrap"), tot.joined("ranking_loss"), tot.joined("coverage"))
    return {
        **{k: 100.0 * conf[k] for k in ("weighted_f1", "micro_f1", "macro_f1", "macro_precision", "macro_recall",
                                        "micro_precision", "micro_recall")},
        "map": _mean_present(ap, present),
        "map_binarized": _mean_present(ap_binarized, present),
        "subset_accuracy": 100.0 * tot.exact / n,
        "example_f1": 100.0 * float(tot.joined("example_f1").mean()),
        **ranking_percent(ranking),
        "hamming_loss": 100.0 * float(tot.fp.sum() + tot.fn.sum()) / (n * c),
        "n_examples": float(n),
        "n_classes": float(c),
        "n_classes_without_positives": float(c - present.sum()),
        "n_examples_without_positives": float((np.diff(labels.indptr) == 0).sum()),
        "n_examples_without_predictions": float(tot.no_prediction),
        "label_cardinality": float(labels.nnz / n),
        "predicted_cardinality": float((tot.tp.sum() + tot.fp.sum()) / n),
    }


def evaluate_blocks(source: BlockSource, labels: Any, rule: DecisionRule, class_names: Sequence[str] | None = None,
                    kmax: int = 0) -> tuple[dict[str, float], list[dict[str, Any]], np.ndarray | None]:
    """:func:`mlhead.metrics.evaluate_rule` and :func:`~mlhead.metrics.per_class` from row blocks of logits.

    Args:
        source: a function returning a fresh iterable of logits row blocks (numpy or torch, b x C, any real
            dtype, in row order, covering the N rows); called twice (see the module docstring) and must
            yield the same values both times. E.g. :func:`head_blocks`.
        labels: the N x C targets: a ``scipy.sparse`` matrix or a dense 0/1 array (converted to CSR).
        rule: the decision rule, applied block by block.
        class_names: C names for the per-class rows ("class_<j>" when None).
        kmax: also return each row's ``kmax`` top-scored classes (0: none).

    Returns:
        (metrics dict: the keys, units and values of :func:`~mlhead.metrics.evaluate_rule`; per-class rows as
        :func:`~mlhead.metrics.per_class`; int64 N x kmax top-k indices, best first, or None).
        Memory: O(block x C + nnz(labels) + N), blocks of the caller's size (:func:`block_rows`).

    Raises:
        ValueError (ConfigError, NumericalError): as :func:`~mlhead.metrics.evaluate_rule` -- a rule that
        does not fit C, NaN/inf logits (naming the block's rows), shapes that disagree, no rows, targets
        not 0/1; NumericalError when ``source`` gave other logits on the second pass.
    """
    if not isinstance(rule, DecisionRule):
        raise ValueError(f"rule must be a DecisionRule, got {type(rule).__name__}")  # noqa: TRY004
    labels = _as_csr(labels)
    rule.check(labels.shape[1])
    names = class_names_of(class_names, labels.shape[1])
    tot = _first_pass(source, labels, rule, kmax)
    score = tot.joined("pos_score")
    at_least = _checked_counts(_count_pass(source, labels, lambda z: order_scores(z, rule.activation), score)[0])
    n, c = labels.shape
    ap = CM.average_precision_from_counts(labels.indices, score, at_least, c)
    pos_pred = tot.joined("pos_pred")
    n_pred = tot.tp + tot.fp
    ap_binarized = CM.average_precision_from_counts(labels.indices, pos_pred,
                                                    np.where(pos_pred > 0, n_pred[labels.indices], n), c)
    tp, fp, fn = tot.tp, tot.fp, tot.fn
    rows = class_rows(names, tp + fn, n_pred, CM.ratio(tp, tp + fp), CM.ratio(tp, tp + fn),
                      CM.ratio(2 * tp, 2 * tp + fp + fn), ap)
    topk = tot.joined("topk").astype(np.int64).reshape(-1, kmax) if kmax else None
    return _values(tot, labels, ap, ap_binarized), rows, topk


def tune_blocks(source: BlockSource, labels: Any, rule: DecisionRule, split: str | None = None) -> DecisionRule:
    """``rule.tune(val_logits, val_targets, split)`` (:func:`mlhead.rules.tune_thresholds`: per-class
    thresholds maximising each class's F1, midpoint below the winner, the global threshold for classes
    without positives) from row blocks of the validation logits, never N x C: pass 1 collects every
    positive's activation score, pass 2 counts per positive the examples scoring at least as high and
    finds the next lower score (:func:`mlhead.countmetrics.best_f1_thresholds`). ``source``, ``labels``
    as :func:`evaluate_blocks`. Returns the tuned :class:`DecisionRule` (the same thresholds as
    :meth:`DecisionRule.tune`, tested). Raises ConfigError for a top-k rule, and the errors of
    :func:`evaluate_blocks`."""
    from .rules import scores

    rule.check_tunable()
    labels = _as_csr(labels)
    score = np.concatenate([scores(z, rule.activation)[_positives(yb)] for _, z, yb in _blocks(source, labels)])
    at_least, below = _count_pass(source, labels, lambda z: scores(z, rule.activation), score)
    th = CM.best_f1_thresholds(labels.indices, score, _checked_counts(at_least), below, labels.shape[1], rule.threshold)
    return rule.with_tuned(th, split)


def _as_csr(labels: Any) -> sp.csr_matrix:
    """Targets as a CSR matrix with sorted indices and 0/1 values (ValueError otherwise)."""
    m = sp.csr_matrix(labels, copy=True) if not sp.issparse(labels) else labels.tocsr(copy=True)
    m.sum_duplicates()
    m.eliminate_zeros()
    if m.nnz and not np.all(m.data == 1):
        raise ValueError("targets must contain only 0 and 1 (multi-hot)")
    m.sort_indices()
    return m


def head_blocks(head: torch.nn.Module, cache, split: str, rows: int | None = None,
                verify: bool = True) -> BlockSource:
    """A :data:`BlockSource` of ``head``'s float32 logits over ``cache``'s ``split``, ``rows`` rows at a
    time (default :func:`block_rows` of the head's C), the embeddings read block by block from the HDF5
    file (:meth:`mlhead.cache.Cache.iter_embeddings`; ``verify``: the first pass checks the stored
    checksum, CacheError if it changed). The head's input normalization is part of its forward."""
    rows = rows or block_rows(len(cache.classes))
    calls = []

    def source() -> Iterator[torch.Tensor]:
        check = verify and not calls  # the second pass reads the bytes the first one verified
        calls.append(1)
        for block in cache.iter_embeddings(split, rows, verify=check):
            with torch.no_grad():  # not around the yield: grad mode would leak into the caller
                z = head(torch.from_numpy(block).to(torch.float32))
            yield z

    return source
