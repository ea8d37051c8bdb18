"""The two on-disk layouts of a split's labels: dense multi-hot or CSR (issue #19).

* ``dense``: ``/<split>/labels``, N x C uint8 (0/1), as every cache before CSR.
* ``csr``: ``/<split>/labels_indptr`` (N + 1, int64) and ``/<split>/labels_indices`` (nnz, int32: the
  class columns of each row's positives, ascending), plus the group attr ``labels_shape = [N, C]``:
  scipy's CSR arrays without the all-ones ``data``. Plain HDF5 datasets, readable by any HDF5 tool
  (row i's classes are ``indices[indptr[i]:indptr[i + 1]]``).

The writer picks CSR when C > :data:`CSR_MIN_CLASSES` (``layout="auto"``). Why 1000: a dense row costs
C bytes, a CSR row 8 + 4 x (its positives). At C <= 1000 a dense row is at most 1 KB, no more than a
512-d float16 embedding row, and training holds the dense N x C in memory anyway; beyond, the dense
labels outgrow the embeddings (C = 20,000: 20 KB per row, 8x a 1280-d float16 row) while multilabel
data with many classes has few positives per row (extreme classification: a handful of 10^4..10^6), so
CSR is 100-1000x smaller. The rule depends on C only, so every split and every shard of one dataset
has the same layout.

Readers go through :func:`read_dense` / :func:`read_sparse` and never look at the layout themselves.
"""

from __future__ import annotations

from collections.abc import Iterable

import h5py
import numpy as np
import scipy.sparse as sp

from .checksum import CHECKSUM_ATTR, Checksum

LABEL_DTYPE = np.uint8
INDPTR_DTYPE = np.int64
INDICES_DTYPE = np.int32
#: CSR is chosen when the number of classes exceeds this (see the module docstring for why)
CSR_MIN_CLASSES = 1000
LAYOUTS = ("auto", "dense", "csr")
SHAPE_ATTR = "labels_shape"


def choose_layout(n_classes: int, layout: str = "auto") -> str:
    """``"dense"`` or ``"csr"`` for a cache with ``n_classes`` classes (``layout`` "auto": CSR when
    ``n_classes > CSR_MIN_CLASSES``). Raises ValueError for a layout not in :data:`LAYOUTS`."""
    if layout not in LAYOUTS:
        raise ValueError(f"labels layout {layout!r}; valid: {', '.join(LAYOUTS)}")
    if layout != "auto":
        return layout
    return "csr" if n_classes > CSR_MIN_CLASSES else "dense"


def write_labels(g: h5py.Group, chunks: Iterable, n: int, n_classes: int, layout: str) -> None:
    """Write a split's labels into group ``g`` from row chunks (dense uint8 arrays or csr_matrix, in row
    order, ``n`` rows in all), in ``layout`` ("dense" or "csr"), each dataset with its ``checksum`` attr."""
    if layout == "dense":
        ds = g.create_dataset("labels", shape=(n, n_classes), dtype=LABEL_DTYPE)
        c, at = Checksum(), 0
        for chunk in chunks:
            chunk = chunk.toarray().astype(LABEL_DTYPE) if sp.issparse(chunk) else chunk
            if chunk.size:
                ds[at:at + chunk.shape[0]] = chunk
            c.update(np.asarray(chunk, dtype=LABEL_DTYPE))
            at += chunk.shape[0]
        ds.attrs[CHECKSUM_ATTR] = c.value()
        return
    indptr = np.zeros(n + 1, INDPTR_DTYPE)
    ind = g.create_dataset("labels_indices", shape=(0,), maxshape=(None,), dtype=INDICES_DTYPE, chunks=(65536,))
    c, at = Checksum(), 0
    for chunk in chunks:
        m = chunk if sp.issparse(chunk) else sp.csr_matrix(np.asarray(chunk, dtype=LABEL_DTYPE))
        m.sort_indices()
        nnz = int(indptr[at])
        indptr[at + 1:at + 1 + chunk.shape[0]] = nnz + m.indptr[1:]
        ind.resize((nnz + m.nnz,))
        cols = m.indices.astype(INDICES_DTYPE)
        if len(cols):
            ind[nnz:] = cols
        c.update(cols)
        at += chunk.shape[0]
    ind.attrs[CHECKSUM_ATTR] = c.value()
    ptr = g.create_dataset("labels_indptr", data=indptr)
    ptr.attrs[CHECKSUM_ATTR] = Checksum().update(indptr).value()
    g.attrs[SHAPE_ATTR] = np.array([n, n_classes], dtype=np.int64)


def layout_of(g: h5py.Group) -> str | None:
    """The labels layout of split group ``g``: "dense", "csr", or None when it has neither."""
    if isinstance(g.get("labels"), h5py.Dataset):
        return "dense"
    if all(isinstance(g.get(k), h5py.Dataset) for k in ("labels_indptr", "labels_indices")) and SHAPE_ATTR in g.attrs:
        return "csr"
    return None


def missing_label_parts(g: h5py.Group) -> list[str]:
    """What split group ``g`` lacks to hold labels in either layout (empty: it has one)."""
    if layout_of(g) is not None:
        return []
    csr = [k for k in ("labels_indptr", "labels_indices") if k in g]
    if not csr:
        return ["labels"]
    return [k for k in ("labels_indptr", "labels_indices") if k not in g] + \
           ([f"attr {SHAPE_ATTR}"] if SHAPE_ATTR not in g.attrs else [])


def labels_shape(g: h5py.Group) -> tuple[int, int]:
    """(N, C) of split group ``g``'s labels in either layout (KeyError when it has none)."""
    if layout_of(g) == "csr":
        n, c = (int(x) for x in g.attrs[SHAPE_ATTR])
        return n, c
    return tuple(int(x) for x in g["labels"].shape)


def row_counts(g: h5py.Group) -> np.ndarray:
    """Positives per row (int64, N) of split group ``g``'s labels, either layout, in row chunks."""
    if layout_of(g) == "csr":
        return np.diff(g["labels_indptr"][...].astype(np.int64))
    ds = g["labels"]
    parts = [np.asarray(ds[i:i + 65536]).astype(np.int64).sum(1) for i in range(0, ds.shape[0], 65536)]
    return np.concatenate(parts) if parts else np.zeros(0, np.int64)


def read_dense(g: h5py.Group, start: int = 0, stop: int | None = None) -> np.ndarray:
    """Rows ``start:stop`` of split group ``g``'s labels as a dense uint8 multi-hot array (rows x C),
    whatever the layout."""
    if layout_of(g) == "dense":
        return np.asarray(g["labels"][start:stop], dtype=LABEL_DTYPE)
    return read_sparse(g, start, stop).toarray().astype(LABEL_DTYPE, copy=False)


def read_sparse(g: h5py.Group, start: int = 0, stop: int | None = None) -> sp.csr_matrix:
    """Rows ``start:stop`` of split group ``g``'s labels as a ``scipy.sparse.csr_matrix`` (uint8 data),
    whatever the layout (a dense layout is converted row chunk by row chunk)."""
    n, c = labels_shape(g)
    stop = n if stop is None else min(stop, n)
    if layout_of(g) == "dense":
        blocks = [sp.csr_matrix(g["labels"][i:min(i + 65536, stop)]) for i in range(start, stop, 65536)]
        return sp.vstack(blocks, format="csr", dtype=LABEL_DTYPE) if blocks else sp.csr_matrix((0, c), dtype=LABEL_DTYPE)
    ptr = g["labels_indptr"][start:stop + 1].astype(np.int64)
    cols = g["labels_indices"][ptr[0]:ptr[-1]] if len(ptr) else np.zeros(0, INDICES_DTYPE)
    return sp.csr_matrix((np.ones(len(cols), LABEL_DTYPE), cols, ptr - ptr[0]), shape=(max(stop - start, 0), c))
