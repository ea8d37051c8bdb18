"""HDF5 embedding cache: streaming, resumable, atomic writer; reader; fingerprint; info/verify; merge.

One module per step of a cache's life:

* :mod:`~mlhead.cache.fingerprint`: what a cache was made from (:func:`cache_fields` builds the
  fingerprint and the root attrs in one place; :func:`fingerprint_digest`, :func:`describe_changes`);
* :mod:`~mlhead.cache.resume`: the pure :func:`resume_decision` (keep, adopt, discard or refuse what
  exists) used for complete caches and interrupted partials alike;
* :mod:`~mlhead.cache.lock`: :class:`CacheLock`, one writer per cache (``filelock``);
* :mod:`~mlhead.cache.journal`: the ``<path>.partial/`` journal of durable rows a killed run resumes
  from (:func:`read_progress` tells how many rows are durable);
* :mod:`~mlhead.cache.finalize`: journal -> ``<path>.tmp.h5`` -> ``os.replace`` onto ``<path>``;
* :mod:`~mlhead.cache.writer`: :class:`CacheWriter` (journal + finish), :func:`write_cache` (arrays);
* :mod:`~mlhead.cache.reader`: :func:`open_cache` -> :class:`Cache`, :func:`read_attrs`,
  :func:`check_reusable`, :func:`latest_cache`;
* :mod:`~mlhead.cache.labels`: the dense and CSR label layouts (CSR when C > :data:`CSR_MIN_CLASSES`);
* :mod:`~mlhead.cache.checksum`: a sha256 per dataset, stored at finalize, verified on load;
* :mod:`~mlhead.cache.info`: :func:`cache_info`, :func:`verify_cache` (:func:`verify_report` adds notes);
* :mod:`~mlhead.cache.merge`: :func:`merge_shards` joins ``--shard i/n`` files into the single-run file;
* :mod:`~mlhead.cache.importer`: :func:`import_cache` builds a cache from the user's own arrays.

Writing never touches the final path until the cache is complete.
"""

from __future__ import annotations

from ..errors import CacheError
from .finalize import CHUNK_ROWS, finalize
from .fingerprint import (
    CacheFields,
    cache_fields,
    describe_changes,
    diff_fingerprints,
    fingerprint_digest,
    library_versions,
)
from .importer import import_cache
from .info import cache_info, verify_cache, verify_report
from .journal import EMB_DTYPE, LABEL_DTYPE, PARTIAL_FORMAT, Journal, partial_dir, read_progress
from .labels import CSR_MIN_CLASSES
from .lock import CacheLock
from .merge import check_shards, merge_shards, merged_path, remove_shards, shard_path
from .reader import Cache, check_reusable, latest_cache, open_cache, read_attrs
from .resume import ResumeDecision, resume_decision
from .writer import CacheWriter, write_cache

__all__ = [
    "CHUNK_ROWS", "CSR_MIN_CLASSES", "EMB_DTYPE", "LABEL_DTYPE", "PARTIAL_FORMAT", "Cache", "CacheError", "CacheFields",
    "CacheLock", "CacheWriter", "Journal", "ResumeDecision", "cache_fields", "cache_info", "check_reusable",
    "check_shards", "describe_changes", "diff_fingerprints", "finalize", "fingerprint_digest", "import_cache", "latest_cache",
    "library_versions", "merge_shards", "merged_path", "open_cache", "partial_dir", "read_attrs",
    "read_progress", "remove_shards", "resume_decision", "shard_path", "verify_cache", "verify_report", "write_cache",
]
