"""Stage one: run a frozen backbone once over a dataset and stream embeddings into the HDF5 cache.

Decoding/resizing (images) runs in DataLoader worker processes (or a thread pool) and overlaps with the
forward pass; texts are tokenized once per window (``Encoder.read_block``) and each batch is padded from
those token ids (on CPU in this process by default: no worker, see ``docs/performance.md``). The forward
pass runs under ``torch.inference_mode`` in eval mode, channels_last for CNNs, with autocast per
``--precision`` (bf16 on CPUs with AMX/AVX512-BF16, fp16 on CUDA).
Texts are batched by length: within each window of ``--sort-window`` batches (default
:data:`SORT_WINDOW`) the rows are sorted by token count (longest first) and cut into batches, so each
batch pads to its own longest row, not to a random long one; once the whole window is encoded its rows
are appended in dataset order. Rows of the same size (images) keep dataset order, one batch per window.
The batch plan is a pure function of the rows and the options (:func:`batch_plan`, one window at a time).
Windows are appended to the cache's ``.partial`` directory and made durable (fsync at most every
``SYNC_INTERVAL`` seconds, and always when the run stops: error, Ctrl-C), so an interrupted run
resumes from the last flushed window (a kill loses the window being encoded) and finishes with the
same file an uninterrupted run writes (same batches, same order). ``--random-init`` encoders are
seeded (``mlhead.encoders.RANDOM_INIT_SEED``), so they are reproducible too. The loop knows encoders only through :class:`mlhead.encoders.Encoder`
(``read`` rows, ``collate`` batches, ``encode``, ``fingerprint``): no modality or family branches here.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, NamedTuple, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from .encoders import Encoder, create_encoder
from .encoders.base import RowBlock, read_one
from .cache import CacheError, CacheFields, CacheLock, CacheWriter, cache_fields, check_reusable
from .datasets import DatasetError, LoadedDataset, check_options, get_loader
from .device import autocast, resolve_device, resolve_precision
from .errors import ConfigError, NumericalError
from .fileio import storage_errors

ON_ERROR = ("raise", "skip")
DEFAULT_BACKBONE = {"image": "mobilenetv2_100", "text": "minilm"}
#: seconds between fsyncs of the partial cache (a kill loses at most this much work, plus the window being encoded)
SYNC_INTERVAL = 1.0
#: batches per length-sorted window (``--sort-window``): 32 batches keep 95-98 % of the padded tokens real on
#: arXiv/Reuters titles and abstracts (dataset order: 42-64 %), and a kill loses at most one window
SORT_WINDOW = 32


@dataclass
class EmbedResult:
    """Summary of one ``embed`` call (rows per split, skipped rows, wall time, throughput)."""

    path: Path
    rows: dict[str, int]
    skipped: list[dict]
    seconds: float
    resumed_rows: int = 0
    up_to_date: bool = False
    notes: list[str] = field(default_factory=list)
    #: input rows processed by this call (embedded or skipped; excludes resumed rows)
    processed: int | None = None
    #: rows the dataset loader left out (also in ``skipped``; the rest were skipped while embedding)
    skipped_at_load: list[dict] = field(default_factory=list)

    @property
    def rows_per_second(self) -> float:
        done = self.processed if self.processed is not None else sum(self.rows.values()) - self.resumed_rows
        return done / self.seconds if self.seconds > 0 else 0.0

    @property
    def skipped_while_embedding(self) -> list[dict]:
        return self.skipped[len(self.skipped_at_load):]


# ------------------------------------------------------------------------------ input pipeline


class Rows(Dataset):
    """Rows read by ``read`` (an encoder's picklable per-row reader); a bad row yields its error string
    instead of an item.

    ``threads`` > 1: a batch (``__getitems__``, which the DataLoader calls with a batch's indices) is
    read by that many threads (PIL releases the GIL while decoding and resizing)."""

    def __init__(self, examples, read: Callable, threads: int = 1):
        self.examples, self.read, self.threads = examples, read, threads
        self._pool = None

    def __len__(self):
        return len(self.examples)

    def __getitem__(self, i):
        return i, *read_one(self.read, self.examples[i].input)  # a bad row: reported by the main process

    def __getitems__(self, indices: list[int]) -> list:
        if self.threads <= 1 or len(indices) < 2:
            return [self[i] for i in indices]
        if self._pool is None:
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="mlhead-decode")
        return list(self._pool.map(self.__getitem__, indices))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None


class Collate:
    """Picklable DataLoader ``collate_fn``: ``(row indices, encoder.collate(good items) or None,
    {row index: error})``."""

    def __init__(self, collate: Callable):
        self.collate = collate

    def __call__(self, items):
        idx = [i for i, _, _ in items]
        errors = {i: err for i, _, err in items if err is not None}
        good = [x for _, x, err in items if err is None]
        return idx, self.collate(good) if good else None, errors


def to_device(batch, device: torch.device):
    """A collated batch (a tensor, or a dict of tensors for texts) moved to ``device``."""
    if isinstance(batch, dict):
        return {k: v.to(device, non_blocking=True) for k, v in batch.items()}
    return batch.to(device, non_blocking=True)


# ---------------------------------------------------------------------------------------- paths


def shard_slice(n: int, shard: tuple[int, int] | None) -> slice:
    """Rows ``[i*n//k, (i+1)*n//k)`` of a split for shard ``(i, k)``; all rows for None."""
    if shard is None:
        return slice(0, n)
    i, k = shard
    return slice(i * n // k, (i + 1) * n // k)


def cache_path(cache_dir: Path, dataset: str, backbone: str, shard: tuple[int, int] | None = None) -> Path:
    """``<cache-dir>/<dataset>/<backbone>.h5`` (``.shard-i-of-n.h5`` for a shard)."""
    safe = backbone.replace("/", "_").replace("\\", "_")
    suffix = f".shard-{shard[0]}-of-{shard[1]}" if shard else ""
    return Path(cache_dir) / dataset / f"{safe}{suffix}.h5"


# ---------------------------------------------------------------------------------------- plan


@dataclass(frozen=True)
class EmbedConfig:
    """What ``mlhead embed`` is asked to do: the dataset, the encoder and the run options.

    Paths may be relative (resolved against the working directory when used). ``shard``: ``(i, n)``
    embeds rows ``shard_slice`` of every split into ``<name>.shard-i-of-n.h5``. ``force`` rebuilds a
    cache (or discards a partial) made from other inputs. ``dataset_options``: the loader's own
    options (``mlhead datasets`` lists them). ``sort_window``: batches per window of rows batched by
    size (texts: token count; 1 = dataset order), see :func:`batch_plan`.
    """

    dataset: str
    data_dir: str | os.PathLike
    cache_dir: str | os.PathLike = "cache"
    output: str | os.PathLike | None = None
    backbone: str | None = None
    weights: str | os.PathLike | None = None
    random_init: bool = False
    pooling: str | None = None
    max_length: int = 256
    precision: str = "auto"
    batch_size: int = 64
    workers: int | None = None
    split_seed: int = 44
    split_mode: str = "random"
    on_error: str = "raise"
    force: bool = False
    shard: tuple[int, int] | None = None
    dataset_options: dict = field(default_factory=dict)
    device: str | None = None
    wait_lock: bool = False
    sort_window: int = SORT_WINDOW

    def validate(self) -> "EmbedConfig":
        """Return self, or raise :class:`~mlhead.errors.ConfigError` naming the bad option."""
        if self.on_error not in ON_ERROR:
            raise ConfigError(f"--on-error {self.on_error!r} invalid; valid: {', '.join(ON_ERROR)}")
        if self.batch_size < 1:
            raise ConfigError(f"--batch-size {self.batch_size} invalid; valid: >= 1")
        if self.sort_window < 1:
            raise ConfigError(f"--sort-window {self.sort_window} invalid; valid: >= 1 (1: dataset order)")
        if self.shard is not None and not (0 <= self.shard[0] < self.shard[1]):
            raise ConfigError(f"--shard {self.shard[0]}/{self.shard[1]} invalid; valid: i/n with 0 <= i < n")
        return self


@dataclass
class EmbedPlan:
    """What an embed will write, decided before anything is written (see :func:`plan_embed`).

    ``path``: the cache file; ``fields``: its fingerprint and root attrs; ``data``: the loaded dataset;
    ``encoder``: the loaded backbone (None for a dataset that brings its own features); ``device`` and
    ``precision`` (resolved); ``dim``: embedding width D.
    """

    config: EmbedConfig
    data: LoadedDataset
    encoder: Encoder | None
    device: torch.device
    precision: str
    path: Path
    fields: CacheFields
    dim: int

    @property
    def fingerprint(self) -> dict:
        return self.fields.fingerprint

    @property
    def attrs(self) -> dict:
        return self.fields.attrs

    def slices(self) -> dict[str, list]:
        """split -> the examples this run embeds (the shard's slice of each split)."""
        return {s: v[shard_slice(len(v), self.config.shard)] for s, v in self.data.splits.items()}

    def is_current(self, path: str | os.PathLike | None = None) -> bool:
        """True when the complete cache at ``path`` (default: :attr:`path`) holds what this plan would
        write (same fingerprint, or one differing only harmlessly in ``on_error``). Reads, never writes."""
        target = Path(path) if path is not None else self.path
        if not target.is_file():
            return False
        try:
            check_reusable(target, self.fingerprint)
        except CacheError:
            return False
        return True


def _resolve_encoder(config: EmbedConfig, data: LoadedDataset) -> Encoder | None:
    """The encoder of ``config`` for ``data`` (None for a features dataset); ConfigError on a modality
    mismatch."""
    if data.modality == "features":
        return None
    name = config.backbone
    if name is None:
        loader = get_loader(config.dataset)
        name = loader.default_backbone if loader.modality == data.modality else DEFAULT_BACKBONE[data.modality]
    bb = create_encoder(name, weights=config.weights, random_init=config.random_init, pooling=config.pooling,
                        max_length=config.max_length)
    if bb.modality != data.modality:
        raise ConfigError(f"--backbone {bb.name!r} is a {bb.modality} encoder but dataset {config.dataset!r} is "
                          f"{data.modality}; pass a {data.modality} backbone (see `mlhead datasets`)")
    return bb


def plan_embed(config: EmbedConfig) -> EmbedPlan:
    """Decide what ``embed(config)`` writes, without writing anything: load the dataset (its
    splits and labels), resolve the device, precision and encoder, and build the cache path,
    fingerprint and attrs. No file or folder is created.

    The encoder is loaded (its preprocessing and weights digest are part of the fingerprint), except
    for datasets that bring their own features. Raises ConfigError for bad options, DatasetError,
    BackboneError.
    """
    config.validate()
    data_dir = Path(config.data_dir)
    data = get_loader(config.dataset).load(data_dir, split_seed=config.split_seed, split_mode=config.split_mode,
                                           on_error=config.on_error,
                                           **check_options(config.dataset, config.dataset_options or {}))
    dev = resolve_device(config.device)
    bb = _resolve_encoder(config, data)
    prec = resolve_precision(config.precision, dev) if bb else "fp32"
    fields = cache_fields(data, data_dir, bb, prec, config.on_error, config.shard)
    if bb is not None:  # where the weights were read (not fingerprinted: a moved file is the same weights)
        fields = CacheFields(fields.fingerprint, {**fields.attrs, "weights": _weights_attr(config.weights)})
    path = Path(config.output) if config.output else cache_path(
        Path(config.cache_dir), data.cache_name or config.dataset, bb.name if bb else "none", config.shard)
    return EmbedPlan(config, data, bb, dev, prec, path, fields, bb.dim if bb else _features_dim(data))


def _weights_attr(weights) -> str:
    """The cache's ``weights`` attr: the absolute ``--weights`` path (``mlhead predict`` rebuilds the encoder
    from it and checks its sha256), ``""`` for a preset's default location or the hub."""
    return str(Path(weights).resolve()) if weights is not None else ""


# ---------------------------------------------------------------------------------------- embed


def embed(config: EmbedConfig, progress: Callable | None = None, notify: Callable[[str], None] | None = None,
          stop_after_batches: int | None = None) -> EmbedResult:
    """Embed every split of ``config.dataset`` into the cache file :func:`plan_embed` names.

    Up to date (same fingerprint) -> returns at once (``up_to_date``); stale -> CacheError naming the
    changed fields unless ``force``. An interrupted run (its ``.partial``) with the same inputs is
    resumed; with other inputs -> CacheError unless ``force``. Bad rows: ``on_error="raise"`` ->
    DatasetError naming file and row (the rows done so far are kept for a resume; an existing cache
    at the path is untouched); ``"skip"`` -> left out, counted and listed in the cache attrs
    (``skipped_at_load``: the loader's, ``skipped``: unreadable inputs). ``progress(split, done,
    total)`` is called once per split before its first batch (``done`` = resumed rows) and after
    every batch. Another writer of the same cache -> CacheError, or wait with ``wait_lock``
    (``notify(message)`` is called before waiting).
    ``stop_after_batches`` (tests) stops early, as Ctrl-C would (after writing the window that batch
    completes, if it does). Raises ConfigError for bad options, BackboneError, DatasetError, CacheError.
    """
    t0 = time.perf_counter()
    plan = plan_embed(config)
    path, data = plan.path, plan.data
    with storage_errors(path.parent):
        path.parent.mkdir(parents=True, exist_ok=True)
    with CacheLock(path, wait=config.wait_lock, on_wait=notify):
        # checked under the lock: a writer we waited for may just have finished this very cache
        if path.exists() and not config.force:
            check_reusable(path, plan.fingerprint)
            return EmbedResult(path, _rows_in(path), data.skipped, time.perf_counter() - t0, up_to_date=True,
                               notes=data.notes, processed=0, skipped_at_load=list(data.skipped))
        slices = plan.slices()
        writer = CacheWriter(path, data.classes, plan.dim, {s: len(v) for s, v in slices.items()},
                             attrs=plan.attrs, fingerprint=plan.fingerprint, force=config.force,
                             sync_interval=SYNC_INTERVAL)
        resumed = sum(writer.done(s) for s in slices)
        start_consumed = sum(writer.consumed(s) for s in slices)
        try:
            _write_rows(plan, writer, slices, progress, _Counter(stop_after_batches))
        finally:
            writer.close()  # whatever stopped us (error, Ctrl-C), every appended batch is kept
        processed = sum(writer.consumed(s) for s in slices) - start_consumed
        out = writer.finish()
    return EmbedResult(out, {s: writer.done(s) for s in slices}, data.skipped + writer.skipped,
                       time.perf_counter() - t0, resumed_rows=resumed, notes=data.notes, processed=processed,
                       skipped_at_load=list(data.skipped))


def _write_rows(plan: EmbedPlan, writer: CacheWriter, slices: dict, progress, counter) -> None:
    """Append the rows still missing from ``writer``: copied features, or the encoder's embeddings."""
    cfg, bb = plan.config, plan.encoder
    if bb is None:
        _write_features(writer, plan.data, cfg.shard, progress)
        return
    bb.to(plan.device)
    _embed_splits(writer, slices, plan.data, bb, plan.device, plan.precision, cfg, progress, counter)


def _rows_in(path: Path) -> dict[str, int]:
    from .cache import open_cache

    c = open_cache(path)
    return {s: c.shapes[s][0] for s in c.splits}


class _Counter:
    def __init__(self, limit):
        self.limit, self.n = limit, 0

    def tick(self):
        self.n += 1
        if self.limit is not None and self.n >= self.limit:
            raise KeyboardInterrupt(f"stopped after {self.n} batches (stop_after_batches)")


def _features_dim(data: LoadedDataset) -> int:
    return int(next(iter(data.features.values()))[0].shape[1])


def _write_features(writer: CacheWriter, data: LoadedDataset, shard, progress) -> None:
    for split, (X, Y, ids) in data.features.items():
        sl = shard_slice(len(ids), shard)
        X, Y, ids = X[sl], Y[sl], list(ids[sl])
        start = writer.consumed(split)
        if progress:
            progress(split, start, len(ids))
        for i in range(start, len(ids), 4096):
            writer.append(split, X[i:i + 4096], Y[i:i + 4096], ids[i:i + 4096])
            if progress:
                progress(split, min(i + 4096, len(ids)), len(ids))


class Batch(NamedTuple):
    """One batch of the plan: its ``split``, its ``rows`` (indices into the rows still to embed) and
    whether it is the last batch of its window (``window_end``: the window's rows are written then)."""

    split: str
    rows: list[int]
    window_end: bool


def batch_plan(sizes: Sequence[int] | None, base: int, n: int, batch_size: int, window: int) -> list[Batch]:
    """The batches over the ``n`` rows ``base .. base+n-1`` of one split (``split`` left empty; the caller fills it).

    ``sizes``: each row's cost (:attr:`mlhead.encoders.base.RowBlock.sizes`, indexed like the rows; None: all
    equal). Rows are cut into windows of ``window * batch_size`` consecutive rows; within a window they
    are ordered by size, longest first (ties: dataset order), and cut into ``batch_size`` batches (the
    window's last one may be smaller). Without sizes, or with ``window`` 1, the batches are the rows in
    dataset order, each its own window. A pure function of its arguments: a resumed embed (which starts
    at a window boundary) replans exactly the batches the uninterrupted run ran."""
    if sizes is None or window <= 1:
        return [Batch("", list(range(base + i, base + min(i + batch_size, n))), True) for i in range(0, n, batch_size)]
    out = []
    for w in range(0, n, window * batch_size):
        rows = sorted(range(base + w, base + min(w + window * batch_size, n)), key=lambda i: (-sizes[i], i))
        cuts = list(range(0, len(rows), batch_size))
        out += [Batch("", rows[c:c + batch_size], c == cuts[-1]) for c in cuts]
    return out


def _pending(writer: CacheWriter, slices: dict, data: LoadedDataset) \
        -> tuple[list, np.ndarray, list[tuple[str, int, int]]]:
    """The rows still to embed (every split's rows from its resume point, split after split), their
    multi-hot labels (aligned with those rows) and each split's span ``(split, first row, rows)`` in them."""
    shard = _shard_of(writer)
    todo, labels, spans = [], [], []
    for split, examples in slices.items():
        start = writer.consumed(split)
        spans.append((split, len(todo), len(examples) - start))
        todo.extend(examples[start:])
        labels.append(data.multi_hot(split)[shard_slice(len(data.splits[split]), shard)][start:])
    return todo, np.concatenate(labels) if labels else np.zeros((0, len(data.classes)), np.uint8), spans


class ReadWindow(NamedTuple):
    """``n`` consecutive pending rows of one split from row ``start``: one block read at once."""

    split: str
    start: int
    n: int


def windows(spans: list, batch_size: int, window: int) -> list[ReadWindow]:
    """The windows of ``window * batch_size`` rows over each split's pending rows ``(split, first row, rows)``,
    never straddling a split and starting at each split's resume point (always a window boundary: rows are
    written a whole window at a time), so a resumed run feeds the backbone exactly the batches an
    uninterrupted run does. Window 1: one batch per window."""
    step = max(1, window) * batch_size
    return [ReadWindow(split, base + w, min(step, n - w)) for split, base, n in spans for w in range(0, n, step)]


class Blocks(Dataset):
    """Windows of rows, each read at once by ``read_block`` (picklable: may run in DataLoader workers)."""

    def __init__(self, examples, read_block: Callable[[list], RowBlock], wins: list[ReadWindow]):
        self.examples, self.read_block, self.wins = examples, read_block, wins

    def __len__(self):
        return len(self.wins)

    def __getitem__(self, k: int) -> RowBlock:
        w = self.wins[k]
        return self.read_block([ex.input for ex in self.examples[w.start:w.start + w.n]])


def _as_is(block):
    return block


def _block_batches(todo: list, spans: list, bb: Encoder, cfg: EmbedConfig, n_workers: int) -> Iterator:
    """``(Batch, collated batch or None, {row: error})`` of an encoder with ``read_block``: every window
    read once (texts: tokenized once), then cut by :func:`batch_plan` on the block's sizes (longest first)
    and each batch collated from the block (texts: padded). ``n_workers`` > 0: windows are read ahead in
    that many DataLoader worker processes."""
    wins = windows(spans, cfg.batch_size, cfg.sort_window)
    blocks = Blocks(todo, bb.read_block, wins)
    loader = (blocks[k] for k in range(len(wins))) if not n_workers else \
        DataLoader(blocks, batch_size=None, num_workers=n_workers, collate_fn=_as_is, prefetch_factor=2)
    for w, block in zip(wins, loader):
        for b in batch_plan(block.sizes, 0, w.n, cfg.batch_size, cfg.sort_window):
            good = [i for i in b.rows if i not in block.errors]
            errors = {w.start + i: block.errors[i] for i in b.rows if i in block.errors}
            batch = block.batch(good) if good else None
            yield Batch(w.split, [w.start + i for i in b.rows], b.window_end), batch, errors


def _row_batches(todo: list, spans: list, bb: Encoder, cfg: EmbedConfig, n_workers: int, dev) -> Iterator:
    """``(Batch, collated batch or None, {row: error})`` of an encoder without ``read_block`` (rows of
    equal cost: images): batches in dataset order, each its own window, rows read by ``bb.read`` in
    DataLoader workers (or, with none, by a thread pool when the encoder's reads are heavy)."""
    batches = [Batch(w.split, list(range(w.start, w.start + w.n)), True)
               for w in windows(spans, cfg.batch_size, 1)]
    threads = torch.get_num_threads() if bb.threaded_read and not n_workers else 1
    rows = Rows(todo, bb.read, threads=threads)
    dl = DataLoader(rows, batch_sampler=[b.rows for b in batches], num_workers=n_workers,
                    collate_fn=Collate(bb.collate), pin_memory=dev.type == "cuda", persistent_workers=False,
                    prefetch_factor=4 if n_workers else None)
    try:
        for b, (_, batch, errors) in zip(batches, dl):  # the loader's row indices are b.rows
            yield b, batch, errors
    finally:
        rows.close()


class _Window:
    """The encoded rows of the current window, until it is complete; then appended in dataset order."""

    def __init__(self, dim: int):
        self.dim = dim
        self.clear()

    def clear(self) -> None:
        self.rows, self.embs, self.bad, self.count = [], [], [], 0

    def add(self, keep: list[int], emb: np.ndarray, bad: list[tuple[int, dict]], n: int) -> None:
        """``keep``: rows (todo indices) of ``emb``'s rows; ``bad``: (row, skip record); ``n``: rows of the batch."""
        self.rows += keep
        self.embs.append(emb)
        self.bad += bad
        self.count += n

    def write(self, writer: CacheWriter, split: str, labels: np.ndarray, todo: list) -> None:
        """Append the window's rows in dataset order (with its skipped rows, in order) and clear it."""
        order = np.argsort(self.rows, kind="stable")
        rows = [self.rows[i] for i in order]
        emb = np.concatenate(self.embs)[order] if self.rows else np.zeros((0, self.dim), np.float32)
        writer.append(split, emb, labels[rows], [todo[i].id for i in rows],
                      skipped=[rec for _, rec in sorted(self.bad, key=lambda x: x[0])])
        self.clear()


def _embed_splits(writer, slices, data, bb, dev, prec, cfg: EmbedConfig, progress, counter):
    """Embed the remaining rows of every split from one stream of batches, so reading runs ahead across
    split boundaries (the workers start once and the pipeline never drains between splits). ``progress`` is
    called after every batch (rows written + rows of the current window encoded)."""
    todo, labels, spans = _pending(writer, slices, data)
    announce = _announcer(writer, slices, progress)
    for split, _, n in spans:
        if not n:
            announce(split)
    if not todo:
        return
    announce(next(split for split, _, n in spans if n))  # before the first read: reading is part of the work
    n_workers = bb.default_workers(dev) if cfg.workers is None else cfg.workers
    batches = _block_batches(todo, spans, bb, cfg, n_workers) if bb.read_block is not None else \
        _row_batches(todo, spans, bb, cfg, n_workers, dev)
    window = _Window(bb.dim)
    try:
        for b, batch, errors in batches:
            announce(b.split)
            bad = bad_rows(dict(sorted(errors.items())), todo, bb, cfg.on_error)
            keep = [i for i in b.rows if i not in errors]
            emb_np = encode_batch(bb, batch, dev, prec, f"{b.split} rows {_row_names(keep, todo)}") \
                if keep else np.zeros((0, bb.dim), np.float32)
            window.add(keep, emb_np, list(zip(sorted(errors), bad)), len(b.rows))
            if b.window_end:
                window.write(writer, b.split, labels, todo)
            if progress:
                progress(b.split, writer.consumed(b.split) + window.count, len(slices[b.split]))
            counter.tick()
    finally:
        batches.close()  # whatever stopped us: the reading threads and worker processes end now


def _announcer(writer, slices: dict, progress) -> Callable[[str], None]:
    """``announce(split)``: the first progress call of a split, before its first batch (done = resumed rows)."""
    announced = set()

    def announce(split):
        if progress and split not in announced:
            progress(split, writer.consumed(split), len(slices[split]))
        announced.add(split)

    return announce


def _row_names(rows: list[int], todo: list, most: int = 4) -> str:
    """Ids of a batch's rows for a message (the first ``most``, then a count)."""
    names = [str(todo[i].id) for i in sorted(rows)[:most]]
    return ", ".join(names) + (f" (+{len(rows) - most} more)" if len(rows) > most else "")


def bad_rows(errors: dict, todo: list, encoder: Encoder, on_error: str) -> list[dict]:
    """Unreadable rows of a batch -> DatasetError naming file and row (``raise``) or skip records."""
    bad = []
    for i, err in errors.items():
        ex = todo[i]
        msg = f"{ex.where or ex.input}: {encoder.describe(ex.input)}: {err}"
        if on_error == "raise":
            raise DatasetError(msg + " (use --on-error skip to leave such rows out)")
        bad.append({"id": ex.id, "where": ex.where, "error": err})
    return bad


def encode_batch(bb: Encoder, batch, dev, prec: str, where: str) -> np.ndarray:
    """Embeddings (float32 N x D numpy) of a collated ``batch`` under ``prec`` autocast on ``dev``.

    Raises :class:`~mlhead.errors.NumericalError` (a FloatingPointError) naming ``where`` for NaN/inf."""
    with autocast(dev, prec):
        emb = bb.encode(to_device(batch, dev))
    emb_np = emb.float().cpu().numpy()
    if not np.isfinite(emb_np).all():
        raise NumericalError(f"non-finite embeddings in {where}; try --precision fp32")
    return emb_np


def _shard_of(writer: CacheWriter):
    shard = writer.fingerprint.get("shard")
    return tuple(shard) if shard else None
