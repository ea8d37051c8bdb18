"""Finalize a journal: stream its raw rows into the HDF5 cache file, atomically.

The rows go chunk by chunk (bounded memory) into ``<path>.tmp.h5``; the root attrs are set,
``complete=True`` last; the file is fsync'd and ``os.replace``-d onto ``<path>``, the folder fsync'd,
and only then the ``.partial`` folder removed. A reader therefore sees the previous file or the whole
new one, never half of it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

import h5py
import numpy as np

from ..fileio import fsync_dir
from .fingerprint import fingerprint_digest, library_versions
from .journal import EMB_DTYPE, LABEL_DTYPE, Journal, read_ids

#: rows copied per step when streaming between files
CHUNK_ROWS = 4096


def set_root_attrs(f: h5py.File, classes: Sequence[str], attrs: dict, fingerprint: dict, skipped: list,
                   complete: bool) -> None:
    """Write a cache's root attrs: classes, versions, fingerprint (digest and fields), skipped rows,
    then ``attrs`` (non-scalars as JSON) and the ``complete`` flag."""
    f.attrs["classes"] = json.dumps(list(classes))
    f.attrs["versions"] = json.dumps(library_versions())
    f.attrs["fingerprint"] = fingerprint_digest(fingerprint)
    f.attrs["fingerprint_json"] = json.dumps(fingerprint, sort_keys=True, default=str)
    f.attrs["skipped"] = json.dumps(list(skipped))
    for k, v in attrs.items():
        f.attrs[k] = v if isinstance(v, (str, int, float, bool, np.generic)) else json.dumps(v, default=str)
    f.attrs["complete"] = complete


def _copy_raw(src: Path, ds: h5py.Dataset, dtype, shape: tuple[int, int]) -> None:
    """Copy the raw array file ``src`` (``shape``, ``dtype``) into ``ds``, CHUNK_ROWS rows at a time."""
    mm = np.memmap(src, dtype=dtype, mode="r", shape=shape)
    for i in range(0, shape[0], CHUNK_ROWS):
        ds[i:i + CHUNK_ROWS] = mm[i:i + CHUNK_ROWS]
    del mm


def _write_split(f: h5py.File, journal: Journal, split: str) -> None:
    n, D, C = journal.done(split), journal.dim, len(journal.classes)
    f_emb, f_lab, f_ids = journal.files(split)
    g = f.create_group(split)
    e = g.create_dataset("embeddings", shape=(n, D), dtype=EMB_DTYPE, chunks=(min(max(n, 1), 1024), D) if n else None)
    lab = g.create_dataset("labels", shape=(n, C), dtype=LABEL_DTYPE)
    if n:
        _copy_raw(f_emb, e, EMB_DTYPE, (n, D))
        if C:
            _copy_raw(f_lab, lab, LABEL_DTYPE, (n, C))
    g.create_dataset("ids", data=np.array(read_ids(f_ids, n), dtype=object), dtype=h5py.string_dtype())


def finalize(journal: Journal) -> Path:
    """Write ``journal``'s rows as the complete cache at ``journal.path`` and remove the journal.

    Closes the journal first (everything appended becomes durable). Returns the cache path. Raises
    :class:`~mlhead.errors.CacheError` when the journal is damaged, OSError on storage faults (the
    journal then stays, to be finalized by a rerun).
    """
    journal.close()
    tmp = Path(str(journal.path) + ".tmp.h5")
    with h5py.File(tmp, "w") as f:
        for split in journal.planned:
            _write_split(f, journal, split)
        set_root_attrs(f, journal.classes, journal.attrs, journal.fingerprint, journal.skipped, complete=False)
        f.attrs["complete"] = True
        f.flush()
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, journal.path)
    fsync_dir(journal.path.parent)
    journal.remove()
    return journal.path
