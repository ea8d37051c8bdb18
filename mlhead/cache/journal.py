"""The journal of partial writes: ``<path>.partial/``, from which an interrupted embed resumes.

Rows are appended to raw files, one per split and array (``<split>.emb`` float16 N x D,
``<split>.lab`` uint8 N x C, ``<split>.ids`` one JSON string per line; with more than
:data:`~mlhead.cache.labels.CSR_MIN_CLASSES` classes the labels go sparse instead: ``<split>.labcnt``
int32 positives per row and ``<split>.labidx`` int32 class columns, so a journal of 20,000 classes
does not hold N x 20,000 bytes; ``progress.json`` says which in ``label_files``), and ``progress.json``
(written atomically after an fsync of the data) records how many rows are durable. A killed writer
(Ctrl-C, SIGKILL, power loss) is resumed from that count, and bytes past it are truncated, so the
finished cache is identical to an uninterrupted run's. ``sync_interval`` > 0 batches the fsyncs (at
most one per interval; :meth:`Journal.flush` / :meth:`Journal.close` make everything appended durable).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import scipy.sparse as sp

from ..errors import CacheError
from ..fileio import atomic_write_bytes
from .fingerprint import fingerprint_digest
from .labels import LABEL_DTYPE, choose_layout
from .resume import DISCARD, REFUSE, resume_decision

EMB_DTYPE = np.float16
#: dtype of the sparse journal's label files (``.labcnt``, ``.labidx``)
SPARSE_DTYPE = np.int32
#: version of the ``.partial`` layout; a partial of another format is discarded, never misread
PARTIAL_FORMAT = 2


def partial_dir(path) -> Path:
    """The journal folder of the cache file ``path``: ``<path>.partial``."""
    return Path(str(path) + ".partial")


def read_progress(partial) -> dict | None:
    """The progress document of a journal folder (``progress.json``), or None when there is none or
    it has another layout (:data:`PARTIAL_FORMAT`).

    Keys: format, fingerprint (digest), fingerprint_json, rows / consumed / planned (split -> count;
    ``rows`` are durable), skipped, dim, classes, attrs, updated (epoch seconds).
    Raises :class:`CacheError` naming the file when it exists but cannot be read.
    """
    prog_file = Path(partial) / "progress.json"
    if not prog_file.is_file():
        return None
    try:
        doc = json.loads(prog_file.read_text())
    except (OSError, ValueError):
        raise CacheError(f"{Path(partial)}: unreadable progress.json of an interrupted embed; "
                         "rerun with --force to discard it") from None
    return doc if isinstance(doc, dict) and doc.get("format") == PARTIAL_FORMAT else None


def _skipped_count(doc: dict) -> int:
    attrs = doc.get("attrs") if isinstance(doc.get("attrs"), dict) else {}
    return len(doc.get("skipped") or []) + len(attrs.get("skipped_at_load") or [])


class Journal:
    """Appends the rows of one cache to its ``.partial`` folder, durably and resumably.

    ``splits`` maps split name -> planned row count (an upper bound when rows may be skipped). When a
    journal of the same cache exists, writing resumes as :func:`~mlhead.cache.resume.resume_decision`
    says: same fingerprint -> resumed (even with ``force``: it holds exactly the rows a fresh run
    writes); only ``on_error`` changed harmlessly -> resumed under the new fingerprint; other inputs ->
    :class:`CacheError` naming the changed fields, unless ``force`` (then discarded). A journal of
    another shape (dim, classes, splits) or a damaged one -> CacheError unless ``force``.
    ``resume=False`` always starts afresh. :meth:`done` tells how many rows of a split are durable and
    :meth:`consumed` how many input rows (written or skipped) they cover.
    ``sync_interval``: seconds between fsyncs (0: every append is durable when it returns).
    """

    def __init__(self, path, classes: Sequence[str], dim: int, splits: dict[str, int],
                 attrs: dict | None = None, fingerprint: dict | None = None, force: bool = False,
                 resume: bool = True, sync_interval: float = 0.0):
        self.path = Path(path)
        self.partial = partial_dir(self.path)
        self.classes = list(classes)
        self.dim = int(dim)
        self.planned = dict(splits)
        self.attrs = dict(attrs or {})
        self.fingerprint = dict(fingerprint or {})
        self.digest = fingerprint_digest(self.fingerprint)
        self.sync_interval = float(sync_interval)
        self.skipped: list[dict] = []
        #: how label rows are journaled: "dense" (.lab) or "csr" (.labcnt + .labidx); a resumed journal keeps its own
        self.label_files = choose_layout(len(self.classes))
        self.rows = {s: 0 for s in splits}
        self._consumed = {s: 0 for s in splits}
        self.resumed_from: dict[str, int] = {s: 0 for s in splits}
        self._handles: dict[str, tuple] = {}
        self._dirty: set[str] = set()
        self._last_sync = time.monotonic()
        self._finished = False
        self._open(force, resume)

    # -- opening: resume or start afresh
    def _progress_doc(self) -> dict:
        return {"format": PARTIAL_FORMAT, "fingerprint": self.digest, "fingerprint_json": self.fingerprint,
                "rows": dict(self.rows), "consumed": dict(self._consumed), "planned": self.planned,
                "skipped": self.skipped, "dim": self.dim, "classes": self.classes, "label_files": self.label_files,
                "attrs": json.loads(json.dumps(self.attrs, default=str)), "updated": time.time()}

    def _write_progress(self) -> None:
        atomic_write_bytes(self.partial / "progress.json",
                           json.dumps(self._progress_doc(), sort_keys=True).encode(), durable=True)

    def _previous(self, force: bool) -> dict | None:
        """The progress of a journal this run may resume (None: start afresh)."""
        try:
            old = read_progress(self.partial) if self.partial.is_dir() else None
        except CacheError:
            if not force:
                raise
            return None
        if old is None:
            return None
        before = old.get("fingerprint_json") if isinstance(old.get("fingerprint_json"), dict) else {}
        decision = resume_decision(before, self.fingerprint, force, old_skipped=_skipped_count(old))
        if decision.action == REFUSE:
            raise CacheError(f"{self.partial}: an interrupted embed with different inputs exists "
                             f"(changed: {', '.join(decision.changed) or 'unknown'}; "
                             f"{'; '.join(decision.details)}); rerun with --force to discard it")
        if decision.action == DISCARD:
            return None
        if old.get("dim") != self.dim or old.get("classes") != self.classes \
                or set(old.get("rows", {})) - set(self.planned):
            if not force:
                raise CacheError(f"{self.partial}: interrupted embed has another shape (dim/classes/splits); "
                                 "rerun with --force to discard it")
            return None
        return old

    def _restore(self, old: dict) -> None:
        """Take the durable counts of ``old`` and truncate the raw files to them (CacheError: damaged)."""
        self.label_files = old.get("label_files", "dense")  # journals from before sparse label files: dense
        for split in self.planned:
            self.rows[split] = int(old["rows"].get(split, 0))
            self._consumed[split] = int(old.get("consumed", old["rows"]).get(split, self.rows[split]))
            self._truncate(split, self.rows[split])  # drop bytes written after the last flush

    def _open(self, force: bool, resume: bool) -> None:
        old = self._previous(force) if resume else None
        if old is not None:
            try:
                self._restore(old)
            except CacheError:
                if not force:
                    raise
                old = None  # damaged: --force starts afresh
                self.label_files = choose_layout(len(self.classes))
                self.rows = {s: 0 for s in self.planned}
                self._consumed = {s: 0 for s in self.planned}
        if old is not None:
            self.resumed_from = dict(self.rows)
            self.skipped = list(old.get("skipped", []))
        else:
            if self.partial.exists():
                shutil.rmtree(self.partial)
            self.partial.mkdir(parents=True)
        self._write_progress()

    def files(self, split: str) -> tuple[Path, Path, Path]:
        """The raw files of ``split``: (embeddings, labels, ids); labels: ``.lab`` (dense journal) or
        ``.labidx`` (sparse journal, with :meth:`counts_file`)."""
        lab = f"{split}.lab" if self.label_files == "dense" else f"{split}.labidx"
        return (self.partial / f"{split}.emb", self.partial / lab, self.partial / f"{split}.ids")

    def counts_file(self, split: str) -> Path:
        """The positives-per-row file of ``split`` in a sparse journal (``<split>.labcnt``)."""
        return self.partial / f"{split}.labcnt"

    def _raw_files(self, split: str) -> tuple[Path, ...]:
        """The files :meth:`append` writes, in the order of :meth:`_raw_bytes`."""
        emb, lab, ids = self.files(split)
        return (emb, ids, lab) + ((self.counts_file(split),) if self.label_files == "csr" else ())

    def _raw_bytes(self, emb: np.ndarray, lab: np.ndarray, ids: list[str]) -> tuple[bytes, ...]:
        out = (emb.tobytes(), "".join(json.dumps(i) + "\n" for i in ids).encode())
        if self.label_files == "dense":
            return out + (lab.tobytes(),)
        m = sp.csr_matrix(lab)
        m.sort_indices()
        return out + (m.indices.astype(SPARSE_DTYPE).tobytes(), np.diff(m.indptr).astype(SPARSE_DTYPE).tobytes())

    def _sizes(self, split: str, n: int) -> list[tuple[Path, int]]:
        """(file, byte size for ``n`` rows) of the fixed-width files (CacheError: counts file short)."""
        emb, lab, _ = self.files(split)
        if self.label_files == "dense":
            return [(emb, n * self.dim * 2), (lab, n * len(self.classes))]
        cnt = self.counts_file(split)
        counts = np.fromfile(cnt, dtype=SPARSE_DTYPE, count=n) if cnt.exists() else np.zeros(0, SPARSE_DTYPE)
        if len(counts) < n:
            raise CacheError(f"{cnt}: shorter than its recorded {n} rows (partial damaged); "
                             "rerun with --force to discard it")
        return [(emb, n * self.dim * 2), (cnt, n * 4), (lab, int(counts.sum(dtype=np.int64)) * 4)]

    def _truncate(self, split: str, n: int) -> None:
        ids = self.files(split)[2]
        for p, size in self._sizes(split, n):
            if p.exists():
                if p.stat().st_size < size:
                    raise CacheError(f"{p}: shorter than its recorded {n} rows (partial damaged); "
                                     "rerun with --force to discard it")
                with open(p, "r+b") as fh:
                    fh.truncate(size)
            elif n:
                raise CacheError(f"{p}: missing (partial damaged); rerun with --force to discard it")
        if ids.exists():
            _truncate_lines(ids, n)

    def label_chunks(self, split: str, rows: int):
        """The first :meth:`done` label rows of ``split``, ``rows`` at a time: dense uint8 arrays (dense
        journal) or csr_matrix (sparse journal). Call after :meth:`close`."""
        n, C = self.done(split), len(self.classes)
        lab = self.files(split)[1]
        if self.label_files == "dense":
            mm = np.memmap(lab, dtype=LABEL_DTYPE, mode="r", shape=(n, C)) if n and C else np.zeros((n, C), LABEL_DTYPE)
            for i in range(0, n, rows):
                yield np.asarray(mm[i:i + rows])
            return
        indptr = np.concatenate([[0], np.cumsum(np.fromfile(self.counts_file(split), SPARSE_DTYPE, count=n),
                                                dtype=np.int64)]) if n else np.zeros(1, np.int64)
        idx = np.memmap(lab, dtype=SPARSE_DTYPE, mode="r") if indptr[-1] else np.zeros(0, SPARSE_DTYPE)
        for i in range(0, n, rows):
            ptr = indptr[i:i + rows + 1]
            cols = np.asarray(idx[ptr[0]:ptr[-1]])
            yield sp.csr_matrix((np.ones(len(cols), LABEL_DTYPE), cols, ptr - ptr[0]), shape=(len(ptr) - 1, C))

    # -- progress
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

    # -- appending
    def _handle(self, split: str):
        if split not in self._handles:
            self._handles[split] = tuple(open(p, "ab") for p in self._raw_files(split))
        return self._handles[split]

    def append(self, split: str, embeddings, labels, ids: Sequence[str], skipped: Iterable[dict] = ()) -> None:
        """Append rows to ``split`` (durable now, or at the next sync when ``sync_interval`` > 0).

        embeddings: N x D (any float; stored float16); labels: N x C in {0,1}; ids: N strings.
        ``skipped``: dicts ``{id, error}`` of rows of this batch that were skipped.
        Raises ValueError on shape mismatch, non-finite or float16-overflowing embeddings, labels
        other than 0/1, or an unknown split.
        """
        if split not in self.planned:
            raise ValueError(f"append to {split!r}: not a planned split ({', '.join(self.planned)})")
        emb, lab, ids = self._checked(split, embeddings, labels, ids)
        skipped = list(skipped)
        for fh, data in zip(self._handle(split), self._raw_bytes(emb, lab, ids)):
            fh.write(data)
            fh.flush()  # to the OS now (survives a killed process); fsync'd at the next sync
        self.rows[split] = self.done(split) + len(ids)
        self._consumed[split] = self.consumed(split) + len(ids) + len(skipped)
        self.skipped.extend({"split": split, **s} for s in skipped)
        self._dirty.add(split)
        if self.sync_interval <= 0 or time.monotonic() - self._last_sync >= self.sync_interval:
            self.flush()

    def _checked(self, split: str, embeddings, labels, ids) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """(float16 N x D, uint8 N x C, ids) or ValueError naming what a valid cache cannot hold."""
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
        return emb, lab, ids

    def flush(self) -> None:
        """Make every appended row durable (fsync the data, then ``progress.json``)."""
        if self._finished:
            return
        for split in sorted(self._dirty):
            for fh in self._handles.get(split, ()):
                fh.flush()
                os.fsync(fh.fileno())
        self._dirty.clear()
        self._write_progress()
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

    def remove(self) -> None:
        """Delete the journal folder (its rows are in the finished cache); later flushes do nothing."""
        self.close()
        self._finished = True
        shutil.rmtree(self.partial, ignore_errors=True)


def _truncate_lines(path: Path, n: int) -> None:
    """Cut the ids file ``path`` after its ``n``-th line (CacheError when it has fewer)."""
    with open(path, "r+b") as fh:
        data = fh.read()
        pos = 0
        for _ in range(n):
            nl = data.find(b"\n", pos)
            if nl < 0:
                raise CacheError(f"{path}: fewer than its recorded {n} ids (partial damaged); "
                                 "rerun with --force to discard it")
            pos = nl + 1
        fh.truncate(pos)


def read_ids(path: Path, n: int | None = None) -> list[str]:
    """The ids of a journal's ``<split>.ids`` (one JSON string per line), the first ``n``.

    A missing file gives ``[]``; an unfinished last line (killed mid-write) is not a row. Raises
    :class:`CacheError` when ``n`` is given and fewer ids are there.
    """
    if not path.exists():
        return []
    out = []
    with open(path, "rb") as fh:
        for line in fh:
            if n is not None and len(out) >= n:
                break
            if not line.endswith(b"\n"):
                break
            out.append(json.loads(line))
    if n is not None and len(out) != n:
        raise CacheError(f"{path}: {len(out)} ids for {n} rows (partial damaged)")
    return out
