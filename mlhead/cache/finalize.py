"""Finalize a journal: stream its raw rows into the HDF5 cache file, atomically.

The rows go chunk by chunk (bounded memory) into ``<path>.tmp.h5``, labels dense or CSR
(:mod:`mlhead.cache.labels`), each dataset with its checksum (:mod:`mlhead.cache.checksum`); the root attrs are set,
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
from .checksum import CHECKSUM_ATTR, Checksum, checksum_of
from .journal import EMB_DTYPE, Journal, read_ids
from .labels import choose_layout, write_labels

#: rows copied per step when streaming between files
CHUNK_ROWS = 4096
#: HDF5 chunk shape of ``/<split>/embeddings``: (EMB_CHUNK_ROWS, D), row-major, uncompressed. A chunk is
#: a contiguous block of whole rows (1024 x 768 float16 = 1.5 MiB), which is what ``fit`` streams past
#: ``--memory-budget`` (mlhead.datasource reads one chunk per block, in shuffled block order); whole rows
#: also keep ``predict --cache`` and eval's sequential reads chunk-aligned. No compression: float16
#: embeddings barely compress and decompression would cost CPU on every streamed epoch.
EMB_CHUNK_ROWS = 1024


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


def _raw_chunks(src: Path, dtype, shape: tuple[int, int]):
    """The raw array file ``src`` (``shape``, ``dtype``), CHUNK_ROWS rows at a time."""
    if not shape[0] or not shape[1]:
        return
    mm = np.memmap(src, dtype=dtype, mode="r", shape=shape)
    for i in range(0, shape[0], CHUNK_ROWS):
        yield np.asarray(mm[i:i + CHUNK_ROWS])
    del mm


def _write_split(f: h5py.File, journal: Journal, split: str, layout: str) -> None:
    """One split group: embeddings, labels (``layout``) and ids, each with its checksum attr."""
    n, D, C = journal.done(split), journal.dim, len(journal.classes)
    f_emb, _, f_ids = journal.files(split)
    g = f.create_group(split)
    e = g.create_dataset("embeddings", shape=(n, D), dtype=EMB_DTYPE, chunks=(min(n, EMB_CHUNK_ROWS), D) if n else None)
    c = Checksum()
    for i, chunk in enumerate(_raw_chunks(f_emb, EMB_DTYPE, (n, D))):
        e[i * CHUNK_ROWS:i * CHUNK_ROWS + len(chunk)] = chunk
        c.update(chunk)
    e.attrs[CHECKSUM_ATTR] = c.value()
    write_labels(g, journal.label_chunks(split, CHUNK_ROWS), n, C, layout)
    ids = read_ids(f_ids, n)
    ds = g.create_dataset("ids", data=np.array(ids, dtype=object), dtype=h5py.string_dtype())
    ds.attrs[CHECKSUM_ATTR] = checksum_of(ids)


def finalize(journal: Journal, labels_layout: str = "auto") -> Path:
    """Write ``journal``'s rows as the complete cache at ``journal.path`` and remove the journal.

    ``labels_layout``: "auto" (CSR when there are more than
    :data:`~mlhead.cache.labels.CSR_MIN_CLASSES` classes), "dense" or "csr" (see
    :mod:`mlhead.cache.labels`). Every dataset gets its checksum attr (:mod:`mlhead.cache.checksum`).
    Closes the journal first (everything appended becomes durable). Returns the cache path. Raises
    :class:`~mlhead.errors.CacheError` when the journal is damaged, OSError on storage faults (the
    journal then stays, to be finalized by a rerun).
    """
    layout = choose_layout(len(journal.classes), labels_layout)
    journal.close()
    tmp = Path(str(journal.path) + ".tmp.h5")
    with h5py.File(tmp, "w") as f:
        for split in journal.planned:
            _write_split(f, journal, split, layout)
        set_root_attrs(f, journal.classes, journal.attrs, journal.fingerprint, journal.skipped, complete=False)
        f.attrs["complete"] = True
        f.flush()
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, journal.path)
    fsync_dir(journal.path.parent)
    journal.remove()
    return journal.path
