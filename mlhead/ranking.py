"""Ranking metrics from per-row top-k label indices: P@k, R@k, nDCG@k and propensity-scored PSP@k.

The extreme-classification metrics (LibMultiLabel ``linear/metrics.py``, pyxclib ``xc_metrics.py``),
computed the way those libraries do it: from the k highest-scoring labels of each row, never from a
dense N x C prediction matrix. The score matrix is read in row blocks (``torch.topk`` per block, so
memory is bounded by ``chunk_rows`` x C whatever N is; a generator of blocks works too), and the true
labels may be dense multi-hot or CSR (a ``scipy.sparse`` matrix or raw ``(indptr, indices)`` arrays).

Public API:

* :func:`topk_indices` -- int64 N x k, the k highest-scoring classes of each row, best first.
* :func:`ranking_metrics` -- dict ``p@k``, ``r@k``, ``ndcg@k`` (and ``psp@k`` given train label
  counts) for every k in ``ks``, in percent.
* :func:`inverse_propensity` -- 1/p_l of Jain, Prabhu and Varma (KDD 2016).
* :func:`label_counts` -- N_l, the number of rows carrying each label (dense or CSR labels).

The conventions below (also the :data:`POLICY` string) are the single source for ties, empty rows and
the PSP normalisation.

POLICY
------
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import torch

from .errors import ConfigError, NumericalError

DEFAULT_KS = (1, 3, 5)
#: Propensity model constants of Jain et al. 2016 for "other" datasets (pyxclib: 0.55 / 1.5).
PROPENSITY_A = 0.55
PROPENSITY_B = 1.5
#: Default block size of :func:`topk_indices`: rows x C at most this many scores (64 MiB in float32).
BLOCK_ELEMENTS = 1 << 24

POLICY = """\
Order and ties. Row i ranks its C classes by score, highest first; among equal scores the lower
class index ranks first (the order of a stable descending sort, and the tie rule of
mlhead.metrics.decide(top_k=K)). torch.topk alone does not promise this order (it returns tied
entries in any order), so each block's top-k is repaired: classes strictly above the k-th score are
kept, the remaining slots go to the lowest-indexed classes equal to it, then the k are sorted by
(score descending, index ascending). NaN scores are refused (NumericalError); +-inf rank as numbers.

Metrics (per row i with true label set Y_i, n_i = |Y_i|, top-k list r_1..r_k; averaged over all N
rows, in percent 0-100):
  p@k    = |Y_i & {r_1..r_k}| / k                     (always divided by k, also when n_i < k)
  r@k    = |Y_i & {r_1..r_k}| / n_i                   (a row with n_i = 0 counts as 0)
  ndcg@k = DCG@k / IDCG@k, DCG@k = sum_j [r_j in Y_i] / log2(j + 1),
           IDCG@k = sum_{j <= min(k, n_i)} 1 / log2(j + 1)  (a row with n_i = 0 counts as 0)
Empty rows count as 0 and stay in the denominator N, as in LibMultiLabel (RecallAtK, NDCGAtK);
p@k, r@k and ndcg@k equal LibMultiLabel's P@k, R@k and NDCG@k on the same top-k.

PSP@k (Jain, Prabhu, Varma, KDD 2016, Eq. for propensity and PSP@k). Propensity of label l:
p_l = 1 / (1 + C e^{-A log(N_l + B)}), C = (log N - 1)(B + 1)^A, natural log, N_l = rows of the
train split carrying l, N = rows of the train split, A = 0.55, B = 1.5 unless given. Unnormalised
PSP@k_i = (1/k) sum_j [r_j in Y_i] / p_{r_j}. Reported psp@k is normalised as pyxclib's
psprecision does: sum over rows of PSP@k_i divided by the sum over rows of the best achievable
PSP@k_i (the ranking that puts row i's true labels first, in decreasing 1/p_l order), times 100. So
100 is the best possible; it is a ratio of totals, not a mean of per-row ratios; rows with no true
label add 0 to both sums; with no true label in any row it is NaN (0/0).
"""

__doc__ = (__doc__ or "") + POLICY


# -------------------------------------------------------------------------------------- checks


def _check_k(k: Any, n_classes: int | None, name: str = "k") -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise ConfigError(f"{name} must be a positive integer, got {k!r}")
    if k < 1 or (n_classes is not None and k > n_classes):
        bound = f"1..{n_classes} (the number of classes)" if n_classes is not None else ">= 1"
        raise ConfigError(f"{name} = {k} out of range; valid: {bound}")
    return int(k)


def check_ks(ks: Any, n_classes: int | None) -> tuple[int, ...]:
    """``ks`` (an int or a sequence of ints) as a sorted tuple of distinct cut-offs, each in 1..``n_classes``;
    ConfigError naming the bad value otherwise."""
    if isinstance(ks, (int, np.integer)) and not isinstance(ks, bool):
        ks = (ks,)
    try:
        ks = tuple(ks)
    except TypeError:
        raise ConfigError(f"ks must be a sequence of positive integers, got {ks!r}") from None
    if not ks:
        raise ConfigError("ks is empty; give at least one k (default 1, 3, 5)")
    return tuple(sorted({_check_k(k, n_classes, "k in ks") for k in ks}))


def _to_torch(block: Any) -> torch.Tensor:
    if not isinstance(block, torch.Tensor):
        block = torch.from_numpy(np.ascontiguousarray(np.asarray(block)))
    if block.dtype == torch.bool:
        block = block.to(torch.uint8)
    if block.ndim != 2:
        raise ConfigError(f"scores must be 2-D (N examples x C classes), got a block of shape {tuple(block.shape)}")
    return block


# -------------------------------------------------------------------------------------- top-k


def _iter_blocks(scores: Any, chunk_rows: int | None) -> Iterator[torch.Tensor]:
    """Row blocks of ``scores`` (array-like with ``.shape`` and row slicing, or an iterable of blocks)."""
    shape = getattr(scores, "shape", None)
    if shape is None:
        if not isinstance(scores, Iterable):
            raise ConfigError(f"scores must be an N x C array or an iterable of row blocks, "
                              f"got {type(scores).__name__}")
        for block in scores:
            yield _to_torch(block)
        return
    if len(shape) != 2:
        raise ConfigError(f"scores must be 2-D (N examples x C classes), got shape {tuple(shape)}")
    n, c = int(shape[0]), int(shape[1])
    rows = max(1, BLOCK_ELEMENTS // max(c, 1)) if chunk_rows is None else _check_k(chunk_rows, None, "chunk_rows")
    for start in range(0, n, rows):
        yield _to_torch(scores[start:start + rows])


def _block_topk(s: torch.Tensor, k: int) -> torch.Tensor:
    """Top-k class indices of one block (b x C), best first, ties to the lower class index."""
    vals, idx = torch.topk(s, min(k + 1, s.shape[1]), dim=1)
    if vals.is_floating_point() and torch.isnan(vals[:, 0]).any():  # topk ranks NaN above everything
        raise NumericalError("scores contain NaN; a diverged model cannot be ranked")
    if vals.shape[1] > k:  # the (k+1)-th equal to the k-th: topk chose among tied classes at the cut
        ragged = torch.nonzero(vals[:, k] == vals[:, k - 1]).flatten()
        idx = idx[:, :k].clone()
        if ragged.numel():
            sub, kth = s[ragged], vals[ragged, k - 1:k]
            above, equal = sub > kth, sub == kth
            need = k - above.sum(1, keepdim=True)
            keep = above | (equal & (equal.cumsum(1) <= need))
            idx[ragged] = torch.nonzero(keep)[:, 1].reshape(-1, k)  # row-major: ascending index per row
    idx, _ = torch.sort(idx, dim=1)
    order = torch.sort(torch.gather(s, 1, idx), dim=1, descending=True, stable=True).indices
    return torch.gather(idx, 1, order)


def topk_indices(scores: Any, k: int, chunk_rows: int | None = None) -> np.ndarray:
    """The ``k`` highest-scoring classes of every row, best first, computed block by block.

    Parameters
    ----------
    scores : array-like of shape (n_samples, n_classes), or an iterable of such row blocks
        Any real scores (logits, probabilities, decision values); numpy, torch (any device), an
        ``h5py`` dataset or ``np.memmap`` (read ``chunk_rows`` rows at a time), or a generator
        yielding blocks (e.g. a model's predictions per batch), so the full matrix never has to exist.
    k : int
        Number of classes kept per row, ``1 <= k <= n_classes``.
    chunk_rows : int, optional
        Rows per ``torch.topk`` call. Default: as many as fit ``BLOCK_ELEMENTS`` (2**24) scores.
        Peak extra memory is a few copies of one block (chunk_rows x n_classes), never N x C.

    Returns
    -------
    ndarray of shape (n_samples, k), dtype int64
        Class indices, highest score first; ties go to the lower class index (see :data:`POLICY`).

    Raises
    ------
    ConfigError
        ``k`` or ``chunk_rows`` not a positive integer, ``k > n_classes``, non-2-D scores, or blocks
        of different widths.
    NumericalError
        A score is NaN.

    Examples
    --------
    >>> topk_indices(np.array([[0.1, 0.9, 0.9, 0.3], [2.0, -1.0, 0.0, 2.0]]), 3)
    array([[1, 2, 3],
           [0, 3, 2]])
    """
    return _topk_and_width(scores, k, chunk_rows)[0]


def _topk_and_width(scores: Any, k: int, chunk_rows: int | None) -> tuple[np.ndarray, int | None]:
    """:func:`topk_indices` and the number of classes the blocks had (None when there was no block)."""
    k = _check_k(k, None)
    out, width = [], None
    for block in _iter_blocks(scores, chunk_rows):
        width = block.shape[1] if width is None else width
        if block.shape[1] != width:
            raise ConfigError(f"score blocks have different widths ({width} and {block.shape[1]} classes)")
        _check_k(k, width)
        if block.shape[0]:
            out.append(_block_topk(block, k).cpu().numpy())
    if not out:
        return np.zeros((0, k), dtype=np.int64), width
    return np.concatenate(out).astype(np.int64, copy=False), width


# ------------------------------------------------------------------------------------- targets


class _Labels:
    """True label sets of N rows: CSR ``indptr``/``indices`` (sorted, unique), and the dense
    multi-hot matrix when that is how they were given (hits are then gathered from it directly)."""

    def __init__(self, indptr: np.ndarray, indices: np.ndarray, n_classes: int | None, dense=None):
        self.indptr, self.indices, self.n_classes, self.dense = indptr, indices, n_classes, dense
        self.n_rows = len(indptr) - 1
        self.n_pos = np.diff(indptr)

    def rows(self) -> np.ndarray:
        """Row index of every entry of ``indices``."""
        return np.repeat(np.arange(self.n_rows), self.n_pos)

    def hits(self, topk: np.ndarray) -> np.ndarray:
        """bool N x K: ``topk[i, j]`` is a true label of row i."""
        if self.dense is not None:
            return np.take_along_axis(self.dense, topk, axis=1) != 0
        width = max(int(self.n_classes or 0), int(topk.max(initial=-1)) + 1, 1)
        truth = self.rows() * width + self.indices  # sorted: rows ascending, indices sorted within rows
        keys = np.arange(self.n_rows)[:, None] * width + topk
        pos = np.minimum(np.searchsorted(truth, keys), max(len(truth) - 1, 0))
        return truth[pos] == keys if len(truth) else np.zeros(topk.shape, dtype=bool)


def _dense_labels(y: Any, n_classes: int | None) -> _Labels:
    if isinstance(y, torch.Tensor):
        y = y.detach().cpu().numpy()
    y = np.asarray(y)
    if y.ndim != 2 or not (np.issubdtype(y.dtype, np.number) or y.dtype == bool):
        raise ConfigError(f"targets must be a numeric 2-D multi-hot array, got shape {y.shape} dtype {y.dtype}")
    if n_classes is not None and y.shape[1] != n_classes:
        raise ConfigError(f"targets have {y.shape[1]} classes, scores {n_classes}")
    bad = np.argwhere((y != 0) & (y != 1))
    if len(bad):
        raise ConfigError(f"targets must be 0/1 (multi-hot); found {y[tuple(bad[0])]!r} at row {bad[0][0]}, "
                          f"column {bad[0][1]}")
    rows, cols = np.nonzero(y)
    indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=y.shape[0]))])
    return _Labels(indptr, cols.astype(np.int64), y.shape[1], dense=y)


def _csr_labels(indptr: Any, indices: Any, n_classes: int | None) -> _Labels:
    indptr, indices = np.asarray(indptr, dtype=np.int64), np.asarray(indices, dtype=np.int64)
    if indptr.ndim != 1 or indices.ndim != 1 or len(indptr) < 1 or indptr[0] != 0 or indptr[-1] != len(indices) \
            or (np.diff(indptr) < 0).any():
        raise ConfigError("CSR targets: indptr must start at 0, never decrease and end at len(indices)")
    if len(indices) and (indices.min() < 0 or (n_classes is not None and indices.max() >= n_classes)):
        raise ConfigError(f"CSR targets: label indices must lie in 0..{(n_classes or 0) - 1 if n_classes else 'C-1'}")
    rows = np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))
    order = np.lexsort((indices, rows))
    indices = indices[order]
    dup = (np.diff(indices) == 0) & (np.diff(rows) == 0)
    if dup.any():
        r = rows[np.flatnonzero(dup)[0]]
        raise ConfigError(f"CSR targets: row {r} lists label {indices[np.flatnonzero(dup)[0]]} twice")
    return _Labels(indptr, indices, n_classes)


def _as_labels(targets: Any, n_classes: int | None) -> _Labels:
    """Dense multi-hot (numpy/torch), a ``scipy.sparse`` matrix, or a raw ``(indptr, indices)`` pair."""
    if hasattr(targets, "tocsr") and hasattr(targets, "nnz"):  # scipy.sparse matrix or array
        m = targets.tocsr(copy=True)
        m.sum_duplicates()
        m.eliminate_zeros()
        if n_classes is not None and m.shape[1] != n_classes:
            raise ConfigError(f"targets have {m.shape[1]} classes, scores {n_classes}")
        if m.nnz and not np.all(m.data == 1):
            raise ConfigError("sparse targets must hold only 1 (and 0) values (multi-hot)")
        return _csr_labels(m.indptr, m.indices, m.shape[1])
    if isinstance(targets, tuple) and len(targets) == 2:
        return _csr_labels(targets[0], targets[1], n_classes)
    return _dense_labels(targets, n_classes)


def label_counts(targets: Any) -> np.ndarray:
    """N_l: the number of rows carrying each label (the train-split frequencies PSP@k needs).

    Parameters
    ----------
    targets : array-like of shape (n_samples, n_classes) with 0/1 values, or a ``scipy.sparse`` matrix
        Dense multi-hot or CSR labels (raw ``(indptr, indices)`` give no class count: use scipy).

    Returns
    -------
    ndarray of shape (n_classes,), dtype int64

    Raises
    ------
    ConfigError
        Values other than 0/1, or a raw ``(indptr, indices)`` pair.
    """
    if isinstance(targets, tuple):
        raise ConfigError("label_counts needs the number of classes: pass a scipy.sparse matrix, not (indptr, indices)")
    labels = _as_labels(targets, None)
    return np.bincount(labels.indices, minlength=labels.n_classes).astype(np.int64)


def inverse_propensity(train_label_counts: Any, n_train: int, a: float = PROPENSITY_A,
                       b: float = PROPENSITY_B) -> np.ndarray:
    """Inverse propensities 1/p_l = 1 + C (N_l + B)^(-A) of Jain, Prabhu and Varma (KDD 2016).

    p_l = 1 / (1 + C e^{-A log(N_l + B)}), C = (log N - 1)(B + 1)^A (natural log), the formula of
    pyxclib's ``compute_inv_propesity``.

    Parameters
    ----------
    train_label_counts : array-like of shape (n_classes,)
        N_l, rows of the train split carrying label l (non-negative integers, at most ``n_train``).
    n_train : int
        N, rows of the train split (>= 3: the model needs log N > 1, else C < 0 and p_l > 1).
    a, b : float
        A and B (> 0); the paper's values for datasets other than Wikipedia/Amazon: 0.55 and 1.5.

    Returns
    -------
    ndarray of shape (n_classes,), dtype float64
        1/p_l; rare labels get large weights.

    Raises
    ------
    ConfigError
        Negative counts, counts above ``n_train``, ``n_train < 3``, or ``a``/``b`` not positive.

    Examples
    --------
    >>> inverse_propensity([0, 10, 100], n_train=100).round(3)
    array([5.775, 2.557, 1.47 ])
    """
    counts = np.asarray(train_label_counts, dtype=np.float64)
    if isinstance(n_train, bool) or not isinstance(n_train, (int, np.integer)) or n_train < 3:
        raise ConfigError(f"n_train must be an integer >= 3 (rows of the train split; below e the model's "
                          f"C = log N - 1 is negative and 1/p_l can drop to 0 or below), got {n_train!r}")
    if counts.ndim != 1 or (counts < 0).any() or (counts > n_train).any():
        raise ConfigError(f"train_label_counts must be a 1-D array of counts in 0..n_train={n_train}")
    if not (a > 0 and b > 0):
        raise ConfigError(f"propensity constants must be positive, got A={a}, B={b}")
    c = (math.log(n_train) - 1.0) * (b + 1.0) ** a
    return 1.0 + c * np.exp(-a * np.log(counts + b))


# ------------------------------------------------------------------------------------- metrics


def _discounts(k: int) -> np.ndarray:
    return 1.0 / np.log2(np.arange(2, k + 2))


def _ideal_psp_totals(labels: _Labels, inv_p: np.ndarray, ks: tuple[int, ...]) -> dict[int, float]:
    """Sum over rows of the best achievable k * PSP@k_i: each row's k largest 1/p_l among its labels."""
    rows, w = labels.rows(), inv_p[labels.indices]
    order = np.lexsort((-w, rows))  # rows ascending, weights descending within a row
    rank = np.arange(len(order)) - labels.indptr[rows[order]]
    w_sorted = w[order]
    return {k: float(w_sorted[rank < k].sum()) for k in ks}


def _is_integer_matrix(x: Any) -> bool:
    if isinstance(x, torch.Tensor):
        return not x.is_floating_point() and not x.is_complex() and x.dtype != torch.bool and x.ndim == 2
    return isinstance(x, np.ndarray) and np.issubdtype(x.dtype, np.integer) and x.ndim == 2


def _topk_input(scores_or_topk: Any, kind: str, n_classes: int | None, kmax: int, chunk_rows) -> np.ndarray:
    if kind not in ("auto", "scores", "topk"):
        raise ConfigError(f"kind {kind!r} invalid; valid: auto, scores, topk")
    x = scores_or_topk
    if kind == "topk" or (kind == "auto" and _is_integer_matrix(x) and (n_classes is None or x.shape[1] < n_classes)):
        topk = np.asarray(x.cpu() if isinstance(x, torch.Tensor) else x, dtype=np.int64)
        if topk.ndim != 2 or topk.shape[1] < kmax:
            raise ConfigError(f"top-k indices must be N x K with K >= max(ks) = {kmax}, got shape {topk.shape}")
        if topk.size and (topk.min() < 0 or (n_classes is not None and topk.max() >= n_classes)):
            raise ConfigError("top-k indices must be class indices in 0..C-1")
        return topk[:, :kmax]
    topk, width = _topk_and_width(x, kmax, chunk_rows)
    if n_classes is not None and width is not None and width != n_classes:
        raise ConfigError(f"scores have {width} classes, targets {n_classes}")
    return topk


def ranking_metrics(scores_or_topk: Any, targets: Any, ks: Any = DEFAULT_KS, train_label_counts: Any = None, *,
                    n_train: int | None = None, kind: str = "auto", chunk_rows: int | None = None,
                    propensity_a: float = PROPENSITY_A, propensity_b: float = PROPENSITY_B) -> dict[str, float]:
    """P@k, R@k, nDCG@k and (with train label counts) PSP@k, in percent, from per-row top-k.

    Parameters
    ----------
    scores_or_topk : array-like of shape (n_samples, n_classes), iterable of row blocks, or \
int array of shape (n_samples, K)
        Scores (ranked block by block with :func:`topk_indices`), or top-k class indices already
        sorted best first (as :func:`topk_indices` returns them), K >= max(ks).
    targets : array-like of shape (n_samples, n_classes), scipy.sparse matrix, or (indptr, indices)
        True labels: dense multi-hot (0/1, numpy or torch), any scipy.sparse matrix (converted to CSR;
        explicit zeros ignored), or the raw CSR arrays of the true label indices of each row.
    ks : int or sequence of int, default (1, 3, 5)
        Cut-offs, each ``1 <= k <= n_classes``.
    train_label_counts : array-like of shape (n_classes,), optional
        N_l of the train split (see :func:`label_counts`); with ``n_train`` adds ``psp@k``.
    n_train : int, optional
        N, rows of the train split; required with ``train_label_counts``.
    kind : {"auto", "scores", "topk"}, default "auto"
        How to read ``scores_or_topk``. "auto": a 2-D integer numpy/torch array with fewer columns
        than there are classes (known from dense/scipy targets or the label counts; with raw
        ``(indptr, indices)`` targets and no counts, any integer array) is top-k indices, anything
        else is scores. Pass "scores" or "topk" to say it explicitly.
    chunk_rows : int, optional
        Rows per block when ranking scores (see :func:`topk_indices`).
    propensity_a, propensity_b : float
        A and B of the propensity model (default 0.55, 1.5).

    Returns
    -------
    dict[str, float]
        ``p@k``, ``r@k``, ``ndcg@k`` for every k, ``psp@k`` when counts are given, all in percent
        (0-100, higher is better), plus ``n_examples`` and ``n_examples_without_positives`` (counts).
        Conventions (empty rows, ties, PSP normalisation): :data:`POLICY`.

    Raises
    ------
    ConfigError
        Bad ``ks``/``kind``/``chunk_rows``, shapes that disagree, non-0/1 or malformed CSR targets,
        ``train_label_counts`` without ``n_train`` or of the wrong length.
    NumericalError
        A score is NaN.

    Examples
    --------
    Row 0 has labels {0, 2} and ranks 1, 0, 2; row 1 has label {1} and ranks 1 first:

    >>> m = ranking_metrics(np.array([[0.5, 0.9, 0.1], [0.0, 1.0, 0.2]]), np.array([[1, 0, 1], [0, 1, 0]]),
    ...                     ks=(1, 2))
    >>> {k: round(v, 2) for k, v in m.items() if "@" in k}
    {'p@1': 50.0, 'r@1': 50.0, 'ndcg@1': 50.0, 'p@2': 50.0, 'r@2': 75.0, 'ndcg@2': 69.34}
    """
    if (train_label_counts is None) != (n_train is None):
        raise ConfigError("PSP@k needs both train_label_counts and n_train (the train split's size)")
    counts = None if train_label_counts is None else np.asarray(train_label_counts)
    shape = getattr(targets, "shape", None)
    n_classes = int(shape[1]) if shape is not None and len(shape) == 2 else (
        len(counts) if counts is not None else None)
    ks = check_ks(ks, n_classes)
    labels = _as_labels(targets, n_classes)
    topk = _topk_input(scores_or_topk, kind, n_classes, ks[-1], chunk_rows)
    if topk.shape[0] != labels.n_rows:
        raise ConfigError(f"scores have {topk.shape[0]} rows, targets {labels.n_rows}")
    hits = labels.hits(topk)
    out = _precision_recall_ndcg(hits, labels.n_pos, ks)
    if counts is not None:
        if n_classes is not None and len(counts) != n_classes:
            raise ConfigError(f"train_label_counts has {len(counts)} entries, targets {n_classes} classes")
        inv_p = inverse_propensity(counts, n_train, propensity_a, propensity_b)
        out.update(_psp(labels, hits, topk, inv_p, ks))
    out["n_examples"] = float(labels.n_rows)
    out["n_examples_without_positives"] = float((labels.n_pos == 0).sum())
    return out


def _precision_recall_ndcg(hits: np.ndarray, n_pos: np.ndarray, ks: tuple[int, ...]) -> dict[str, float]:
    n = max(len(n_pos), 1)
    has = n_pos > 0
    disc = _discounts(ks[-1])
    ideal = np.cumsum(disc)
    out = {}
    for k in ks:
        found = hits[:, :k].sum(1)
        dcg = hits[:, :k] @ disc[:k]
        idcg = ideal[np.clip(np.minimum(n_pos, k) - 1, 0, None)]
        out[f"p@{k}"] = 100.0 * found.sum() / (k * n)
        out[f"r@{k}"] = 100.0 * np.divide(found, n_pos, out=np.zeros(len(n_pos)), where=has).sum() / n
        out[f"ndcg@{k}"] = 100.0 * np.where(has, dcg / idcg, 0.0).sum() / n
    return {key: float(v) for key, v in out.items()}


def _psp(labels: _Labels, hits: np.ndarray, topk: np.ndarray, inv_p: np.ndarray,
         ks: tuple[int, ...]) -> dict[str, float]:
    gained = np.where(hits, inv_p[topk], 0.0)
    best = _ideal_psp_totals(labels, inv_p, ks)
    return {f"psp@{k}": 100.0 * float(gained[:, :k].sum()) / best[k] if best[k] > 0 else float("nan") for k in ks}
