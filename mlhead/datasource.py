"""Where ``fit`` takes its train minibatches from: the split in memory, or streamed from the HDF5 cache.

Both sources answer one question, :meth:`batches`: "the minibatches of epoch ``e`` for the seeded
generators ``gens``" -- an iterator of ``{seed: (X B x D in the compute dtype, Y B x C float32)}``,
every seed's batch at the same step (runs sharing a seed share the sequence; see :mod:`mlhead.train`).

* :class:`InMemorySource` holds the embeddings in the cache's storage dtype (float16; or float32 once
  normalized) and the labels as uint8 (dense) or CSR on the device, and casts each minibatch to the
  compute dtype: no float32 copy of the split, no float32 N x C labels (issue #19: in-memory overhead).
  The epoch is ``torch.randperm(N, generator=gens[seed])`` cut into batches, as before.
* :class:`StreamingSource` reads the split from the HDF5 file in contiguous blocks of
  :data:`BLOCK_ROWS` rows (the chunk rows the cache writer uses, :data:`mlhead.cache.finalize.EMB_CHUNK_ROWS`,
  so one block is one HDF5 chunk read). Per epoch the block order is shuffled (numpy
  ``default_rng((STREAM_SEED, epoch))``: the same for every seed, so a stacked run still equals its own
  single fit); consecutive blocks fill a shuffle buffer of ``window_rows`` rows, each buffer is permuted
  with ``torch.randperm(rows, generator=gens[seed])`` and cut into batches (the rows left over at the
  end of a buffer start the next buffer's first batch, so every batch but the epoch's last is full). A
  prefetch thread (``threading.Thread`` + a 2-slot semaphore) reads the next buffer while the current
  one trains, so at most two buffers exist. When the split fits one buffer the blocks are read in file
  order and the single permutation is ``torch.randperm(N)``: the very epoch of :class:`InMemorySource`
  (same batches, same order, same values; tested).

:func:`train_source` picks one from ``--memory-budget``, a bound on what fit holds on top of the process
it starts in: a runtime reserve (:data:`RUNTIME_RESERVE`), the val split, the train labels and then either
the train embeddings (in memory) or two shuffle buffers (streamed, sized to fit). Not in the budget
("stated overhead", docs/scaling.md): the process itself when fit starts (:func:`baseline_rss`: the
interpreter, torch and the libraries, ~0.5 GiB), the heads and their AdamW state (16 bytes x parameters x
runs), per-step activations beyond the reserve, and the validation logits (runs x N_val x C float32).
"""

from __future__ import annotations

import queue
import re
import threading
from dataclasses import dataclass
from typing import Callable, Iterator

import h5py
import numpy as np
import scipy.sparse as sp
import torch

from . import normalize
from .cache.finalize import EMB_CHUNK_ROWS
from .cache.labels import layout_of, read_dense, read_sparse
from .errors import CacheError, ConfigError

#: ``--memory-budget`` default: this fraction of the RAM available when fit starts (psutil)
DEFAULT_BUDGET_FRACTION = 0.5
#: rows per streamed block: one HDF5 chunk of the embeddings (see mlhead.cache.finalize)
BLOCK_ROWS = EMB_CHUNK_ROWS
#: fixed seed of the per-epoch block order when streaming (independent of the run seeds)
STREAM_SEED = 0x5EED
#: budget kept for what the process allocates after fit starts besides the data (allocator and oneDNN
#: caches of the first steps, scikit-learn at the first validation): measured 0.25-0.3 GiB of RSS growth
#: in a 1-epoch fit of a 1,024-row cache (bench/bench_scale.py), hidden 64
RUNTIME_RESERVE = 256 << 20
#: share of the budget left to the two shuffle buffers after the resident data (the rest: slack for
#: HDF5 chunk caches, the carried rows, the minibatch casts)
BUFFER_SHARE = 0.8

_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
Batch = dict  # seed -> (X B x D, Y B x C float32)


def parse_size(text: str | int) -> int:
    """Bytes of a size such as ``1G``, ``512M``, ``1.5GiB``, ``800MB`` or ``1000000`` (binary units:
    K = 1024). Raises ConfigError naming ``--memory-budget`` for anything else or a size <= 0."""
    if isinstance(text, int):
        value = text
    else:
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kmgt]?)(?:i?b)?\s*", str(text).lower())
        if not m:
            raise ConfigError(f"--memory-budget {text!r} is not a size; use e.g. 1G, 512M, 1.5GiB")
        value = int(float(m.group(1)) * _UNITS[m.group(2)])
    if value <= 0:
        raise ConfigError(f"--memory-budget {text!r} must be > 0")
    return value


def default_budget() -> int:
    """:data:`DEFAULT_BUDGET_FRACTION` of the memory available now (``psutil.virtual_memory().available``),
    in bytes."""
    import psutil

    return int(psutil.virtual_memory().available * DEFAULT_BUDGET_FRACTION)


def baseline_rss() -> int:
    """The process's resident memory now, in bytes (``psutil.Process().memory_info().rss``: the interpreter,
    torch and the libraries already loaded). Not part of ``--memory-budget``: fit prints it as the overhead
    the budget comes on top of."""
    import psutil

    return int(psutil.Process().memory_info().rss)


def format_size(n: float) -> str:
    """``n`` bytes as a short binary size, e.g. ``1.50 GiB``."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.2f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.2f} GiB"


class Labels:
    """A split's labels on the device: dense uint8 N x C, or CSR (``indptr`` N+1, ``indices`` nnz, int64
    tensors) when the cache stores CSR. :meth:`rows` gives float32 B x C rows of an index tensor."""

    def __init__(self, dense: torch.Tensor | None = None, csr: sp.csr_matrix | None = None, device="cpu"):
        self.dense = None if dense is None else dense.to(device, torch.uint8)
        if csr is not None:
            self.shape = tuple(csr.shape)
            self.indptr = torch.from_numpy(csr.indptr.astype(np.int64)).to(device)
            self.indices = torch.from_numpy(csr.indices.astype(np.int64)).to(device)
        else:
            self.shape = tuple(self.dense.shape)

    @property
    def nbytes(self) -> int:
        if self.dense is not None:
            return self.dense.numel()
        return 8 * (self.indptr.numel() + self.indices.numel())

    def rows(self, idx: torch.Tensor) -> torch.Tensor:
        """Rows ``idx`` (int64 tensor on the device) as float32 B x C multi-hot."""
        if self.dense is not None:
            return self.dense.index_select(0, idx).float()
        start, stop = self.indptr[idx], self.indptr[idx + 1]
        lens = stop - start
        row = torch.repeat_interleave(torch.arange(len(idx), device=idx.device), lens)
        offset = torch.arange(int(lens.sum()), device=idx.device) - torch.repeat_interleave(lens.cumsum(0) - lens, lens)
        out = torch.zeros(len(idx), self.shape[1], dtype=torch.float32, device=idx.device)
        out[row, self.indices[start.repeat_interleave(lens) + offset]] = 1.0
        return out

    def counts(self) -> torch.Tensor:
        """Positives per class (C, float64, on the host)."""
        if self.dense is not None:
            return self.dense.to(torch.float64).sum(0).cpu()
        return torch.bincount(self.indices.cpu(), minlength=self.shape[1]).to(torch.float64)

    def max(self) -> int:
        """The largest label value (CSR stores ones only)."""
        return int(self.dense.max()) if self.dense is not None and self.dense.numel() else 1

    def host(self):
        """The labels on the host: a dense uint8 tensor or the scipy CSR matrix (what
        :func:`mlhead.class_weights.resolve` takes)."""
        if self.dense is not None:
            return self.dense.cpu()
        indices = self.indices.cpu().numpy()
        return sp.csr_matrix((np.ones(len(indices), np.uint8), indices, self.indptr.cpu().numpy()), shape=self.shape)


def read_labels(g: h5py.Group, device="cpu") -> Labels:
    """The labels of split group ``g`` as stored (dense -> dense, CSR -> CSR), on ``device``."""
    if layout_of(g) == "csr":
        return Labels(csr=read_sparse(g), device=device)
    return Labels(dense=torch.from_numpy(read_dense(g)), device=device)


class InMemorySource:
    """The train split in memory. ``X``: N x D (storage dtype) on the device, cast to ``compute`` per
    batch; ``labels``: :class:`Labels`."""

    streaming = False

    def __init__(self, X: torch.Tensor, labels: Labels, compute: torch.dtype):
        self.X, self.labels, self.compute = X, labels, compute

    @property
    def n_rows(self) -> int:
        return int(self.X.shape[0])

    @property
    def dim(self) -> int:
        return int(self.X.shape[1])

    @property
    def n_classes(self) -> int:
        return int(self.labels.shape[1])

    def batches(self, gens: dict[int, torch.Generator], batch_size: int, epoch: int) -> Iterator[Batch]:
        """Epoch ``epoch``'s minibatches: per seed ``randperm(N, generator=gens[seed])`` cut into
        ``batch_size`` slices (the last may be shorter)."""
        dev = self.X.device
        perms = {s: torch.randperm(self.n_rows, generator=g).to(dev) for s, g in gens.items()}
        for start in range(0, self.n_rows, batch_size):
            yield {s: self._rows(p[start:start + batch_size]) for s, p in perms.items()}

    def _rows(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.X.index_select(0, idx).to(self.compute), self.labels.rows(idx)


@dataclass
class _Window:
    """One shuffle buffer: rows ``ids`` (global row numbers) with embeddings ``X`` (device, storage dtype)."""

    ids: torch.Tensor
    X: torch.Tensor


class StreamingSource:
    """The train split streamed from ``path``'s group ``split`` in shuffle buffers of ``window_rows``
    rows (rounded down to whole blocks; all blocks when >= N), read in blocks of ``block_rows`` rows (see
    the module docstring). ``transform``: applied to each buffer after reading (normalization);
    ``compute``: dtype of the batches; ``labels``: the split's :class:`Labels` (held in memory)."""

    streaming = True

    def __init__(self, path, split: str, labels: Labels, compute: torch.dtype, device, window_rows: int,
                 transform: Callable[[torch.Tensor], torch.Tensor] | None = None, block_rows: int = BLOCK_ROWS):
        self.block_rows = block_rows
        self.path, self.split, self.labels, self.compute = path, split, labels, compute
        self.device = torch.device(device)
        self.transform = transform
        with h5py.File(path, "r") as f:
            ds = f[split]["embeddings"]
            self.n_rows, self.dim = (int(x) for x in ds.shape)
        blocks = -(-self.n_rows // self.block_rows)  # a buffer holds whole blocks; at least one, at most all
        per = blocks if window_rows >= self.n_rows else min(blocks, max(1, window_rows // self.block_rows))
        self.window_rows = self.block_rows * per

    @property
    def n_classes(self) -> int:
        return int(self.labels.shape[1])

    def block_order(self, epoch: int) -> np.ndarray:
        """Start rows of the blocks in the order epoch ``epoch`` reads them (file order when the split
        fits one buffer)."""
        starts = np.arange(0, self.n_rows, self.block_rows)
        if len(starts) * self.block_rows <= self.window_rows:
            return starts
        return starts[np.random.default_rng((STREAM_SEED, epoch)).permutation(len(starts))]

    def _windows(self, epoch: int) -> list[np.ndarray]:
        starts = self.block_order(epoch)
        per = self.window_rows // self.block_rows
        return [starts[i:i + per] for i in range(0, len(starts), per)]

    def _read(self, ds: h5py.Dataset, starts: np.ndarray) -> _Window:
        """One buffer: the blocks at ``starts``, read into one preallocated array (no extra copy)."""
        stops = np.minimum(starts + self.block_rows, self.n_rows)
        out = np.empty((int((stops - starts).sum()), self.dim), ds.dtype)
        at = 0
        for a, b in zip(starts, stops):
            ds.read_direct(out, np.s_[a:b], np.s_[at:at + b - a])
            at += b - a
        ids = np.concatenate([np.arange(a, b) for a, b in zip(starts, stops)])
        X = torch.from_numpy(out).to(self.device)
        if self.transform is not None:
            X = self.transform(X)
        return _Window(torch.from_numpy(ids).to(self.device), X)

    def _prefetch(self, windows: list[np.ndarray], out: queue.Queue, slots: threading.Semaphore,
                  stop: threading.Event) -> None:
        """Thread body: read each buffer into ``out`` (at most two alive, ``slots``); an exception is put
        in the queue instead, for :meth:`_stream` to raise in the training thread."""
        try:
            with h5py.File(self.path, "r") as f:
                ds = f[self.split]["embeddings"]
                for starts in windows:
                    slots.acquire()
                    if stop.is_set():
                        return
                    out.put(self._read(ds, starts))
        except BaseException as e:  # noqa: BLE001 -- handed to the consumer, which raises it
            out.put(e)

    def _stream(self, epoch: int) -> Iterator[_Window]:
        """The epoch's buffers, read ahead by one in a thread."""
        windows = self._windows(epoch)
        out: queue.Queue = queue.Queue()
        slots, stop = threading.Semaphore(2), threading.Event()
        t = threading.Thread(target=self._prefetch, args=(windows, out, slots, stop), daemon=True,
                             name="mlhead-prefetch")
        t.start()
        try:
            for _ in windows:
                w = out.get()
                if isinstance(w, OSError):  # h5py's I/O errors: a file removed, truncated or unreadable
                    raise CacheError(f"{self.path}: reading /{self.split}/embeddings failed ({w})") from w
                if isinstance(w, BaseException):  # anything else is a bug: its own trace
                    raise w
                yield w
                del w
                slots.release()
        finally:
            stop.set()
            slots.release()
            t.join()

    def batches(self, gens: dict[int, torch.Generator], batch_size: int, epoch: int) -> Iterator[Batch]:
        """Epoch ``epoch``'s minibatches (see the module docstring): each buffer permuted per seed with
        ``gens[seed]`` and cut into ``batch_size`` rows; rows left over at a buffer's end are carried
        into the next buffer's first batch (only the epoch's last batch may be shorter)."""
        carry: dict = {}  # seed -> (ids, X) of fewer than batch_size rows
        for w in self._stream(epoch):
            n = len(w.ids)
            perms = {s: torch.randperm(n, generator=g).to(self.device) for s, g in gens.items()}
            pos = 0
            if carry:
                pos = min(batch_size - len(next(iter(carry.values()))[0]), n)
                carry = {s: self._cat(carry[s], w, p[:pos]) for s, p in perms.items()}
                if len(next(iter(carry.values()))[0]) == batch_size:
                    yield self._emit(carry)
                    carry = {}
            for start in range(pos, n - batch_size + 1, batch_size):
                yield {s: self._rows(w, p[start:start + batch_size]) for s, p in perms.items()}
                pos = start + batch_size
            if pos < n:
                carry = {s: self._cat(carry.get(s), w, p[pos:]) for s, p in perms.items()}
            del w, perms
        if carry:
            yield self._emit(carry)

    def _cat(self, carried, w: _Window, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``carried`` (ids, X) rows, or nothing, followed by buffer ``w``'s rows ``idx``."""
        ids, X = w.ids.index_select(0, idx), w.X.index_select(0, idx)
        if carried is None:
            return ids, X
        return torch.cat([carried[0], ids]), torch.cat([carried[1], X])

    def _emit(self, carry: dict) -> Batch:
        return {s: (X.to(self.compute), self.labels.rows(ids)) for s, (ids, X) in carry.items()}

    def _rows(self, w: _Window, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return w.X.index_select(0, idx).to(self.compute), self.labels.rows(w.ids.index_select(0, idx))


def _streamed_stats(path, split: str, mode: str) -> dict[str, torch.Tensor]:
    """:func:`mlhead.normalize.fit_stats` of a split read in blocks (float64 sums; unbiased std)."""
    if mode != "standardize":
        return {}
    with h5py.File(path, "r") as f:
        ds = f[split]["embeddings"]
        n, d = ds.shape
        s, ss = np.zeros(d), np.zeros(d)
        for a in range(0, n, 64 * BLOCK_ROWS):
            x = ds[a:a + 64 * BLOCK_ROWS].astype(np.float64)
            s += x.sum(0)
            ss += (x * x).sum(0)
    mean = s / n
    std = np.sqrt(np.maximum(ss - n * mean * mean, 0) / max(n - 1, 1))
    std = np.where(std > 1e-6, std, 1.0)
    return {"input_mean": torch.from_numpy(mean.astype(np.float32)), "input_std": torch.from_numpy(std.astype(np.float32))}


def split_bytes(shape: tuple[int, int], itemsize: int, labels: Labels) -> int:
    """Bytes a split holds in memory: embeddings ``shape`` x ``itemsize`` plus its labels."""
    return int(shape[0]) * int(shape[1]) * itemsize + labels.nbytes


def train_source(cache, split: str, mode: str, compute: torch.dtype, device, budget: int,
                 resident: int = 0):
    """(source, normalization stats) of ``cache``'s ``split`` for ``fit``.

    In memory (:class:`InMemorySource`) when the split's embeddings (storage dtype) and labels fit
    ``budget`` bytes after :data:`RUNTIME_RESERVE` and ``resident`` bytes held elsewhere (e.g. the val
    split); the process's own memory (:func:`baseline_rss`) is not counted; else streamed (:class:`StreamingSource`) with two shuffle
    buffers sharing :data:`BUFFER_SHARE` of what is left.
    ``mode``: ``--normalize`` (statistics from the train split, in memory or in blocks). Raises
    CacheError for a split that is missing or has non-0/1 labels, ConfigError when the budget cannot
    hold the labels and one block per buffer.
    """
    with h5py.File(cache.path, "r") as f:
        g = cache._group(f, split)
        labels = read_labels(g, device)
        ds = g["embeddings"]
        shape, itemsize = tuple(ds.shape), ds.dtype.itemsize
    reserve = RUNTIME_RESERVE
    resident += reserve
    if labels.max() > 1:
        raise CacheError(f"{cache.path}: labels must be multi-hot 0/1")
    if split_bytes(shape, itemsize, labels) + resident <= budget:
        X = cache.load_embeddings(split, torch.float32 if mode != "none" else None)
        stats = normalize.fit_stats(X, mode)
        X = normalize.apply(X, mode, stats)
        return InMemorySource(X.to(device, compute if mode != "none" else X.dtype), labels, compute), stats
    left = budget - resident - labels.nbytes
    row = shape[1] * (itemsize if mode == "none" else 4)
    window = int(left * BUFFER_SHARE / 2) // row
    if window < BLOCK_ROWS:
        raise ConfigError(f"--memory-budget {format_size(budget)} is too small to stream {cache.path}'s {split} split: "
                          f"it must hold the runtime reserve ({format_size(reserve)}), the labels "
                          f"({format_size(labels.nbytes)}), the val split ({format_size(resident - reserve)}) and two "
                          f"buffers of {BLOCK_ROWS} rows ({format_size(2 * BLOCK_ROWS * row)})")
    stats = _streamed_stats(cache.path, split, mode)
    transform = None if mode == "none" else (lambda X: normalize.apply(X.float(), mode, stats).to(compute))
    return StreamingSource(cache.path, split, labels, compute, device, window, transform, BLOCK_ROWS), stats
