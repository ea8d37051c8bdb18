"""Reading a cache: :func:`open_cache` -> :class:`Cache` (``.load(split)``), root attrs, reuse checks.

File layout (``<cache-dir>/<dataset>/<backbone>.h5``)::

    /<split>/embeddings   N x D float16
    /<split>/labels       N x C uint8 (multi-hot)
    /<split>/ids          N variable-length UTF-8 strings
    attrs: classes (JSON list), backbone, weights_sha256, preprocessing (JSON), split_mode,
           split_seed, fingerprint (sha256 hex), fingerprint_json, versions (JSON), complete (bool),
           skipped (JSON list of {split, id, where, error}: rows left out while embedding),
           skipped_at_load (JSON list of {id, where, error}: rows the dataset loader left out),
           plus free-form extras.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import torch

from ..errors import CacheError
from .fingerprint import fingerprint_digest
from .journal import LABEL_DTYPE, partial_dir
from .resume import KEEP, REFUSE, ResumeDecision, resume_decision

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

    def load(self, split: str, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
        """Load one split into memory.

        Returns ``(embeddings N x D in dtype (float32 by default), labels uint8 N x C, ids list[str])``.
        The stored float16 is converted straight to ``dtype`` (no float32 copy for bf16 training).
        Raises :class:`CacheError` naming the split and the splits available.
        """
        if split not in self.splits:
            raise CacheError(f"{self.path}: no split {split!r}; splits: {', '.join(self.splits)}")
        with h5py.File(self.path, "r") as f:
            g = f[split]
            emb = torch.from_numpy(g["embeddings"][...]).to(dtype)
            lab = torch.from_numpy(g["labels"][...].astype(LABEL_DTYPE))
            ids = [s.decode() if isinstance(s, bytes) else str(s) for s in g["ids"][...]]
        return emb, lab, ids


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


def open_cache(path: str | os.PathLike, require_complete: bool = True) -> Cache:
    """Open a cache file written by :func:`write_cache` or :class:`CacheWriter`.

    Raises :class:`CacheError` when the file is missing, not HDF5, or (with
    ``require_complete``) not marked complete.
    """
    p = Path(path)
    if not p.is_file():
        hint = " (an interrupted embed is resumed by rerunning it)" if partial_dir(p).exists() else ""
        raise CacheError(f"cache file not found: {p}{hint}")
    try:
        with h5py.File(p, "r") as f:
            attrs = {k: decode_attr(v) for k, v in f.attrs.items()}
            if require_complete and not attrs.get("complete", False):
                raise CacheError(f"{p}: cache is not complete (an embed was interrupted); rerun `mlhead embed`")
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


