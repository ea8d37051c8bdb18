"""What a cache was made from: the fingerprint (every input that shapes its rows) and its root attrs.

:func:`cache_fields` is the one place both are built, from the loaded dataset, the encoder and the run
options. The fingerprint's digest (:func:`fingerprint_digest`, sha256 of its canonical JSON) decides
whether a cache or an interrupted partial can be reused (:mod:`mlhead.cache.resume`); the field names
and values are part of the on-disk format (a changed field makes every existing cache stale).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .. import __version__


def library_versions() -> dict[str, str]:
    """Versions of the libraries that shape embeddings (recorded in every cache).

    Returns ``{package: version}`` for mlhead, torch, numpy and, where installed, timm, transformers,
    h5py and pillow.
    """
    import importlib.metadata as md

    out = {"mlhead": __version__, "torch": torch.__version__, "numpy": np.__version__}
    for pkg in ("timm", "transformers", "h5py", "pillow"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


def fingerprint_digest(fields: dict) -> str:
    """sha256 hex of the canonical JSON of ``fields`` (sorted keys; non-JSON values via ``str``)."""
    return hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()


def diff_fingerprints(old: dict, new: dict) -> list[str]:
    """Names of the top-level fingerprint fields whose values differ (sorted)."""
    keys = set(old) | set(new)
    return sorted(k for k in keys if json.dumps(old.get(k), sort_keys=True, default=str)
                  != json.dumps(new.get(k), sort_keys=True, default=str))


#: fingerprint fields that are digests: shown as what they stand for
_DIGEST_FIELDS = {"inputs": "dataset files (paths, sizes or modification times)",
                  "split_ids": "split membership", "weights_sha256": "weights file contents"}


def short(v, n: int = 40) -> str:
    """``v`` as one short string (JSON for non-strings), cut to ``n`` characters with ``...``."""
    s = v if isinstance(v, str) else json.dumps(v, sort_keys=True, default=str)
    return s if len(s) <= n else s[:n - 3] + "..."


def describe_changes(old: dict, new: dict) -> list[str]:
    """One readable line per changed fingerprint field: ``name: old -> new`` (nested dicts by key)."""
    out = []
    for k in diff_fingerprints(old, new):
        a, b = old.get(k), new.get(k)
        if k in _DIGEST_FIELDS:
            out.append(f"{k}: {_DIGEST_FIELDS[k]} changed ({short(a, 12)} -> {short(b, 12)})")
        elif isinstance(a, dict) and isinstance(b, dict):
            sub = diff_fingerprints(a, b)
            out.append(f"{k}: " + ", ".join(f"{s} {short(a.get(s))} -> {short(b.get(s))}" for s in sub))
        else:
            out.append(f"{k}: {short(a)} -> {short(b)}")
    return out


def inputs_digest(files, root: Path) -> str:
    """sha256 over (path relative to ``root``, size, mtime_ns) of every input file, in order.

    Raises OSError when a file cannot be stat-ed.
    """
    h = hashlib.sha256()
    for p in files:
        st = p.stat()
        try:
            rel = str(p.resolve().relative_to(root.resolve()))
        except ValueError:
            rel = str(p)
        h.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


@dataclass(frozen=True)
class CacheFields:
    """The fingerprint (dict of JSON values) and the root attrs (dict) of one cache."""

    fingerprint: dict
    attrs: dict

    @property
    def digest(self) -> str:
        """:func:`fingerprint_digest` of :attr:`fingerprint`."""
        return fingerprint_digest(self.fingerprint)


def cache_fields(data, data_dir: Path, encoder, precision: str, on_error: str,
                 shard: tuple[int, int] | None) -> CacheFields:
    """Build the fingerprint and the root attrs of the cache ``embed`` writes.

    ``data``: a :class:`~mlhead.datasets.LoadedDataset` (name, cache_name, options, classes, files,
    splits, split_mode, split_seed, modality, notes, skipped); ``data_dir``: the folder or table file it
    was read from (input paths are hashed relative to it); ``encoder``: anything with ``name``,
    ``weights_sha256`` and ``preprocessing`` (None for a dataset that brings its own features);
    ``precision``: the resolved precision; ``shard``: ``(i, n)`` or None. A change in any fingerprint
    field makes an existing cache stale. Raises OSError when an input file cannot be stat-ed.
    """
    data_dir = Path(data_dir)
    enc = {"backbone": encoder.name if encoder else "none",
           "weights_sha256": encoder.weights_sha256 if encoder else "",
           "preprocessing": encoder.preprocessing if encoder else {}}
    versions = library_versions()
    split_ids = json.dumps({s: [e.id for e in v] for s, v in data.splits.items()}).encode()
    fingerprint = {
        "dataset": data.name, "dataset_options": data.options, "classes": data.classes,
        "inputs": inputs_digest(data.files, data_dir if data_dir.is_dir() else data_dir.parent),
        "n_inputs": len(data.files), "split_mode": data.split_mode, "split_seed": data.split_seed,
        "split_ids": hashlib.sha256(split_ids).hexdigest(), **enc,
        "precision": precision, "on_error": on_error, "shard": list(shard) if shard else None,
        "versions": {k: v for k, v in versions.items() if k != "h5py"},
    }
    attrs = {"dataset": data.cache_name or data.name, **enc, "split_mode": data.split_mode,
             "split_seed": -1 if data.split_seed is None else data.split_seed, "precision": precision,
             "modality": data.modality, "dataset_options": data.options, "on_error": on_error,
             "shard": list(shard) if shard else [], "notes": data.notes, "skipped_at_load": data.skipped}
    return CacheFields(fingerprint, attrs)
