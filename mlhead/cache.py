"""HDF5 embedding cache: streaming, resumable, atomic writer; reader; fingerprint.

File layout (``<cache-dir>/<dataset>/<backbone>.h5``)::

    /<split>/embeddings   N x D float16
    /<split>/labels       N x C uint8 (multi-hot)
    /<split>/ids          N variable-length UTF-8 strings
    attrs: classes (JSON list), backbone, weights_sha256, preprocessing (JSON), split_mode,
           split_seed, fingerprint (sha256 hex), fingerprint_json, versions (JSON), complete (bool),
           skipped (JSON list of {split, id, error}), plus free-form extras.

Writing never touches the final path until the cache is complete:

* rows are appended to raw files in ``<path>.partial/`` (one per split and array) and a
  ``progress.json`` (written atomically with tmp+rename after an fsync of the data) records how
  many rows are durable; a killed writer (SIGKILL, power loss) is resumed from that count, and
  bytes past it are truncated, so the result is identical to an uninterrupted run;
* ``finish()`` streams the raw rows into ``<path>.tmp.h5`` chunk by chunk (bounded memory),
  sets ``complete=True``, fsyncs and ``os.replace``-s it onto ``<path>``;
* an exclusive ``fcntl`` lock on ``<path>.lock`` keeps a second writer out.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import h5py
import numpy as np
import torch

from . import __version__

EMB_DTYPE = np.float16
LABEL_DTYPE = np.uint8
CHUNK_ROWS = 4096


class CacheError(RuntimeError):
    """A cache is missing, incomplete, stale, locked or malformed (message names the path)."""


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

    def load(self, split: str) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
        """Load one split into memory.

        Returns ``(embeddings float32 N x D, labels uint8 N x C, ids list[str])``.
        Raises :class:`CacheError` naming the split and the splits available.
        """
        if split not in self.splits:
            raise CacheError(f"{self.path}: no split {split!r}; splits: {', '.join(self.splits)}")
        with h5py.File(self.path, "r") as f:
            g = f[split]
            emb = torch.from_numpy(g["embeddings"][...].astype(np.float32))
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

    ``wait=False`` fails at once with :class:`CacheError`; ``wait=True`` blocks.
    """

    def __init__(self, path: Path, wait: bool = False):
        self.lock_path = Path(str(path) + ".lock")
        self.wait = wait
        self._fh = None

    def __enter__(self):
        self.lock_path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.lock_path, "a+")
        try:
            fcntl.flock(self._fh, fcntl.LOCK_EX | (0 if self.wait else fcntl.LOCK_NB))
        except BlockingIOError:
            self._fh.seek(0)
            holder = self._fh.read().strip() or "another process"
            self._fh.close()
            raise CacheError(f"{self.lock_path.with_suffix('')}: another `mlhead embed` ({holder}) is writing "
                             "this cache; wait for it or use --wait-lock") from None
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


class CacheWriter:
    """Streaming, resumable writer of one cache file.

    ``splits`` maps split name -> planned row count (an upper bound when rows may be skipped).
    Append with :meth:`append` (in split order), then :meth:`finish`. When a ``.partial``
    directory with the same fingerprint exists, writing resumes: :meth:`done` tells how many rows
    of a split are already durable. A partial with another fingerprint raises :class:`CacheError`
    naming the fields that changed, unless ``force`` (then it is discarded).
    """

    def __init__(self, path, classes: Sequence[str], dim: int, splits: dict[str, int],
                 attrs: dict | None = None, fingerprint: dict | None = None, force: bool = False):
        self.path = Path(path)
        self.partial = Path(str(self.path) + ".partial")
        self.classes = list(classes)
        self.dim = int(dim)
        self.planned = dict(splits)
        self.attrs = dict(attrs or {})
        self.fingerprint = dict(fingerprint or {})
        self.digest = fingerprint_digest(self.fingerprint)
        self.skipped: list[dict] = []
        self.progress = {"fingerprint": self.digest, "fingerprint_json": self.fingerprint,
                         "rows": {s: 0 for s in splits}, "consumed": {s: 0 for s in splits},
                         "skipped": [], "dim": self.dim,
                         "classes": self.classes}
        self._open(force)

    # -- partial directory management
    def _open(self, force: bool) -> None:
        prog_file = self.partial / "progress.json"
        if self.partial.exists() and prog_file.exists() and not force:
            old = json.loads(prog_file.read_text())
            if old.get("fingerprint") != self.digest:
                changed = diff_fingerprints(old.get("fingerprint_json", {}), self.fingerprint)
                raise CacheError(f"{self.partial}: an interrupted embed with different inputs exists "
                                 f"(changed: {', '.join(changed) or 'unknown'}); rerun with --force to discard it")
            self.progress = old
            self.skipped = list(old.get("skipped", []))
            for split, n in self.progress["rows"].items():  # drop bytes written after the last flush
                self._truncate(split, n)
        else:
            if self.partial.exists():
                shutil.rmtree(self.partial)
            self.partial.mkdir(parents=True)
            _fsync_write_json(prog_file, self.progress)

    def _files(self, split: str) -> tuple[Path, Path, Path]:
        return (self.partial / f"{split}.emb", self.partial / f"{split}.lab", self.partial / f"{split}.ids")

    def _truncate(self, split: str, n: int) -> None:
        emb, lab, ids = self._files(split)
        C = len(self.classes)
        for p, size in ((emb, n * self.dim * 2), (lab, n * C)):
            if p.exists():
                with open(p, "r+b") as fh:
                    fh.truncate(size)
        if ids.exists():
            lines = ids.read_text().splitlines(keepends=True)[:n]
            ids.write_text("".join(lines))

    def done(self, split: str) -> int:
        """Rows of ``split`` already durable (from an earlier, interrupted run)."""
        return int(self.progress["rows"].get(split, 0))

    def consumed(self, split: str) -> int:
        """Input rows of ``split`` already processed (written or skipped); where a resume starts."""
        return int(self.progress.get("consumed", self.progress["rows"]).get(split, 0))

    def append(self, split: str, embeddings, labels, ids: Sequence[str], skipped: Iterable[dict] = ()) -> None:
        """Append rows to ``split`` and make them durable.

        embeddings: N x D (any float; stored float16); labels: N x C in {0,1}; ids: N strings.
        ``skipped``: dicts ``{id, error}`` of rows of this batch that were skipped.
        Raises ValueError on shape mismatch.
        """
        emb = np.ascontiguousarray(np.asarray(embeddings, dtype=np.float32).astype(EMB_DTYPE))
        lab = np.ascontiguousarray(np.asarray(labels).astype(LABEL_DTYPE))
        n = len(ids)
        if emb.shape != (n, self.dim) or lab.shape != (n, len(self.classes)):
            raise ValueError(f"append to {split!r}: embeddings {emb.shape}, labels {lab.shape} for {n} ids; "
                             f"expected ({n}, {self.dim}) and ({n}, {len(self.classes)})")
        f_emb, f_lab, f_ids = self._files(split)
        for p, data in ((f_emb, emb.tobytes()), (f_lab, lab.tobytes()),
                        (f_ids, "".join(i.replace("\n", " ") + "\n" for i in ids).encode())):
            with open(p, "ab") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
        skipped = list(skipped)
        self.progress["rows"][split] = self.done(split) + n
        self.progress.setdefault("consumed", {})[split] = self.consumed(split) + n + len(skipped)
        self.skipped.extend({"split": split, **s} for s in skipped)
        self.progress["skipped"] = self.skipped
        _fsync_write_json(self.partial / "progress.json", self.progress)

    def finish(self) -> Path:
        """Write the final HDF5 file atomically and remove the partial directory. Returns the path."""
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
                    lab_mm = np.memmap(f_lab, dtype=LABEL_DTYPE, mode="r", shape=(n, C))
                    for i in range(0, n, CHUNK_ROWS):
                        e[i:i + CHUNK_ROWS] = emb_mm[i:i + CHUNK_ROWS]
                        lab_ds[i:i + CHUNK_ROWS] = lab_mm[i:i + CHUNK_ROWS]
                    del emb_mm, lab_mm
                ids = f_ids.read_text().splitlines() if n else []
                g.create_dataset("ids", data=np.array(ids, dtype=object), dtype=h5py.string_dtype())
            _set_root_attrs(f, self.classes, self.attrs, self.fingerprint, self.skipped, complete=False)
            f.attrs["complete"] = True
            f.flush()
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)
        shutil.rmtree(self.partial, ignore_errors=True)
        return self.path


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
                        attrs=attrs, fingerprint=fp, force=True)
        for split, (emb, lab, ids) in splits.items():
            w.append(split, emb, lab, list(ids))
        return w.finish()


def check_reusable(path: Path, fingerprint: dict) -> None:
    """Raise :class:`CacheError` if the complete cache at ``path`` was made from other inputs.

    The message names every fingerprint field that changed and how to rebuild (``--force``).
    """
    attrs = read_attrs(path)
    if attrs.get("fingerprint") == fingerprint_digest(fingerprint):
        return
    old = attrs.get("fingerprint_json", {})
    changed = diff_fingerprints(old if isinstance(old, dict) else {}, fingerprint)
    raise CacheError(f"{path}: cache is stale: inputs changed ({', '.join(changed) or 'fingerprint'}); "
                     "rerun with --force to rebuild it")


def latest_cache(cache_dir: str | os.PathLike) -> Path:
    """The most recently modified complete ``*.h5`` under ``cache_dir`` (CacheError if none)."""
    root = Path(cache_dir)
    files = sorted((p for p in root.rglob("*.h5") if not p.name.endswith(".tmp.h5")),
                   key=lambda p: p.stat().st_mtime, reverse=True)
    if not files:
        raise CacheError(f"no cache under {root}/: run `mlhead embed` first or pass --cache PATH")
    return files[0]
