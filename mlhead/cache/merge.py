"""Join shard caches made by ``embed(shard=(i, n))`` into the very file a single run makes.

A shard ``i/n`` holds rows ``shard_slice(len(split), (i, n))`` of every split (a contiguous slice), so
concatenating shards ``0, 1, ..., n-1`` split by split gives the single run's rows in the single run's
order. :func:`merge_shards` checks that the shards belong together (same fingerprint but for its
``shard`` field, all of ``0..n-1`` present exactly once, each complete) and refuses with one
:class:`~mlhead.cache.CacheError` naming the files otherwise. The merged file gets the single run's
fingerprint (the shard fingerprint with ``"shard": None``, digest recomputed), its attrs (``shard``
-> ``[]``) and the shards' ``skipped`` lists in row order, so ``embed`` without ``--shard`` later
finds it up to date.

Merging streams ``CHUNK_ROWS`` rows at a time through a :class:`~mlhead.cache.CacheWriter` (bounded
memory; the output appears atomically, locked against a concurrent writer) and is resumable: an
interrupted merge, or an interrupted single-run embed of the same inputs, continues where it stopped.
It is I/O bound: every row is read once and written twice (raw partial, then HDF5), as in ``embed``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from ..errors import CacheError, ConfigError
from ..fileio import storage_errors
from .checksum import verify_checksums
from .finalize import CHUNK_ROWS
from .fingerprint import describe_changes, diff_fingerprints, fingerprint_digest
from .journal import partial_dir
from .labels import read_dense
from .lock import CacheLock
from .reader import check_reusable, read_attrs, split_order
from .writer import CacheWriter

#: ``<stem>.shard-<i>-of-<n>.h5``, the name ``embed(shard=(i, n))`` gives a shard
SHARD_NAME = re.compile(r"^(?P<stem>.+)\.shard-(?P<i>\d+)-of-(?P<n>\d+)\.h5$")
#: root attrs that CacheWriter writes itself (not copied from the shards)
_WRITER_ATTRS = ("classes", "versions", "fingerprint", "fingerprint_json", "skipped", "complete")


def shard_path(output: str | os.PathLike, shard: tuple[int, int]) -> Path:
    """The shard file next to ``output``: ``x.h5`` -> ``x.shard-i-of-n.h5``."""
    out = Path(output)
    stem = out.name.removesuffix(".h5")
    return out.with_name(f"{stem}.shard-{shard[0]}-of-{shard[1]}.h5")


def merged_path(shard: str | os.PathLike) -> Path:
    """The single-run file a shard belongs to: ``x.shard-i-of-n.h5`` -> ``x.h5`` (ValueError otherwise)."""
    p = Path(shard)
    m = SHARD_NAME.match(p.name)
    if not m:
        raise ConfigError(f"{p}: not a shard file name (<name>.shard-<i>-of-<n>.h5); pass the output with -o")
    return p.with_name(m["stem"] + ".h5")


@dataclass
class ShardInfo:
    """One complete shard file: where it is, which slice, its attrs and fingerprint fields."""

    path: Path
    index: int
    count: int
    attrs: dict
    fingerprint: dict
    rows: dict[str, int]
    dim: int


def _read_shard(path: Path) -> ShardInfo | str:
    """A :class:`ShardInfo`, or one line saying what is wrong with the file."""
    if not path.is_file():
        if partial_dir(path).exists():
            return (f"{path}: shard is not complete (only the .partial of an interrupted embed exists; "
                    "rerun the same `mlhead embed --shard i/n` to finish it)")
        return f"{path}: no such shard file"
    try:
        attrs = read_attrs(path)
        with h5py.File(path, "r") as f:
            groups = [k for k in f if isinstance(f[k], h5py.Group)]
            shapes = {s: tuple(f[s]["embeddings"].shape) for s in groups}
    except (OSError, KeyError) as e:
        return f"{path}: not a readable mlhead cache ({e})"
    if not attrs.get("complete", False):
        return f"{path}: shard is not complete (its embed was interrupted; rerun it to finish)"
    fp = attrs.get("fingerprint_json")
    if not isinstance(fp, dict) or attrs.get("fingerprint") != fingerprint_digest(fp):
        return f"{path}: fingerprint missing or not matching its fields (not an mlhead embed cache, or edited)"
    shard = fp.get("shard")
    if not (isinstance(shard, list) and len(shard) == 2 and all(isinstance(x, int) for x in shard)
            and 0 <= shard[0] < shard[1]):
        return f"{path}: not a shard (made without --shard i/n)"
    if list(attrs.get("shard") or []) != shard:
        return f"{path}: attrs shard {attrs.get('shard')} disagrees with its fingerprint's {shard}"
    dims = {s[1] for s in shapes.values() if len(s) == 2}
    if len(dims) != 1:
        return f"{path}: embedding widths differ across splits ({sorted(dims)})"
    return ShardInfo(path, shard[0], shard[1], attrs, fp, {s: int(v[0]) for s, v in shapes.items()}, dims.pop())


def _read_all(paths: Sequence[Path], problems: list[str]) -> list[ShardInfo]:
    """Every readable shard of ``paths`` (a path given twice counts once); problems appended."""
    shards: list[ShardInfo] = []
    seen: set[Path] = set()
    for p in paths:
        if p.resolve() in seen:
            problems.append(f"{p}: given twice")
            continue
        seen.add(p.resolve())
        info = _read_shard(p)
        if isinstance(info, str):
            problems.append(info)
        else:
            shards.append(info)
    return shards


def _check_indices(shards: list[ShardInfo], problems: list[str]) -> None:
    """One splitting n, each index 0..n-1 exactly once (a missing one is named unless explained)."""
    counts = sorted({s.count for s in shards})
    if len(counts) > 1:
        problems.append("shards of different splittings (different n): "
                        + ", ".join(f"{s.path} is {s.index}/{s.count}" for s in shards))
        return
    n = counts[0]
    by_index: dict[int, list[ShardInfo]] = {}
    for s in shards:
        by_index.setdefault(s.index, []).append(s)
    for i, group in sorted(by_index.items()):
        if len(group) > 1:
            problems.append(f"shard {i}/{n} given more than once (overlapping shards): "
                            + ", ".join(str(s.path) for s in group))
    missing = [i for i in range(n) if i not in by_index]
    if missing and not any("shard is not complete" in p or "no such shard" in p for p in problems):
        problems.append(f"missing shard(s) {', '.join(f'{i}/{n}' for i in missing)} (e.g. "
                        f"{shard_path(_merged_guess(shards[0].path), (missing[0], n))}); given: "
                        + ", ".join(f"{s.path} ({s.index}/{n})" for s in sorted(shards, key=lambda s: s.index)))


def _check_same_inputs(shards: list[ShardInfo], problems: list[str]) -> None:
    """Every shard made from the inputs of the first one (fingerprint but ``shard``), in its shape."""
    ref = min(shards, key=lambda s: (s.index, str(s.path)))
    base = merged_fingerprint(ref.fingerprint)
    for s in shards:
        if s is ref:
            continue
        other = merged_fingerprint(s.fingerprint)
        if diff_fingerprints(base, other):
            problems.append(f"{s.path} was made from other inputs than {ref.path} "
                            f"(changed: {'; '.join(describe_changes(base, other))})")
        elif s.dim != ref.dim or sorted(s.rows) != sorted(ref.rows):
            problems.append(f"{s.path} has another shape than {ref.path} (dim {s.dim} vs {ref.dim}, "
                            f"splits {sorted(s.rows)} vs {sorted(ref.rows)})")


def _check_contents(shards: list[ShardInfo], problems: list[str]) -> None:
    """Every stored checksum of every shard recomputed: a shard modified after it was written would
    otherwise be merged into a file whose fresh checksums bless the damage. Costs one extra read of
    each shard (about 1 s per 64 MB here; see bench/bench_cache_verify.py), usually from the page cache."""
    for s in shards:
        with h5py.File(s.path, "r") as f:
            problems += verify_checksums(f)[1]


def check_shards(paths: Sequence[str | os.PathLike]) -> tuple[list[ShardInfo], list[str]]:
    """Read and cross-check shard files: (shards sorted by index, problems). Merge only when no problems.

    Problems (one line each, naming the files): unreadable, incomplete or non-shard files, a path given
    twice, different ``n``, a duplicate or missing index, other inputs or another shape than shard 0,
    a dataset changed since the shard was written (its checksum; shards without checksums pass).
    """
    problems: list[str] = []
    shards = _read_all([Path(p) for p in paths], problems)
    if not paths:
        problems.append("no shard files given")
    if not shards:
        return [], problems
    _check_indices(shards, problems)
    _check_same_inputs(shards, problems)
    _check_contents(shards, problems)
    shards.sort(key=lambda s: (s.index, str(s.path)))
    return shards, problems


def _merged_guess(p: Path) -> Path:
    try:
        return merged_path(p)
    except ValueError:
        return p


def merged_fingerprint(shard_fingerprint: dict) -> dict:
    """The single-run fingerprint of a shard's fingerprint (``"shard": None``)."""
    return {**shard_fingerprint, "shard": None}


def merge_shards(paths: Sequence[str | os.PathLike], output: str | os.PathLike | None = None,
                 force: bool = False, remove: bool = False,
                 progress: Callable[[str, int, int], None] | None = None) -> Path:
    """Join the shard files ``paths`` (any order) into ``output``: the file ``embed`` without a shard writes.

    ``output`` defaults to the shards' single-run name (``x.shard-i-of-n.h5`` -> ``x.h5``). An output
    that is already the merged cache (same fingerprint) is returned untouched; one made from other
    inputs, or incomplete, raises CacheError unless ``force``. ``remove`` deletes the shard files (and
    their lock files) after a successful merge. ``progress(split, done, total)`` after every chunk.
    Raises :class:`CacheError` (one message naming the files) when the shards do not form one
    complete set: different inputs, a missing, duplicate or incomplete shard, different ``n``.
    """
    paths = [Path(p) for p in paths]
    shards, problems = check_shards(paths)
    out = Path(output) if output is not None else (_merged_guess(shards[0].path) if shards else None)
    if shards and out == shards[0].path:
        problems.append(f"{out}: output would overwrite a shard; pass another -o")
    if problems:
        target = f" into {out}" if out else ""
        raise CacheError(f"cannot merge {len(paths)} shard file(s){target}: " + "; ".join(problems))
    fp = merged_fingerprint(shards[0].fingerprint)
    ref = shards[0]
    attrs = {k: v for k, v in ref.attrs.items() if k not in _WRITER_ATTRS}
    attrs["shard"] = []
    classes = ref.attrs.get("classes")
    if not isinstance(classes, list):
        classes = ref.fingerprint.get("classes") or []
    splits = split_order(ref.rows)
    totals = {s: sum(sh.rows[s] for sh in shards) for s in splits}
    skipped = []
    for split in splits:  # single-run order: split by split, rows in order (shard 0 first)
        for sh in shards:
            skipped += [e for e in (sh.attrs.get("skipped") or []) if isinstance(e, dict) and e.get("split") == split]
    with storage_errors(out.parent):
        out.parent.mkdir(parents=True, exist_ok=True)
    with CacheLock(out):
        if out.exists() and not force:
            check_reusable(out, fp)  # raises for a stale or incomplete file (naming what changed)
            if remove:
                remove_shards(paths)
            return out
        # resumes an interrupted merge (or single-run embed) of the same inputs: its rows are a prefix
        writer = CacheWriter(out, classes, ref.dim, totals, attrs=attrs, fingerprint=fp, force=force,
                             sync_interval=1.0)
        try:
            for split in splits:
                _copy_split(writer, split, shards, totals[split], progress)
        finally:
            writer.close()
        writer.skipped = skipped
        result = writer.finish()
    if remove:
        remove_shards(paths)
    return result


def _copy_split(writer: CacheWriter, split: str, shards: list[ShardInfo], total: int, progress) -> None:
    skip = writer.done(split)  # rows already durable from an interrupted run
    done = 0
    if progress:
        progress(split, min(skip, total), total)
    for sh in shards:
        n = sh.rows[split]
        if done + n <= skip:
            done += n
            continue
        with h5py.File(sh.path, "r") as f:
            g = f[split]
            for start in range(max(0, skip - done), n, CHUNK_ROWS):
                stop = min(start + CHUNK_ROWS, n)
                ids = [x.decode() if isinstance(x, bytes) else str(x) for x in g["ids"][start:stop]]
                writer.append(split, np.asarray(g["embeddings"][start:stop]), read_dense(g, start, stop), ids)
                if progress:
                    progress(split, done + stop, total)
        done += n


def remove_shards(paths: Sequence[str | os.PathLike]) -> None:
    """Delete shard files and their ``.lock`` files (after a successful merge)."""
    for p in map(Path, paths):
        for q in (p, Path(str(p) + ".lock")):
            try:
                q.unlink()
            except FileNotFoundError:
                pass
