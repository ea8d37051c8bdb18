"""Writing a cache: :class:`CacheWriter` (stream rows, resume, finish) and :func:`write_cache` (arrays)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from .finalize import finalize
from .journal import Journal
from .lock import CacheLock


class CacheWriter(Journal):
    """Streaming, resumable writer of one cache file: a :class:`~mlhead.cache.journal.Journal` that
    :meth:`finish` turns into the complete HDF5 file.

    Append with :meth:`append` (in split order), then :meth:`finish`. Hold a :class:`CacheLock` on the
    path while writing. Resume rules, ``force``, ``resume`` and ``sync_interval``: see the journal.
    """

    def finish(self, labels_layout: str = "auto") -> Path:
        """Write the final HDF5 file atomically and remove the partial directory. Returns the path.

        ``labels_layout``: "auto" (CSR above :data:`~mlhead.cache.labels.CSR_MIN_CLASSES` classes),
        "dense" or "csr"."""
        return finalize(self, labels_layout)


def write_cache(path, splits: dict, classes: Sequence[str], attrs: dict | None = None,
                fingerprint: dict | None = None, labels_layout: str = "auto") -> Path:
    """Write a complete cache from in-memory arrays (used by ``mulan`` and by tests).

    ``splits``: split name -> ``(embeddings N x D float, labels N x C in {0,1}, ids: N strings)``;
    ``classes``: C names; ``attrs``: extra root attrs; ``fingerprint``: its fields (default: the attrs
    and ``source: write_cache``); ``labels_layout``: "auto" (CSR above
    :data:`~mlhead.cache.labels.CSR_MIN_CLASSES` classes), "dense" or "csr". Atomic and locked like the streaming writer; returns the path.
    Raises ValueError when shapes disagree (e.g. embedding widths differ across splits),
    :class:`~mlhead.errors.CacheError` when another writer holds the lock.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    dims = {np.asarray(e).shape[1] for e, _, _ in splits.values()}
    if len(dims) != 1:
        raise ValueError(f"write_cache {path}: embedding widths differ across splits: {sorted(dims)}")
    fp = dict(fingerprint or {"source": "write_cache", **(attrs or {})})
    with CacheLock(path):
        w = CacheWriter(path, classes, dims.pop(), {s: len(v[2]) for s, v in splits.items()},
                        attrs=attrs, fingerprint=fp, force=True, resume=False)
        for split, (emb, lab, ids) in splits.items():
            w.append(split, emb, lab, list(ids))
        return w.finish(labels_layout)
