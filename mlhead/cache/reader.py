"""Reading a cache: :func:`open_cache` -> :class:`Cache` (``.load(split)``), root attrs, reuse checks.

File layout (``<cache-dir>/<dataset>/<backbone>.h5``)::

    /<split>/embeddings   N x D float16
    /<split>/labels       N x C uint8 (multi-hot), or when C > 1000 (mlhead.cache.labels) CSR:
    /<split>/labels_indptr, /<split>/labels_indices + group attr labels_shape = [N, C]
    /<split>/ids          N variable-length UTF-8 strings
    each dataset: attr checksum = "sha256:<hex>" of its contents (caches written before: none)
    attrs: classes (JSON list), backbone, weights_sha256, preprocessing (JSON), split_mode,
           split_seed, fingerprint (sha256 hex), fingerprint_json, versions (JSON), complete (bool),
           skipped (JSON list of {split, id, where, error}: rows left out while embedding),
           skipped_at_load (JSON list of {id, where, error}: rows the dataset loader left out),
           plus free-form extras.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import scipy.sparse as sp
import torch

from ..errors import CacheError
from .checksum import CHECKSUM_ATTR, Checksum, changed_message, checksum_of
from .fingerprint import fingerprint_digest
from .journal import LABEL_DTYPE, partial_dir
from .labels import labels_shape, layout_of, missing_label_parts
from .resume import KEEP, REFUSE, ResumeDecision, resume_decision

#: cells of a dense labels dataset converted at once by :meth:`Cache.load_sparse` (16 MiB of uint8)
SPARSE_READ_CELLS = 1 << 24

#: the order splits are listed in (others after these, by name)
SPLIT_ORDER = {"train": 0, "val": 1, "test": 2}


def split_order(names) -> list[str]:
    """``names`` sorted train, val, test first, then the others by name."""
    return sorted(names, key=lambda s: (SPLIT_ORDER.get(s, 9), s))


@dataclass
class Cache:
    """A complete cache opened for reading (see :func:`open_cache`)."""

    path: Path
    splits: list[str]
    classes: list[str]
    attrs: dict
    shapes: dict[str, tuple[int, int]] = field(default_factory=dict)

    @property
    def fingerprint(self) -> str:
        return self.attrs.get("fingerprint", "")

    def _group(self, f: h5py.File, split: str) -> h5py.Group:
        if split not in self.splits:
            raise CacheError(f"{self.path}: no split {split!r}; splits: {', '.join(self.splits)}")
        return f[split]

    def _read(self, ds: h5py.Dataset, verify: bool):
        """All of ``ds``; with ``verify``, CacheError when its stored checksum differs."""
        data = ds[...]
        want = ds.attrs.get(CHECKSUM_ATTR)
        if verify and want is not None and checksum_of(data) != decode_attr(want):
            raise CacheError(changed_message(self.path, ds.name.strip("/")))
        return data

    def _labels(self, g: h5py.Group, verify: bool) -> sp.csr_matrix | np.ndarray:
        """The split's labels as stored: dense uint8 N x C, or a csr_matrix for the CSR layout."""
        if layout_of(g) == "dense":
            return self._read(g["labels"], verify).astype(LABEL_DTYPE, copy=False)
        indptr, indices = self._read(g["labels_indptr"], verify), self._read(g["labels_indices"], verify)
        return sp.csr_matrix((np.ones(len(indices), LABEL_DTYPE), indices, indptr), shape=labels_shape(g))

    def load(self, split: str, dtype: torch.dtype = torch.float32,
             verify: bool = True) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
        """Load one split into memory.

        Returns ``(embeddings N x D in dtype (float32 by default), labels uint8 N x C (dense, whatever
        the stored layout), ids list[str])``. The stored float16 is converted straight to ``dtype`` (no
        float32 copy for bf16 training).

        ``verify`` (default on): the bytes just read are checked against the sha256 checksums stored
        when the cache was written (caches without checksums load unchecked). It costs hashing only, no
        second read. Measured at MoviePosters size (22,579 x 1280 float16, 28 classes, 64.5 MB; all
        three splits; ``python bench/bench_cache_verify.py``, 2 cores at load average 17): 0.33 s
        unverified, 0.59 s verified (+0.27 s), i.e. less than one training epoch at paper size
        (0.33 s), once per ``fit``/``eval``. Cheap, so on by default; ``verify=False`` skips it.
        Raises :class:`CacheError` naming the split and the splits available, or naming the split and
        dataset that changed since the cache was written.
        """
        with h5py.File(self.path, "r") as f:
            g = self._group(f, split)
            emb = self._embeddings(g, dtype, verify)
            lab = self._labels(g, verify)
            lab = torch.from_numpy(lab.toarray() if sp.issparse(lab) else lab)
            ids = [s.decode() if isinstance(s, bytes) else str(s) for s in self._read(g["ids"], verify)]
        return emb, lab, ids

    def _embeddings(self, g: h5py.Group, dtype: torch.dtype | None, verify: bool) -> torch.Tensor:
        emb = torch.from_numpy(self._read(g["embeddings"], verify))
        return emb if dtype is None else emb.to(dtype)

    def load_embeddings(self, split: str, dtype: torch.dtype | None = None, verify: bool = True) -> torch.Tensor:
        """The embeddings of one split only (N x D): in ``dtype``, or as stored (float16) when None, then
        without any copy beyond the read. ``verify`` and errors as in :meth:`load`."""
        with h5py.File(self.path, "r") as f:
            return self._embeddings(self._group(f, split), dtype, verify)

    def _row_blocks(self, ds: h5py.Dataset, rows: int, verify: bool) -> Iterator[np.ndarray]:
        """``ds`` as stored, ``rows`` rows at a time in row order; with ``verify``, the blocks are hashed as
        they are read and, after the last one, compared with the stored checksum (CacheError as :meth:`_read`)."""
        want = ds.attrs.get(CHECKSUM_ATTR) if verify else None
        digest = Checksum()
        rows = max(int(rows), 1)
        for start in range(0, ds.shape[0], rows):
            block = ds[start:start + rows]
            if want is not None:
                digest.update(block)
            yield block
        if want is not None and digest.value() != decode_attr(want):
            raise CacheError(changed_message(self.path, ds.name.strip("/")))

    def iter_embeddings(self, split: str, rows: int, verify: bool = True) -> Iterator[np.ndarray]:
        """The embeddings of one split as stored (float16), ``rows`` rows at a time in row order (the last
        block may be shorter): bounded memory whatever N. ``verify``: the blocks are hashed as they are
        read and, after the last one, compared with the stored checksum (CacheError naming the split and
        dataset when it differs, as :meth:`load`). Raises CacheError for an unknown split."""
        with h5py.File(self.path, "r") as f:
            yield from self._row_blocks(self._group(f, split)["embeddings"], rows, verify)

    def _dense_as_sparse(self, ds: h5py.Dataset, verify: bool) -> sp.csr_matrix:
        """A dense ``labels`` dataset (N x C uint8) as CSR, read in row blocks of at most
        :data:`SPARSE_READ_CELLS` cells, so the dense N x C never sits in memory."""
        n, c = ds.shape
        parts = [sp.csr_matrix(b.astype(LABEL_DTYPE, copy=False))
                 for b in self._row_blocks(ds, SPARSE_READ_CELLS // max(c, 1), verify)]
        return sp.vstack(parts, format="csr", dtype=LABEL_DTYPE) if parts else sp.csr_matrix((n, c), dtype=LABEL_DTYPE)

    def load_sparse(self, split: str, verify: bool = True) -> sp.csr_matrix:
        """The labels of one split as a ``scipy.sparse.csr_matrix`` (N x C, uint8 ones), from either
        stored layout (a dense layout is converted in row blocks of at most :data:`SPARSE_READ_CELLS`
        cells: memory is the CSR result plus one block). ``verify`` as in :meth:`load`; raises CacheError
        like it."""
        with h5py.File(self.path, "r") as f:
            g = self._group(f, split)
            if layout_of(g) == "dense":
                return self._dense_as_sparse(g["labels"], verify)
            return self._labels(g, verify)

    def labels_layout(self, split: str) -> str:
        """"dense" or "csr": how ``split``'s labels are stored (see :mod:`mlhead.cache.labels`)."""
        with h5py.File(self.path, "r") as f:
            return layout_of(self._group(f, split))


def decode_attr(v):
    """An HDF5 attr value as Python: bytes decoded, numpy scalars unwrapped, JSON lists/dicts parsed."""
    if isinstance(v, bytes):
        v = v.decode()
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, str) and v[:1] in "[{":
        try:
            return json.loads(v)
        except json.JSONDecodeError:
            return v
    return v


def read_attrs(path: str | os.PathLike) -> dict:
    """Root attributes of a cache file, JSON values decoded."""
    with h5py.File(path, "r") as f:
        return {k: decode_attr(v) for k, v in f.attrs.items()}


#: what every cache file holds (a hand-made HDF5 missing any is named in the error)
LAYOUT_HELP = ("root attrs classes (JSON list of names) and complete (true); per split group "
               "embeddings (N x D), labels (N x C uint8, or labels_indptr + labels_indices + attr labels_shape) "
               "and ids (N strings)")


def missing_parts(f: h5py.File) -> list[str]:
    """What an open HDF5 file lacks to be a cache: root attrs, split groups, datasets (empty: nothing)."""
    missing = [f"root attr {a!r}" for a in ("classes", "complete") if a not in f.attrs]
    groups = [k for k in f if isinstance(f[k], h5py.Group)]
    if not groups:
        missing.append("split groups (e.g. /train)")
    for s in split_order(groups):
        g = f[s]
        missing += [f"/{s}/{k}" for k in ("embeddings", "ids") if not isinstance(g.get(k), h5py.Dataset)]
        missing += [f"/{s}/{k}" for k in missing_label_parts(g)]
    return missing


def _check_file(p: Path, f: h5py.File, require_complete: bool) -> None:
    """CacheError when the open file ``f`` is an interrupted write or not a cache at all."""
    if require_complete and "complete" in f.attrs and not f.attrs["complete"]:
        raise CacheError(f"{p}: cache is not complete (an embed was interrupted); rerun `mlhead embed`")
    missing = [m for m in missing_parts(f) if require_complete or m != "root attr 'complete'"]
    if missing:
        raise CacheError(f"{p}: not an mlhead cache: missing {', '.join(missing)} (a cache has {LAYOUT_HELP}; "
                         "`mlhead cache import` builds one from your arrays)")


def open_cache(path: str | os.PathLike, require_complete: bool = True) -> Cache:
    """Open a cache file written by :func:`write_cache`, :class:`CacheWriter` or ``mlhead cache import``.

    Raises :class:`CacheError` when the file is missing or not HDF5; when (with ``require_complete``)
    it is marked not complete (an interrupted write); when it lacks what a cache holds (the message
    lists every missing attr, group and dataset, e.g. for a hand-made HDF5).
    """
    p = Path(path)
    if not p.is_file():
        hint = " (an interrupted embed is resumed by rerunning it)" if partial_dir(p).exists() else ""
        raise CacheError(f"cache file not found: {p}{hint}")
    try:
        with h5py.File(p, "r") as f:
            _check_file(p, f, require_complete)
            attrs = {k: decode_attr(v) for k, v in f.attrs.items()}
            splits = [k for k in f.keys() if isinstance(f[k], h5py.Group)]
            shapes = {s: tuple(f[s]["embeddings"].shape) for s in splits}
    except (OSError, KeyError) as e:
        raise CacheError(f"{p}: not a readable mlhead cache ({e})") from None
    return Cache(path=p, splits=split_order(splits), classes=list(attrs.get("classes", [])), attrs=attrs, shapes=shapes)


def check_reusable(path: Path, fingerprint: dict) -> ResumeDecision:
    """The decision to reuse the complete cache at ``path`` for a run with ``fingerprint`` (KEEP, or
    ADOPT when only a harmless ``on_error`` differs; see :func:`~mlhead.cache.resume.resume_decision`).

    Raises :class:`CacheError` when it cannot be reused: made from other inputs (the message names
    every changed field, old -> new), not complete, or not a readable cache. Every message says how to
    rebuild (``--force``).
    """
    try:
        attrs = read_attrs(path)
    except OSError as e:
        raise CacheError(f"{path}: exists but is not a readable mlhead cache ({e}); "
                         "rerun with --force to rebuild it") from None
    if not attrs.get("complete", False):
        raise CacheError(f"{path}: exists but is not a complete cache; rerun with --force to rebuild it")
    if attrs.get("fingerprint") == fingerprint_digest(fingerprint):
        return ResumeDecision(KEEP)
    old = attrs.get("fingerprint_json")
    if not isinstance(old, dict) or fingerprint_digest(old) != attrs.get("fingerprint"):
        old = {}  # no fields, or fields that do not match the digest: nothing can be reused
    skipped = [r for key in ("skipped", "skipped_at_load") for r in (attrs.get(key) or [])]
    decision = resume_decision(old, fingerprint, force=False, old_skipped=len(skipped))
    if decision.action != REFUSE:
        return decision
    raise CacheError(f"{path}: cache is stale: inputs changed ({', '.join(decision.changed) or 'fingerprint'}): "
                     f"{'; '.join(decision.details)}; rerun with --force to rebuild it")


def latest_cache(cache_dir: str | os.PathLike) -> Path:
    """The most recently modified ``*.h5`` under ``cache_dir`` (CacheError if none; the message
    points at an interrupted embed when only a partial exists)."""
    root = Path(cache_dir)
    files = sorted((p for p in root.rglob("*.h5") if not p.name.endswith(".tmp.h5") and p.is_file()),
                   key=lambda p: p.stat().st_mtime, reverse=True)
    if not files:
        partials = sorted(root.rglob("*.h5.partial")) if root.is_dir() else []
        hint = (f" (interrupted embed at {partials[0]}: rerun the same `mlhead embed` to finish it)"
                if partials else "")
        raise CacheError(f"no cache under {root}/{hint}: run `mlhead embed` first or pass --cache PATH")
    return files[0]


