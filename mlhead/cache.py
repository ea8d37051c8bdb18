"""HDF5 embedding cache: streaming, resumable, atomic writer; reader; fingerprint; info/verify.

File layout (``<cache-dir>/<dataset>/<backbone>.h5``)::

    /<split>/embeddings   N x D float16
    /<split>/labels       N x C uint8 (multi-hot)
    /<split>/ids          N variable-length UTF-8 strings
    attrs: classes (JSON list), backbone, weights_sha256, preprocessing (JSON), split_mode,
           split_seed, fingerprint (sha256 hex), fingerprint_json, versions (JSON), complete (bool),
           skipped (JSON list of {split, id, where, error}: rows left out while embedding),
           skipped_at_load (JSON list of {id, where, error}: rows the dataset loader left out),
           plus free-form extras.

Writing never touches the final path until the cache is complete:

* rows are appended to raw files in ``<path>.partial/`` (one per split and array; ids as one JSON
  string per line) and a ``progress.json`` (written atomically with tmp+rename after an fsync of
  the data) records how many rows are durable; a killed writer (Ctrl-C, SIGKILL, power loss) is
  resumed from that count, and bytes past it are truncated, so the result is identical to an
  uninterrupted run. ``sync_interval`` > 0 batches the fsyncs (at most one per interval;
  :meth:`CacheWriter.flush` / :meth:`CacheWriter.close` make everything appended durable);
* ``finish()`` streams the raw rows into ``<path>.tmp.h5`` chunk by chunk (bounded memory),
  sets ``complete=True``, fsyncs and ``os.replace``-s it onto ``<path>``;
* an exclusive ``fcntl`` lock on ``<path>.lock`` keeps a second writer out.

:func:`cache_info` describes a cache (complete, incomplete or only a partial); :func:`verify_cache`
recomputes its invariants and lists every problem.
"""

from __future__ import annotations

from .errors import CacheError  # noqa: F401  (re-exported)

import fcntl
import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import h5py
import numpy as np
import torch

from . import __version__

EMB_DTYPE = np.float16
LABEL_DTYPE = np.uint8
CHUNK_ROWS = 4096




def library_versions() -> dict[str, str]:
    """Versions of the libraries that shape embeddings (recorded in every cache)."""
    import importlib.metadata as md

    out = {"mlhead": __version__, "torch": torch.__version__, "numpy": np.__version__}
    for pkg in ("timm", "transformers", "h5py", "pillow"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


def fingerprint_digest(fields: dict) -> str:
    """sha256 hex of the canonical JSON of ``fields`` (sorted keys)."""
    return hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()


def diff_fingerprints(old: dict, new: dict) -> list[str]:
    """Names of the top-level fingerprint fields whose values differ (sorted)."""
    keys = set(old) | set(new)
    return sorted(k for k in keys if json.dumps(old.get(k), sort_keys=True, default=str)
                  != json.dumps(new.get(k), sort_keys=True, default=str))


#: fingerprint fields that are digests: shown as what they stand for
_DIGEST_FIELDS = {"inputs": "dataset files (paths, sizes or modification times)",
                  "split_ids": "split membership", "weights_sha256": "weights file contents"}


def _short(v, n: int = 40) -> str:
    s = v if isinstance(v, str) else json.dumps(v, sort_keys=True, default=str)
    return s if len(s) <= n else s[:n - 3] + "..."


def describe_changes(old: dict, new: dict) -> list[str]:
    """One readable line per changed fingerprint field: ``name: old -> new`` (nested dicts by key)."""
    out = []
    for k in diff_fingerprints(old, new):
        a, b = old.get(k), new.get(k)
        if k in _DIGEST_FIELDS:
            out.append(f"{k}: {_DIGEST_FIELDS[k]} changed ({_short(a, 12)} -> {_short(b, 12)})")
        elif isinstance(a, dict) and isinstance(b, dict):
            sub = diff_fingerprints(a, b)
            out.append(f"{k}: " + ", ".join(f"{s} {_short(a.get(s))} -> {_short(b.get(s))}" for s in sub))
        else:
            out.append(f"{k}: {_short(a)} -> {_short(b)}")
    return out


# --------------------------------------------------------------------------------------------
# reading


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


def _decode_attr(v):
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
        return {k: _decode_attr(v) for k, v in f.attrs.items()}


def open_cache(path: str | os.PathLike, require_complete: bool = True) -> Cache:
    """Open a cache file written by :func:`write_cache` or :class:`CacheWriter`.

    Raises :class:`CacheError` when the file is missing, not HDF5, or (with
    ``require_complete``) not marked complete.
    """
    p = Path(path)
    if not p.is_file():
        hint = " (an interrupted embed is resumed by rerunning it)" if Path(str(p) + ".partial").exists() else ""
        raise CacheError(f"cache file not found: {p}{hint}")
    try:
        with h5py.File(p, "r") as f:
            attrs = {k: _decode_attr(v) for k, v in f.attrs.items()}
            if require_complete and not attrs.get("complete", False):
                raise CacheError(f"{p}: cache is not complete (an embed was interrupted); rerun `mlhead embed`")
            splits = [k for k in f.keys() if isinstance(f[k], h5py.Group)]
            shapes = {s: tuple(f[s]["embeddings"].shape) for s in splits}
    except (OSError, KeyError) as e:
        raise CacheError(f"{p}: not a readable mlhead cache ({e})") from None
    order = {"train": 0, "val": 1, "test": 2}
    splits.sort(key=lambda s: (order.get(s, 9), s))
    return Cache(path=p, splits=splits, classes=list(attrs.get("classes", [])), attrs=attrs, shapes=shapes)


# --------------------------------------------------------------------------------------------
# writing


class CacheLock:
    """Exclusive advisory lock on ``<path>.lock`` (fcntl); one writer per cache.

    ``wait=False`` fails at once with :class:`CacheError` naming the holder; ``wait=True`` blocks
    until the holder releases it (``on_wait(message)`` is called once before blocking).
    """

    def __init__(self, path: Path, wait: bool = False, on_wait: Callable[[str], None] | None = None):
        self.path = Path(path)
        self.lock_path = Path(str(path) + ".lock")
        self.wait = wait
        self.on_wait = on_wait
        self._fh = None

    def _holder(self) -> str:
        try:
            return self.lock_path.read_text().strip() or "another process"
        except OSError:
            return "another process"

    def __enter__(self):
        self.lock_path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.lock_path, "a+")
        try:
            fcntl.flock(self._fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = self._holder()
            if not self.wait:
                self._fh.close()
                raise CacheError(f"{self.path}: another `mlhead embed` ({holder}) is writing this cache; "
                                 "wait for it or use --wait-lock") from None
            if self.on_wait:
                self.on_wait(f"{self.path}: waiting for another `mlhead embed` ({holder}) to finish this cache")
            fcntl.flock(self._fh, fcntl.LOCK_EX)
        self._fh.seek(0)
        self._fh.truncate()
        self._fh.write(f"pid {os.getpid()}")
        self._fh.flush()
        return self

    def __exit__(self, *exc):
        fcntl.flock(self._fh, fcntl.LOCK_UN)
        self._fh.close()


def _fsync_write_json(path: Path, obj: dict) -> None:
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w") as fh:
        json.dump(obj, fh, sort_keys=True)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


#: version of the ``.partial`` layout; a partial of another format is discarded, never misread
PARTIAL_FORMAT = 2


class CacheWriter:
    """Streaming, resumable writer of one cache file.

    ``splits`` maps split name -> planned row count (an upper bound when rows may be skipped).
    Append with :meth:`append` (in split order), then :meth:`finish`. When a ``.partial``
    directory with the same fingerprint exists, writing resumes: :meth:`done` tells how many rows
    of a split are already durable and :meth:`consumed` how many input rows (written or skipped)
    they cover. A partial with another fingerprint raises :class:`CacheError` naming the fields that
    changed, unless ``force`` (then it is discarded; a partial with the *same* fingerprint is still
    resumed, since it holds exactly the rows a fresh run would write). The one change that resumes
    without ``force`` is ``on_error`` raise -> skip: the rows a stopped ``raise`` run wrote are the
    rows a ``skip`` run writes. ``resume=False`` always starts afresh.
    ``sync_interval``: seconds between fsyncs (0: every append is durable when it returns).
    """

    def __init__(self, path, classes: Sequence[str], dim: int, splits: dict[str, int],
                 attrs: dict | None = None, fingerprint: dict | None = None, force: bool = False,
                 resume: bool = True, sync_interval: float = 0.0):
        self.path = Path(path)
        self.partial = Path(str(self.path) + ".partial")
        self.classes = list(classes)
        self.dim = int(dim)
        self.planned = dict(splits)
        self.attrs = dict(attrs or {})
        self.fingerprint = dict(fingerprint or {})
        self.digest = fingerprint_digest(self.fingerprint)
        self.sync_interval = float(sync_interval)
        self.skipped: list[dict] = []
        self.rows = {s: 0 for s in splits}
        self._consumed = {s: 0 for s in splits}
        self.resumed_from: dict[str, int] = {s: 0 for s in splits}
        self._handles: dict[str, tuple] = {}
        self._dirty: set[str] = set()
        self._last_sync = time.monotonic()
        self._finished = False
        self._open(force, resume)

    # -- partial directory management
    def _progress_doc(self) -> dict:
        return {"format": PARTIAL_FORMAT, "fingerprint": self.digest, "fingerprint_json": self.fingerprint,
                "rows": dict(self.rows), "consumed": dict(self._consumed), "planned": self.planned,
                "skipped": self.skipped, "dim": self.dim, "classes": self.classes,
                "attrs": json.loads(json.dumps(self.attrs, default=str)), "updated": time.time()}

    def _open(self, force: bool, resume: bool) -> None:
        prog_file = self.partial / "progress.json"
        old = None
        if resume and self.partial.is_dir() and prog_file.exists():
            try:
                old = json.loads(prog_file.read_text())
                if not isinstance(old, dict) or old.get("format") != PARTIAL_FORMAT:
                    old = None  # another layout: cannot be resumed safely, start afresh
            except (OSError, ValueError):
                if not force:
                    raise CacheError(f"{self.partial}: unreadable progress.json of an interrupted embed; "
                                     "rerun with --force to discard it") from None
                old = None
        if old is not None and old.get("fingerprint") != self.digest:
            before = old.get("fingerprint_json") or {}
            changed = diff_fingerprints(before, self.fingerprint)
            if changed == ["on_error"] and before.get("on_error") == "raise":
                old["fingerprint"], old["fingerprint_json"] = self.digest, self.fingerprint
            elif force:
                old = None
            else:
                raise CacheError(f"{self.partial}: an interrupted embed with different inputs exists "
                                 f"(changed: {', '.join(changed) or 'unknown'}; "
                                 f"{'; '.join(describe_changes(before, self.fingerprint))}); "
                                 "rerun with --force to discard it")
        if old is not None and (old.get("dim") != self.dim or old.get("classes") != self.classes
                                or set(old.get("rows", {})) - set(self.planned)):
            if not force:
                raise CacheError(f"{self.partial}: interrupted embed has another shape (dim/classes/splits); "
                                 "rerun with --force to discard it")
            old = None
        if old is not None:
            try:
                for split in self.planned:
                    self.rows[split] = int(old["rows"].get(split, 0))
                    self._consumed[split] = int(old.get("consumed", old["rows"]).get(split, self.rows[split]))
                    self._truncate(split, self.rows[split])  # drop bytes written after the last flush
            except CacheError:
                if not force:
                    raise
                old = None  # damaged: --force starts afresh
                self.rows = {s: 0 for s in self.planned}
                self._consumed = {s: 0 for s in self.planned}
        if old is not None:
            self.resumed_from = dict(self.rows)
            self.skipped = list(old.get("skipped", []))
            _fsync_write_json(prog_file, self._progress_doc())
            return
        if self.partial.exists():
            shutil.rmtree(self.partial)
        self.partial.mkdir(parents=True)
        _fsync_write_json(prog_file, self._progress_doc())

    def _files(self, split: str) -> tuple[Path, Path, Path]:
        return (self.partial / f"{split}.emb", self.partial / f"{split}.lab", self.partial / f"{split}.ids")

    def _truncate(self, split: str, n: int) -> None:
        emb, lab, ids = self._files(split)
        C = len(self.classes)
        for p, size in ((emb, n * self.dim * 2), (lab, n * C)):
            if p.exists():
                if p.stat().st_size < size:
                    raise CacheError(f"{p}: shorter than its recorded {n} rows (partial damaged); "
                                     "rerun with --force to discard it")
                with open(p, "r+b") as fh:
                    fh.truncate(size)
            elif n:
                raise CacheError(f"{p}: missing (partial damaged); rerun with --force to discard it")
        if ids.exists():
            with open(ids, "r+b") as fh:
                data = fh.read()
                pos, count = 0, 0
                while count < n:
                    nl = data.find(b"\n", pos)
                    if nl < 0:
                        raise CacheError(f"{ids}: fewer than its recorded {n} ids (partial damaged); "
                                         "rerun with --force to discard it")
                    pos, count = nl + 1, count + 1
                fh.truncate(pos)

    def done(self, split: str) -> int:
        """Rows of ``split`` written so far (including those of an earlier, interrupted run)."""
        return int(self.rows.get(split, 0))

    def consumed(self, split: str) -> int:
        """Input rows of ``split`` processed so far (written or skipped); where a resume starts."""
        return int(self._consumed.get(split, 0))

    @property
    def progress(self) -> dict:
        """The progress document (as written to ``progress.json`` at the next flush)."""
        return self._progress_doc()

    def _handle(self, split: str):
        if split not in self._handles:
            self._handles[split] = tuple(open(p, "ab") for p in self._files(split))
        return self._handles[split]

    def append(self, split: str, embeddings, labels, ids: Sequence[str], skipped: Iterable[dict] = ()) -> None:
        """Append rows to ``split`` (durable now, or at the next sync when ``sync_interval`` > 0).

        embeddings: N x D (any float; stored float16); labels: N x C in {0,1}; ids: N strings.
        ``skipped``: dicts ``{id, error}`` of rows of this batch that were skipped.
        Raises ValueError on shape mismatch or an unknown split.
        """
        if split not in self.planned:
            raise ValueError(f"append to {split!r}: not a planned split ({', '.join(self.planned)})")
        with np.errstate(over="ignore", invalid="ignore"):  # overflow is reported below, as an error
            emb = np.ascontiguousarray(np.asarray(embeddings, dtype=np.float32).astype(EMB_DTYPE))
        lab = np.ascontiguousarray(np.asarray(labels).astype(LABEL_DTYPE))
        ids = [str(i) for i in ids]
        n = len(ids)
        if emb.shape != (n, self.dim) or lab.shape != (n, len(self.classes)):
            raise ValueError(f"append to {split!r}: embeddings {emb.shape}, labels {lab.shape} for {n} ids; "
                             f"expected ({n}, {self.dim}) and ({n}, {len(self.classes)})")
        if not np.isfinite(emb).all():
            raw = np.abs(np.asarray(embeddings, dtype=np.float32))
            raise ValueError(f"append to {split!r}: embeddings hold NaN/inf or values beyond float16's range "
                             f"(max |x| {np.nanmax(np.where(np.isfinite(raw), raw, np.nan), initial=0.0):.4g}); "
                             "the cache stores float16")
        if lab.size and lab.max() > 1:
            raise ValueError(f"append to {split!r}: labels must be 0/1 (found {int(lab.max())})")
        skipped = list(skipped)
        f_emb, f_lab, f_ids = self._handle(split)
        for fh, data in ((f_emb, emb.tobytes()), (f_lab, lab.tobytes()),
                         (f_ids, "".join(json.dumps(i) + "\n" for i in ids).encode())):
            fh.write(data)
            fh.flush()  # to the OS now (survives a killed process); fsync'd at the next sync
        self.rows[split] = self.done(split) + n
        self._consumed[split] = self.consumed(split) + n + len(skipped)
        self.skipped.extend({"split": split, **s} for s in skipped)
        self._dirty.add(split)
        if self.sync_interval <= 0 or time.monotonic() - self._last_sync >= self.sync_interval:
            self.flush()

    def flush(self) -> None:
        """Make every appended row durable (fsync the data, then ``progress.json``)."""
        if self._finished:
            return
        for split in sorted(self._dirty):
            for fh in self._handles.get(split, ()):
                fh.flush()
                os.fsync(fh.fileno())
        self._dirty.clear()
        _fsync_write_json(self.partial / "progress.json", self._progress_doc())
        self._last_sync = time.monotonic()

    def close(self) -> None:
        """Flush and close the raw files (the partial stays, to be resumed). Idempotent."""
        if self._finished:
            return
        try:
            self.flush()
        finally:
            for handles in self._handles.values():
                for fh in handles:
                    fh.close()
            self._handles.clear()

    def finish(self) -> Path:
        """Write the final HDF5 file atomically and remove the partial directory. Returns the path."""
        self.close()
        tmp = Path(str(self.path) + ".tmp.h5")
        C = len(self.classes)
        with h5py.File(tmp, "w") as f:
            for split in self.planned:
                n = self.done(split)
                f_emb, f_lab, f_ids = self._files(split)
                g = f.create_group(split)
                e = g.create_dataset("embeddings", shape=(n, self.dim), dtype=EMB_DTYPE,
                                     chunks=(min(max(n, 1), 1024), self.dim) if n else None)
                lab_ds = g.create_dataset("labels", shape=(n, C), dtype=LABEL_DTYPE)
                if n:
                    emb_mm = np.memmap(f_emb, dtype=EMB_DTYPE, mode="r", shape=(n, self.dim))
                    for i in range(0, n, CHUNK_ROWS):
                        e[i:i + CHUNK_ROWS] = emb_mm[i:i + CHUNK_ROWS]
                    del emb_mm
                    if C:
                        lab_mm = np.memmap(f_lab, dtype=LABEL_DTYPE, mode="r", shape=(n, C))
                        for i in range(0, n, CHUNK_ROWS):
                            lab_ds[i:i + CHUNK_ROWS] = lab_mm[i:i + CHUNK_ROWS]
                        del lab_mm
                ids = _read_ids(f_ids, n)
                g.create_dataset("ids", data=np.array(ids, dtype=object), dtype=h5py.string_dtype())
            _set_root_attrs(f, self.classes, self.attrs, self.fingerprint, self.skipped, complete=False)
            f.attrs["complete"] = True
            f.flush()
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)
        _fsync_dir(self.path.parent)
        self._finished = True
        shutil.rmtree(self.partial, ignore_errors=True)
        return self.path


def _read_ids(path: Path, n: int | None = None) -> list[str]:
    """The ids of a partial's ``<split>.ids`` (one JSON string per line), the first ``n``."""
    if not path.exists():
        return []
    out = []
    with open(path, "rb") as fh:
        for line in fh:
            if n is not None and len(out) >= n:
                break
            if not line.endswith(b"\n"):
                break  # an unfinished last line (killed mid-write) is not a row
            out.append(json.loads(line))
    if n is not None and len(out) != n:
        raise CacheError(f"{path}: {len(out)} ids for {n} rows (partial damaged)")
    return out


def _set_root_attrs(f: h5py.File, classes, attrs: dict, fingerprint: dict, skipped, complete: bool) -> None:
    f.attrs["classes"] = json.dumps(list(classes))
    f.attrs["versions"] = json.dumps(library_versions())
    f.attrs["fingerprint"] = fingerprint_digest(fingerprint)
    f.attrs["fingerprint_json"] = json.dumps(fingerprint, sort_keys=True, default=str)
    f.attrs["skipped"] = json.dumps(list(skipped))
    for k, v in attrs.items():
        f.attrs[k] = v if isinstance(v, (str, int, float, bool, np.generic)) else json.dumps(v, default=str)
    f.attrs["complete"] = complete


def write_cache(path, splits: dict, classes: Sequence[str], attrs: dict | None = None,
                fingerprint: dict | None = None) -> Path:
    """Write a complete cache from in-memory arrays (used by ``mulan`` and by tests).

    ``splits``: split name -> ``(embeddings N x D, labels N x C, ids)``. Atomic like the streaming
    writer. Raises ValueError when shapes disagree.
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
        return w.finish()


def check_reusable(path: Path, fingerprint: dict) -> None:
    """Raise :class:`CacheError` if the cache at ``path`` cannot be reused for ``fingerprint``:
    made from other inputs (the message names every changed field, old -> new), not complete, or
    not a readable cache. Every message says how to rebuild (``--force``).
    """
    try:
        attrs = read_attrs(path)
    except OSError as e:
        raise CacheError(f"{path}: exists but is not a readable mlhead cache ({e}); "
                         "rerun with --force to rebuild it") from None
    if not attrs.get("complete", False):
        raise CacheError(f"{path}: exists but is not a complete cache; rerun with --force to rebuild it")
    if attrs.get("fingerprint") == fingerprint_digest(fingerprint):
        return
    old = attrs.get("fingerprint_json", {})
    old = old if isinstance(old, dict) else {}
    changed = diff_fingerprints(old, fingerprint)
    raise CacheError(f"{path}: cache is stale: inputs changed ({', '.join(changed) or 'fingerprint'}): "
                     f"{'; '.join(describe_changes(old, fingerprint))}; rerun with --force to rebuild it")


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


# --------------------------------------------------------------------------------------------
# info / verify


def _split_order(names) -> list[str]:
    order = {"train": 0, "val": 1, "test": 2}
    return sorted(names, key=lambda s: (order.get(s, 9), s))


def _label_stats(chunks, C: int) -> dict:
    n = pos = empty = 0
    for lab in chunks:
        lab = np.asarray(lab)
        if lab.size == 0 and lab.shape[0] == 0:
            continue
        per_row = lab.astype(np.int64).sum(1) if C else np.zeros(lab.shape[0], np.int64)
        n += lab.shape[0]
        pos += int(per_row.sum())
        empty += int((per_row == 0).sum())
    return {"label_cardinality": pos / n if n else 0.0, "label_density": pos / (n * C) if n and C else 0.0,
            "rows_without_labels": empty}


def _chunked(ds, n: int):
    for i in range(0, n, CHUNK_ROWS):
        yield ds[i:i + CHUNK_ROWS]


def _partial_info(partial: Path) -> dict | None:
    prog_file = partial / "progress.json"
    if not prog_file.is_file():
        return {"path": str(partial), "readable": False} if partial.exists() else None
    try:
        prog = json.loads(prog_file.read_text())
    except (OSError, ValueError):
        return {"path": str(partial), "readable": False}
    C, D = len(prog.get("classes", [])), int(prog.get("dim", 0))
    splits = {}
    for split in _split_order(prog.get("planned") or prog.get("rows", {})):
        n = int(prog.get("rows", {}).get(split, 0))
        lab = partial / f"{split}.lab"
        stats = _label_stats((np.memmap(lab, dtype=LABEL_DTYPE, mode="r", shape=(n, C)),)
                             if n and C and lab.is_file() and lab.stat().st_size >= n * C else (), C)
        splits[split] = {"rows": n, "dim": D, "n_classes": C, "planned": (prog.get("planned") or {}).get(split),
                         "consumed": int(prog.get("consumed", {}).get(split, n)), **stats}
    return {"path": str(partial), "readable": True, "format": prog.get("format"), "splits": splits,
            "classes": prog.get("classes", []), "dim": D, "fingerprint": prog.get("fingerprint", ""),
            "fingerprint_fields": prog.get("fingerprint_json", {}), "skipped": len(prog.get("skipped", [])),
            "attrs": prog.get("attrs", {}), "updated": prog.get("updated")}


def _resolve_cache_arg(path) -> Path:
    p = Path(path)
    return Path(str(p)[:-len(".partial")]) if p.name.endswith(".partial") else p


def cache_info(path) -> dict:
    """Describe a cache: a complete file, an incomplete one, or only the ``.partial`` of an interrupted
    embed (``state`` says which). Keys: path, state, complete, splits (split -> rows, dim, n_classes,
    label_cardinality, label_density, rows_without_labels), classes, n_classes, dim, backbone, dataset,
    fingerprint, fingerprint_fields, versions, skipped (embed-time), skipped_at_load, skipped_total,
    skipped_rows (``{when: load|embed, id, where, error, [split]}``),
    partial (progress of an interrupted (re)build, or None), attrs. CacheError when nothing is there.
    """
    p = _resolve_cache_arg(path)
    partial = _partial_info(Path(str(p) + ".partial"))
    if not p.is_file() and partial is None:
        raise CacheError(f"no cache at {p} (nor an interrupted embed at {p}.partial)")
    info: dict = {"path": str(p), "complete": False, "partial": partial}
    if p.is_file():
        try:
            with h5py.File(p, "r") as f:
                attrs = {k: _decode_attr(v) for k, v in f.attrs.items()}
                classes = attrs.get("classes", [])
                classes = classes if isinstance(classes, list) else []
                C = len(classes)
                splits = {}
                for s in _split_order(k for k in f.keys() if isinstance(f[k], h5py.Group)):
                    g = f[s]
                    emb, lab = g.get("embeddings"), g.get("labels")
                    n = emb.shape[0] if emb is not None else 0
                    d = emb.shape[1] if emb is not None and emb.ndim == 2 else None
                    c = lab.shape[1] if lab is not None and lab.ndim == 2 else None
                    stats = _label_stats(_chunked(lab, lab.shape[0]), c or 0) if lab is not None and c else {}
                    splits[s] = {"rows": int(n), "dim": d, "n_classes": c, **stats}
        except OSError as e:
            raise CacheError(f"{p}: not a readable HDF5 cache ({e})") from None
        complete = bool(attrs.get("complete", False))
        skipped = attrs.get("skipped", [])
        at_load = attrs.get("skipped_at_load", [])
        fields = attrs.get("fingerprint_json", {})
        info.update(
            state="complete" if complete else "incomplete (not marked complete: an interrupted or foreign write)",
            complete=complete, splits=splits, classes=classes, n_classes=C,
            dim=next((v["dim"] for v in splits.values() if v["dim"]), None),
            backbone=attrs.get("backbone"), dataset=attrs.get("dataset"), precision=attrs.get("precision"),
            fingerprint=attrs.get("fingerprint", ""), fingerprint_fields=fields if isinstance(fields, dict) else {},
            versions=attrs.get("versions", {}),
            skipped=len(skipped) if isinstance(skipped, list) else 0,
            skipped_at_load=len(at_load) if isinstance(at_load, list) else 0,
            skipped_rows=([{"when": "load", **r} for r in at_load] if isinstance(at_load, list) else [])
            + ([{"when": "embed", **r} for r in skipped] if isinstance(skipped, list) else []),
            attrs={k: v for k, v in attrs.items() if k not in ("fingerprint_json", "skipped", "skipped_at_load")})
        if partial is not None:
            info["state"] += "; an interrupted rebuild is pending in " + partial["path"]
    else:
        fields = partial.get("fingerprint_fields", {}) if partial.get("readable") else {}
        at_load = partial.get("attrs", {}).get("skipped_at_load", []) if partial.get("readable") else []
        info.update(
            state="partial: interrupted embed, not a usable cache yet (rerun the same `mlhead embed` to resume)"
            if partial.get("readable") else "partial: interrupted embed with unreadable progress (embed --force)",
            splits=partial.get("splits", {}), classes=partial.get("classes", []),
            n_classes=len(partial.get("classes", [])), dim=partial.get("dim"),
            backbone=fields.get("backbone"), dataset=fields.get("dataset"), precision=fields.get("precision"),
            fingerprint=partial.get("fingerprint", ""), fingerprint_fields=fields,
            versions=fields.get("versions", {}), skipped=partial.get("skipped", 0),
            skipped_at_load=len(at_load) if isinstance(at_load, list) else 0,
            skipped_rows=[{"when": "load", **r} for r in at_load] if isinstance(at_load, list) else [],
            attrs=partial.get("attrs", {}))
    info["skipped_total"] = info["skipped"] + info["skipped_at_load"]
    return info


def verify_cache(path) -> list[str]:
    """Recompute a cache's invariants; return every problem found (empty list: ok).

    Checks: readable HDF5 marked complete; classes a list of unique names; each split has embeddings
    (N x D float16), labels (N x C uint8) and ids (N strings) with equal N, the same D in every split
    and C == len(classes); no NaN/inf embeddings; labels only 0/1; ids non-empty and unique within and
    across splits; the fingerprint digest matches its fields; skipped lists readable.
    """
    p = _resolve_cache_arg(path)
    if not p.is_file():
        hint = " (an interrupted embed exists: rerun it to finish)" if Path(str(p) + ".partial").exists() else ""
        return [f"{p}: no cache file{hint}"]
    problems: list[str] = []
    try:
        f = h5py.File(p, "r")
    except OSError as e:
        return [f"{p}: not a readable HDF5 file ({e})"]
    with f:
        attrs = {k: _decode_attr(v) for k, v in f.attrs.items()}
        if attrs.get("complete") is not True and attrs.get("complete") != 1:
            problems.append("attrs: not marked complete")
        classes = attrs.get("classes")
        if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
            problems.append(f"attrs: classes is not a JSON list of names ({_short(classes)})")
            classes = None
        else:
            dup = sorted({c for c in classes if classes.count(c) > 1})
            if dup:
                problems.append(f"attrs: duplicate class names {dup[:5]}")
            if not classes:
                problems.append("attrs: no classes")
        fields = attrs.get("fingerprint_json")
        if "fingerprint" not in attrs:
            problems.append("attrs: no fingerprint")
        elif isinstance(fields, dict) and fingerprint_digest(fields) != attrs["fingerprint"]:
            problems.append("attrs: fingerprint does not match fingerprint_json (attrs edited?)")
        for key in ("skipped", "skipped_at_load"):
            if key in attrs and not isinstance(attrs[key], list):
                problems.append(f"attrs: {key} is not a JSON list")
        groups = [k for k in f.keys() if isinstance(f[k], h5py.Group)]
        stray = [k for k in f.keys() if k not in groups]
        if stray:
            problems.append(f"unexpected root datasets {stray}")
        if not groups:
            problems.append("no splits")
        dims: dict[str, int] = {}
        seen: dict[str, str] = {}
        cross: list[str] = []
        for s in _split_order(groups):
            g = f[s]
            missing = [k for k in ("embeddings", "labels", "ids") if not isinstance(g.get(k), h5py.Dataset)]
            if missing:
                problems.append(f"{s}: missing {', '.join(missing)}")
                continue
            emb, lab, ids_ds = g["embeddings"], g["labels"], g["ids"]
            if emb.ndim != 2:
                problems.append(f"{s}/embeddings: shape {emb.shape}, expected N x D")
            if lab.ndim != 2:
                problems.append(f"{s}/labels: shape {lab.shape}, expected N x C")
            if ids_ds.ndim != 1:
                problems.append(f"{s}/ids: shape {ids_ds.shape}, expected N")
            if emb.dtype != EMB_DTYPE:
                problems.append(f"{s}/embeddings: dtype {emb.dtype}, expected float16")
            if lab.dtype != LABEL_DTYPE:
                problems.append(f"{s}/labels: dtype {lab.dtype}, expected uint8")
            kind = ids_ds.dtype.kind
            if kind not in "OSU" or (kind == "O" and h5py.check_string_dtype(ids_ds.dtype) is None):
                problems.append(f"{s}/ids: dtype {ids_ds.dtype}, expected strings")
            rows = {"embeddings": emb.shape[0] if emb.ndim else 0, "labels": lab.shape[0] if lab.ndim else 0,
                    "ids": ids_ds.shape[0] if ids_ds.ndim else 0}
            if len(set(rows.values())) != 1:
                problems.append(f"{s}: row counts differ ({', '.join(f'{k} {v}' for k, v in rows.items())})")
            if emb.ndim == 2:
                dims[s] = emb.shape[1]
                bad = 0
                for chunk in _chunked(emb, emb.shape[0]):
                    bad += int((~np.isfinite(np.asarray(chunk, dtype=np.float32))).any(axis=1).sum())
                if bad:
                    problems.append(f"{s}/embeddings: {bad} rows with NaN or inf")
            if lab.ndim == 2:
                if classes is not None and lab.shape[1] != len(classes):
                    problems.append(f"{s}/labels: {lab.shape[1]} columns but {len(classes)} classes")
                bad = 0
                for chunk in _chunked(lab, lab.shape[0]):
                    bad += int((np.asarray(chunk) > 1).sum() + (np.asarray(chunk) < 0).sum())
                if bad:
                    problems.append(f"{s}/labels: {bad} values not in {{0, 1}}")
            if ids_ds.ndim == 1:
                ids = [x.decode("utf-8", "replace") if isinstance(x, bytes) else str(x) for x in ids_ds[...]]
                empty = sum(1 for i in ids if not i)
                if empty:
                    problems.append(f"{s}/ids: {empty} empty ids")
                counts: dict[str, int] = {}
                for i in ids:
                    counts[i] = counts.get(i, 0) + 1
                dup = [i for i, c in counts.items() if c > 1]
                if dup:
                    problems.append(f"{s}/ids: {len(dup)} duplicated ids (e.g. {_short(dup[:3])})")
                for i in counts:
                    if i in seen:
                        cross.append(f"{i!r} in {seen[i]} and {s}")
                    else:
                        seen[i] = s
        if len(set(dims.values())) > 1:
            problems.append(f"embedding widths differ across splits ({dims})")
        if cross:
            problems.append(f"{len(cross)} ids in more than one split (e.g. {'; '.join(cross[:3])})")
    return problems
