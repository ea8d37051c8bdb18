"""Stage two: train heads on cached embeddings (in memory, or streamed past ``--memory-budget``:
:mod:`mlhead.datasource`); many runs at once.

Runs (loss, loss options, seed, lr, weight decay) are grouped by (seed, lr, weight decay): the runs
of a group share the initial weights and the minibatch sequence, so they train as one
:class:`~mlhead.heads.StackedHeads` whose first layer is a single wide GEMM. Minibatches are drawn by
indexing a seeded permutation of the whole split (one tensor on the device; no per-example
DataLoader; streamed splits: the same within bounded shuffle buffers). ``torch.optim.AdamW`` (fused where available; decoupled weight decay, Loshchilov & Hutter
2019; with decay 0 it is Adam) per group on float32 master weights; forward/backward under bf16
autocast on CPUs with AMX or AVX512-BF16, bf16 or fp16 with a ``torch.amp.GradScaler`` on CUDA;
losses and metrics in float32. Each run keeps its own best epoch by a validation criterion, stops on
its own (``patience``, divergence: :data:`DIVERGENCE_FACTOR`) and then leaves its group's stacked
weights and AdamW state (compaction), and gets its own run directory (see :mod:`mlhead.runs`).

:func:`fit` is :func:`_load` (splits onto the device, normalized if asked, pos_weight resolved) and
:func:`_train_loop`: per epoch :func:`_train_epoch` (one pass over the seeded permutation, every
group), :func:`_validate` (val loss and the val F1s of :func:`mlhead.metrics.f1_scores_tensor`, on the device, under
``FitConfig.val_rule``, the numbers ``mlhead eval`` reports under that rule), :func:`_record_epoch`
(history, :class:`_BestTracker`, stop decisions), compaction (:meth:`_Group.drop`) and a checkpoint
(:func:`checkpoint_dir`) from which the same fit resumes.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import math
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from . import class_weights, normalize
from . import losses as L
from .cache import fingerprint_digest, open_cache
from .datasource import baseline_rss, default_budget, format_size, train_source
from .device import autocast, dtype_of, grad_scaler, resolve_device, resolve_precision, reuse_freed_memory
from .errors import CacheError, ConfigError
from .fileio import atomic_write_bytes, atomic_write_text, storage_errors
from .heads import StackedHeads
from .rules import DecisionRule
from .runs import RunConfig, RunRecord, encoder_from_attrs, write_run

SELECT_CHOICES = ("val_loss", "val_micro_f1", "val_macro_f1")

#: Divergence rule: a run diverges at the first epoch whose mean train loss, or val loss when
#: validated, is non-finite or exceeds ``DIVERGENCE_FACTOR`` x |its loss on the first minibatch| (the
#: loss at initialization, before any step). It is then stopped and marked ``diverged``.
DIVERGENCE_FACTOR = 1e3


@dataclass(frozen=True)
class RunSpec:
    """One run of a grid: loss name, its options, seed, learning rate and (AdamW) weight decay."""

    loss: str
    loss_options: tuple = ()
    seed: int = 0
    lr: float = 1e-3
    weight_decay: float = 0.0

    @property
    def options(self) -> dict:
        return dict(self.loss_options)

    @property
    def label(self) -> str:
        """``<loss>[-<opt><value>...]-lr<lr>[-wd<weight_decay>]-s<seed>`` (wd only when non-zero, so runs
        without decay keep their names)."""
        opts = "".join(f"-{k}{v}" for k, v in self.loss_options)
        wd = f"-wd{self.weight_decay:g}" if self.weight_decay else ""
        return f"{self.loss}{opts}-lr{self.lr:g}{wd}-s{self.seed}"


@dataclass
class FitConfig:
    """Options shared by every run of one ``fit`` call.

    ``normalize``: input normalization (:mod:`mlhead.normalize`; ``standardize=True`` is an alias of
    ``normalize="standardize"``). ``patience``: stop a run when ``select`` has not improved for that
    many evaluations (None: never). ``pos_weight``: ``none``, ``auto`` or a file
    (:mod:`mlhead.class_weights`). ``checkpoint_every``: save a resumable checkpoint every that many
    epochs when run directories are written (0: never), but at most one per ``checkpoint_seconds`` of
    training (a 25-run grid's checkpoint is ~0.5 GB, written and fsynced each time, while its epoch can
    take seconds; 0: every ``checkpoint_every`` epochs). Where the checkpoints fall does not change results.
    """

    epochs: int = 100
    batch_size: int = 256
    hidden: int = 1024
    precision: str = "auto"
    device: str | None = None
    select: str = "val_loss"
    val_rule: DecisionRule = field(default_factory=DecisionRule)
    val_every: int = 1
    standardize: bool = False
    normalize: str = "none"
    patience: int | None = None
    pos_weight: str = "none"
    checkpoint_every: int = 1
    checkpoint_seconds: float = 30.0
    memory_budget: int | None = None  # bytes of data fit may hold on top of the process (None: datasource.default_budget())

    def __post_init__(self):
        if self.standardize:
            if self.normalize not in ("none", "standardize"):
                raise ConfigError(f"--standardize contradicts --normalize {self.normalize}; give one of them")
            self.normalize = "standardize"
        self.standardize = self.normalize == "standardize"

    def validate(self) -> None:
        """Raise ConfigError (a ValueError) naming the first out-of-range option."""
        for name, value, ok, valid in (("epochs", self.epochs, self.epochs >= 1, ">= 1"),
                                       ("batch-size", self.batch_size, self.batch_size >= 1, ">= 1"),
                                       ("hidden", self.hidden, self.hidden >= 0, ">= 0"),
                                       ("val-every", self.val_every, self.val_every >= 1, ">= 1"),
                                       ("patience", self.patience, self.patience is None or self.patience >= 1,
                                        ">= 1"),
                                       ("checkpoint-every", self.checkpoint_every, self.checkpoint_every >= 0,
                                        ">= 0"),
                                       ("checkpoint-seconds", self.checkpoint_seconds, self.checkpoint_seconds >= 0,
                                        ">= 0"),
                                       ("memory-budget", self.memory_budget,
                                        self.memory_budget is None or self.memory_budget > 0, "> 0")):
            if not ok:
                raise ConfigError(f"--{name} {value} is out of range; valid: {valid}")
        if self.select not in SELECT_CHOICES:
            raise ConfigError(f"--select {self.select!r} invalid; valid: {', '.join(SELECT_CHOICES)}")
        if not isinstance(self.val_rule, DecisionRule) or self.val_rule.needs_tuning:
            raise ConfigError(f"val_rule must be a DecisionRule with fixed thresholds, got {self.val_rule!r}")
        normalize.check(self.normalize)


def _check_positive(flag: str, values: Sequence[float], allow_zero: bool) -> None:
    for v in values:
        if not (math.isfinite(v) and (v >= 0 if allow_zero else v > 0)):
            raise ConfigError(f"--{flag} {v} is out of range; valid: {'>= 0' if allow_zero else '> 0'}")


def expand_grid(losses: Sequence[str], seeds: Sequence[int] = (0,), lrs: Sequence[float] = (1e-3,),
                options: dict[str, Sequence] | None = None,
                weight_decays: Sequence[float] = (0.0,)) -> list[RunSpec]:
    """Every (loss, option values, seed, lr, weight decay) combination; each loss gets only the options
    it accepts.

    ``options`` maps option name -> list of values, e.g. {"beta": [1, 10], "eta": [0, 1]}. Raises
    ValueError for an unknown loss, or an option no listed loss accepts, or an out-of-range value
    (``--lr`` > 0, ``--weight-decay`` >= 0).
    """
    options = dict(options or {})
    _check_positive("lr", lrs, allow_zero=False)
    _check_positive("weight-decay", weight_decays, allow_zero=True)
    used: set[str] = set()
    specs: list[RunSpec] = []
    for loss in losses:
        accepted = L.accepted_options(loss, {k: v[0] for k, v in options.items()})
        used |= set(accepted)
        names = sorted(accepted)
        for values in itertools.product(*(options[n] for n in names)):
            opts = dict(zip(names, values))
            L.build(loss, **opts)  # validates ranges now, not after hours of training
            for seed, lr, wd in itertools.product(seeds, lrs, weight_decays):
                specs.append(RunSpec(L.canonical_name(loss), tuple(sorted(opts.items())), int(seed), float(lr),
                                     float(wd)))
    unused = set(options) - used
    if unused:
        raise ConfigError(f"option(s) {', '.join(sorted(unused))} not accepted by any of the losses "
                         f"{', '.join(losses)} (see `mlhead losses`)")
    return list(dict.fromkeys(specs))


@dataclass
class _Group:
    """Runs sharing seed, lr and weight decay: one StackedHeads, one AdamW, one minibatch sequence.
    ``runs``: indices into the spec list of the runs still training (compacted as runs stop)."""

    seed: int
    lr: float
    weight_decay: float
    runs: list[int]
    heads: StackedHeads
    opt: torch.optim.Optimizer | None = None
    loss_groups: list[tuple[torch.nn.Module, slice]] = field(default_factory=list)
    run_index: torch.Tensor | None = None  # ``runs`` as a tensor on the device

    def setup(self, specs: list[RunSpec], pos_weight, device) -> None:
        """(Re)build the optimizer over the current heads, ``run_index``, and the loss segments: one
        (loss, slice of the K axis) per stretch of consecutive runs with the same loss and options: views
        of the stacked logits, no index copies (distinct specs of one group differ in loss or options,
        so a group's K runs are K slices)."""
        self.opt = torch.optim.AdamW(self.heads.parameters(), lr=self.lr, weight_decay=self.weight_decay,
                                     fused=device.type in ("cpu", "cuda"))
        self.run_index = torch.tensor(self.runs, device=device)
        keys = [(specs[i].loss, specs[i].loss_options) for i in self.runs]
        self.loss_groups, start = [], 0
        for (name, opts), run in itertools.groupby(keys):
            stop = start + len(list(run))
            self.loss_groups.append((L.build(name, pos_weight=pos_weight, **dict(opts)).to(device),
                                     slice(start, stop)))
            start = stop

    def drop(self, stopped: set[int], specs: list[RunSpec], pos_weight, device) -> None:
        """Compaction: remove the ``stopped`` runs from the stacked weights and the AdamW state (moments
        and step of the remaining runs carried over unchanged)."""
        keep = [j for j, i in enumerate(self.runs) if i not in stopped]
        if not keep:  # the whole group stopped: nothing left to train
            self.runs, self.opt, self.loss_groups = [], None, []
            return
        old_heads, old_state = self.heads, self.opt.state_dict()["state"]
        self.heads = old_heads.select_runs(keep)
        self.runs = [self.runs[j] for j in keep]
        self.setup(specs, pos_weight, device)
        names = [n for n, _ in old_heads.named_parameters()]
        state = {k: {key: (v if key == "step" else old_heads.slice_runs(names[k], v, keep))
                     for key, v in st.items()} for k, st in old_state.items()}
        self.opt.load_state_dict({"state": state, "param_groups": self.opt.state_dict()["param_groups"]})


def _make_groups(specs: list[RunSpec], dim: int, hidden: int, n_classes: int, device,
                 pos_weight=None) -> list[_Group]:
    by_key: dict[tuple, list[int]] = {}
    for i, s in enumerate(specs):
        by_key.setdefault((s.seed, s.lr, s.weight_decay), []).append(i)
    groups = []
    for (seed, lr, wd), idx in by_key.items():
        g = _Group(seed, lr, wd, idx, StackedHeads(dim, hidden, n_classes, [seed] * len(idx)).to(device))
        g.setup(specs, pos_weight, device)
        groups.append(g)
    return groups


def _group_loss(g: _Group, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-run losses (K vector, float32) of one group on one batch: each loss on its slice of the
    stacked ``logits`` (K x B x C), ``y`` (B x C) broadcast over the slice."""
    # targets were validated once up front (_load); skip the per-step check and host sync of forward()
    parts = [loss_fn._loss(logits[js].float(), y.expand(js.stop - js.start, *y.shape))
             for loss_fn, js in g.loss_groups]
    return parts[0] if len(parts) == 1 else torch.cat(parts)


@torch.no_grad()
def _predict(heads: StackedHeads, X: torch.Tensor, dev, prec, chunk: int = 8192) -> torch.Tensor:
    outs = []
    for i in range(0, X.shape[0], chunk):
        with autocast(dev, prec):
            outs.append(heads(X[i:i + chunk]).float())
    return torch.cat(outs, 1)


@dataclass
class _Data:
    """The train split (a :mod:`mlhead.datasource` source: in memory or streamed) and the val split on
    the device (inputs in the compute dtype, targets float32)."""

    train: object  # datasource.InMemorySource | datasource.StreamingSource
    Xva: torch.Tensor
    Yva: torch.Tensor
    scaling: dict  # normalization statistics stored with each head (input_mean/input_std when standardized)
    pos_weight: torch.Tensor | None = None  # C float32 on the device, or None
    notes: list = field(default_factory=list)


def _load(cache, cfg: FitConfig, dev, prec: str) -> _Data:
    """Open train as a :func:`mlhead.datasource.train_source` (in memory, or streamed when larger than
    ``cfg.memory_budget``), load val, normalize both (``cfg.normalize``, statistics from train), resolve
    ``cfg.pos_weight`` from the train labels, move them to ``dev``. Raises CacheError without a val split
    or with labels that are not multi-hot; ConfigError for a bad ``--pos-weight`` file or a budget too
    small to stream in."""
    if "val" not in cache.splits:
        raise CacheError(f"{cache.path}: no val split to select the best epoch on")
    store = torch.float32 if prec == "fp32" or cfg.normalize != "none" else dtype_of(prec)
    compute = torch.float32 if prec == "fp32" else dtype_of(prec)
    Xva, Yva, _ = cache.load("val", store)
    if Yva.max() > 1:  # once, instead of each loss checking every step (train: checked by train_source)
        raise CacheError(f"{cache.path}: labels must be multi-hot 0/1")
    budget = cfg.memory_budget or default_budget()
    val_bytes = Xva.numel() * Xva.element_size() + Yva.numel() * 5  # + the float32 copy on the device
    train, scaling = train_source(cache, "train", cfg.normalize, compute, dev, budget, val_bytes)
    how = f"streamed in shuffle buffers of {train.window_rows} rows" if train.streaming else "in memory"
    default = "" if cfg.memory_budget else " (default: half the available RAM)"
    notes = [f"--memory-budget {format_size(budget)}{default} for the data, on top of this process's "
             f"{format_size(baseline_rss())} (torch, libraries): train split {how}"]
    Xva = normalize.apply(Xva, cfg.normalize, scaling)
    pos_weight, pw_notes = class_weights.resolve(cfg.pos_weight, train.labels.host(), list(cache.classes))
    return _Data(train, Xva.to(dev, compute), Yva.to(dev, torch.float32), scaling,
                 None if pos_weight is None else pos_weight.to(dev), notes + pw_notes)


def _train_epoch(groups: list[_Group], batches, dev, prec, scaler, n_runs: int) -> tuple[list[float], list[float]]:
    """One pass over the train split in the minibatches ``batches`` (an iterator of seed -> (X, Y), from
    :mod:`mlhead.datasource`); every group steps on the same batch positions (``scaler``: a
    torch.amp.GradScaler).
    Returns (mean train loss, loss on the epoch's first minibatch before its step), per run index
    (length ``n_runs``; runs no longer training keep 0)."""
    train_sum = torch.zeros(n_runs, device=dev)
    first = torch.zeros(n_runs, device=dev)
    n_steps = 0
    for step, batch in enumerate(batches):
        total = 0.0
        for g in groups:
            g.opt.zero_grad(set_to_none=True)
            X, Y = batch[g.seed]  # one gather per data-order seed, shared by its groups
            with autocast(dev, prec):
                logits = g.heads(X)
            per_run = _group_loss(g, logits, Y)
            total = total + per_run.sum()
            train_sum.index_add_(0, g.run_index, per_run.detach())
            if step == 0:
                first.index_copy_(0, g.run_index, per_run.detach())
        scaler.scale(total).backward()
        for g in groups:
            scaler.step(g.opt)
        scaler.update()
        n_steps += 1
    return (train_sum / n_steps).tolist(), first.tolist()


def _validate(g: _Group, data: _Data, cfg: FitConfig, dev, prec) -> list[dict]:
    """One group's validation rows, one per run of the group: val_loss, val_micro_f1, val_macro_f1.

    All K runs at once on the device: the F1s come from tp/fp/fn counts of ``cfg.val_rule`` applied to
    the K x N x C val logits (:func:`mlhead.metrics.f1_scores_tensor`, equal to what ``mlhead eval``
    reports; NaN for non-finite logits, so a diverged run is not selected); one host transfer."""
    from .metrics import f1_scores_tensor

    with torch.no_grad():
        val_logits = _predict(g.heads, data.Xva, dev, prec)
        f1 = f1_scores_tensor(val_logits, data.Yva, cfg.val_rule)
        cols = torch.stack([_group_loss(g, val_logits, data.Yva).double(), f1["micro_f1"], f1["macro_f1"]], 1)
    return [dict(zip(("val_loss", "val_micro_f1", "val_macro_f1"), row)) for row in cols.tolist()]


class _BestTracker:
    """Each run's best epoch by ``select`` (lowest val_loss, highest F1; non-finite values never win),
    a copy of its head at that epoch, and the number of evaluations since it last improved."""

    def __init__(self, n_runs: int, select: str):
        self.select = select
        self.sign = 1.0 if select == "val_loss" else -1.0
        self.value: list[float | None] = [None] * n_runs
        self.epoch = [0] * n_runs
        self.state: list[dict | None] = [None] * n_runs
        self.since = [0] * n_runs

    def update(self, i: int, row: dict, state_fn: Callable[[], dict]) -> None:
        """Keep run ``i``'s ``row`` (with its epoch) and ``state_fn()`` if it beats the best so far."""
        value = row[self.select]
        best = self.value[i]
        if np.isfinite(value) and (best is None or self.sign * value < self.sign * best):
            self.value[i], self.epoch[i], self.state[i] = value, row["epoch"], state_fn()
            self.since[i] = 0
        else:
            self.since[i] += 1


def diverged(losses: Sequence[float], init_loss: float, factor: float = DIVERGENCE_FACTOR) -> bool:
    """True when any of ``losses`` is non-finite or exceeds ``factor`` x |``init_loss``| (the run's
    loss at initialization; see :data:`DIVERGENCE_FACTOR`)."""
    limit = factor * max(abs(init_loss), 1e-12) if math.isfinite(init_loss) else -math.inf
    return any(not math.isfinite(v) or abs(v) > limit for v in losses)


@dataclass
class _Progress:
    """Everything of a fit that changes per epoch, besides weights and optimizer state (checkpointed)."""

    history: list[list[dict]]
    best: _BestTracker
    init_loss: list[float]
    stopped_epoch: list[int]
    stop_reason: list[str]
    epoch: int = 0
    seconds: float = 0.0


def _epoch_rows(groups, data, cfg, dev, prec, epoch, train_loss, validate) -> dict[int, dict]:
    """History rows of this epoch per run index (val columns only when ``validate``)."""
    rows = {}
    for g in groups:
        vals = _validate(g, data, cfg, dev, prec) if validate else [{} for _ in g.runs]
        for i, val in zip(g.runs, vals):
            rows[i] = {"epoch": epoch, "train_loss": train_loss[i], **val}
    return rows


def _record_epoch(groups, rows: dict[int, dict], state: _Progress, cfg: FitConfig) -> set[int]:
    """Append the rows, update each run's best, and return the runs that stop now (diverged, or out of
    patience), with their stop epoch and reason set."""
    stopped = set()
    for g in groups:
        for j, i in enumerate(g.runs):
            row = rows[i]
            if "val_loss" in row:
                state.history[i].append(row)
            if diverged([row["train_loss"], row.get("val_loss", 0.0)], state.init_loss[i]):
                state.stop_reason[i] = "diverged"
            elif "val_loss" in row:
                state.best.update(i, row, lambda g=g, j=j: g.heads.head_state(j))
                if cfg.patience and state.best.since[i] >= cfg.patience:
                    state.stop_reason[i] = "patience"
            if state.stop_reason[i] != "completed":
                state.stopped_epoch[i] = row["epoch"]
                stopped.add(i)
    return stopped


def _run_config(spec: RunSpec, cfg: FitConfig, cache, data: _Data, prec: str, state: _Progress, i: int,
                n_runs: int) -> RunConfig:
    """The :class:`~mlhead.runs.RunConfig` of run ``i``."""
    best = state.best
    return RunConfig(
        loss=spec.loss, classes=list(cache.classes), dim=data.train.dim, hidden=cfg.hidden,
        epochs=cfg.epochs, batch_size=cfg.batch_size, precision=prec, device=cfg.device, select=cfg.select,
        val_rule=cfg.val_rule.to_dict(), val_every=cfg.val_every, normalize=cfg.normalize, patience=cfg.patience,
        pos_weight=str(cfg.pos_weight),
        pos_weight_values=None if data.pos_weight is None else [float(w) for w in data.pos_weight.cpu()],
        loss_options=spec.options, seed=spec.seed, lr=spec.lr, weight_decay=spec.weight_decay,
        dataset=cache.attrs.get("dataset", ""), backbone=cache.attrs.get("backbone", ""),
        cache=str(Path(cache.path).resolve()), cache_fingerprint=cache.fingerprint, n_train=data.train.n_rows,
        n_val=int(data.Xva.shape[0]), best_epoch=best.epoch[i], best_value=best.value[i],
        stopped_epoch=state.stopped_epoch[i], stop_reason=state.stop_reason[i], stacked_runs=n_runs,
        train_seconds=state.seconds,
        suggested_rule=getattr(L.LOSSES[L.canonical_name(spec.loss)], "DECISION_RULE", None),
        encoder=encoder_from_attrs(cache.attrs))


# ------------------------------------------------------------------------------------ checkpoints


def checkpoint_dir(runs_dir, cache, specs: list[RunSpec], cfg: FitConfig, prec: str) -> Path:
    """``<runs_dir>/.partial/fit-<key>``: where a fit of these specs and options on this cache keeps its
    per-epoch checkpoint; the same command finds the same folder (key: sha256 of cache fingerprint,
    specs and options)."""
    opts = {k: v for k, v in asdict(cfg).items()
            if k not in ("checkpoint_every", "checkpoint_seconds", "standardize", "memory_budget")}
    doc = {"cache": cache.fingerprint, "specs": [asdict(s) for s in specs],
           "cfg": {**opts, "val_rule": cfg.val_rule.to_dict(), "precision": prec}}
    key = fingerprint_digest(doc)[:16]
    return Path(runs_dir) / ".partial" / f"fit-{key}"


def _save_checkpoint(path: Path, groups: list[_Group], gens: dict, state: _Progress, scaler) -> None:
    """Write everything needed to continue after ``state.epoch`` to ``path`` atomically."""
    doc = {"groups": [{"seed": g.seed, "lr": g.lr, "weight_decay": g.weight_decay, "runs": g.runs,
                       "heads": g.heads.state_dict(), "opt": g.opt.state_dict()} for g in groups],
           "gens": {s: gen.get_state() for s, gen in gens.items()}, "scaler": scaler.state_dict(),
           "state": {**{k: v for k, v in vars(state).items() if k != "best"}, "best": vars(state.best)}}
    buf = io.BytesIO()
    torch.save(doc, buf)
    with storage_errors(path.parent):
        path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, buf.getvalue())


def _load_checkpoint(path: Path, specs, data: _Data, cfg: FitConfig, dev, scaler):
    """(groups, generators, progress) restored from a checkpoint written by :func:`_save_checkpoint`."""
    doc = torch.load(path, map_location="cpu", weights_only=True)
    groups = []
    for d in doc["groups"]:
        heads = StackedHeads(data.train.dim, cfg.hidden, data.train.n_classes, [d["seed"]] * len(d["runs"]))
        heads.load_state_dict(d["heads"])
        g = _Group(d["seed"], d["lr"], d["weight_decay"], list(d["runs"]), heads.to(dev))
        g.setup(specs, data.pos_weight, dev)
        g.opt.load_state_dict(d["opt"])
        groups.append(g)
    gens = {}
    for seed, st in doc["gens"].items():
        gens[seed] = torch.Generator()
        gens[seed].set_state(st)
    scaler.load_state_dict(doc["scaler"])
    st = dict(doc["state"])
    best = _BestTracker(len(specs), cfg.select)
    vars(best).update(st.pop("best"))
    return groups, gens, _Progress(best=best, **st)


def _start(specs, data: _Data, cfg: FitConfig, dev, scaler, ckpt: Path | None):
    """Fresh groups/generators/progress, or those of the checkpoint ``ckpt`` when it exists (resume)."""
    if ckpt is not None and ckpt.is_file():
        return _load_checkpoint(ckpt, specs, data, cfg, dev, scaler)
    groups = _make_groups(specs, data.train.dim, cfg.hidden, data.train.n_classes, dev, data.pos_weight)
    gens = {g.seed: torch.Generator().manual_seed(g.seed + 1_000_003) for g in groups}
    n = len(specs)
    state = _Progress([[] for _ in specs], _BestTracker(n, cfg.select), [math.nan] * n, [0] * n, ["completed"] * n)
    return groups, gens, state


def _run_epoch(epoch: int, groups, gens, data, cfg, dev, prec, scaler, state: _Progress, specs) -> list[_Group]:
    """Train, validate and record one epoch; stopped runs leave the stacked heads. Returns the groups
    still training."""
    batches = data.train.batches({s: gens[s] for s in {g.seed for g in groups}}, cfg.batch_size, epoch)
    train_loss, first = _train_epoch(groups, batches, dev, prec, scaler, len(specs))
    if epoch == 1:
        state.init_loss = first
    rows = _epoch_rows(groups, data, cfg, dev, prec, epoch, train_loss,
                       validate=epoch % cfg.val_every == 0 or epoch == cfg.epochs)
    stopped = _record_epoch(groups, rows, state, cfg)
    for g in groups:
        for j, i in enumerate(g.runs):
            if i in stopped and state.best.state[i] is None:  # never validated finite: keep its last head
                state.best.state[i] = g.heads.head_state(j)
        if stopped & set(g.runs):
            g.drop(stopped, specs, data.pos_weight, dev)
    return [g for g in groups if g.runs]


def fit(cache_path, specs: list[RunSpec], cfg: FitConfig | None = None, runs_dir="runs",
        progress: Callable[[int, int], None] | None = None, write: bool = True,
        notify: Callable[[str], None] | None = None,
        then: Callable[[list[RunRecord]], object] | None = None) -> list[RunRecord]:
    """Train one head per spec on the cache's train split, selecting each run's best epoch on val.

    Validation (every ``cfg.val_every`` epochs and at the last) records val_loss and the val
    micro/macro F1 under ``cfg.val_rule``; the best epoch maximises/minimises ``cfg.select`` and its
    head is kept. A run stops early when ``select`` has not improved for ``cfg.patience`` evaluations
    (``stop_reason`` "patience") or when it diverges (:data:`DIVERGENCE_FACTOR`; "diverged"); stopped
    runs leave the stacked heads (compaction). With ``write`` and ``cfg.checkpoint_every``, a
    checkpoint in :func:`checkpoint_dir` is written atomically every that many epochs; rerunning the
    same fit resumes from it and ends with the same records. The last epoch is checkpointed too and the
    run directories written so far are listed beside it, so a fit killed while writing its runs (or
    during ``then``, e.g. a sweep's evaluations, called with the records before the checkpoint is
    removed) neither retrains nor writes a run twice when rerun. ``notify`` receives notes (e.g. pos_weight
    clipping). Returns the run records (with their directories when ``write``). Raises
    ConfigError/ValueError for bad options, CacheError for a missing/incomplete cache or one without
    train/val splits.
    """
    cfg = cfg or FitConfig()
    _check_fit(specs, cfg)
    cache = open_cache(cache_path)
    dev = resolve_device(cfg.device)
    if dev.type == "cpu":
        reuse_freed_memory()  # wide stacked steps would page-fault every step otherwise
    prec = resolve_precision(cfg.precision, dev, training=True)
    data = _load(cache, cfg, dev, prec)
    for note in data.notes:
        (notify or (lambda m: None))(note)
    ckpt = checkpoint_dir(runs_dir, cache, specs, cfg, prec) / "checkpoint.pt" if write and cfg.checkpoint_every \
        else None
    state = _train_loop(specs, data, cfg, dev, prec, ckpt, progress)
    records = [RunRecord(_run_config(spec, cfg, cache, data, prec, state, i, len(specs)),
                         {**state.best.state[i], **data.scaling}, state.history[i]) for i, spec in enumerate(specs)]
    if write:
        _write_runs(records, specs, Path(runs_dir), ckpt)
    if then is not None:
        then(records)
    if ckpt is not None:
        shutil.rmtree(ckpt.parent, ignore_errors=True)
        with contextlib.suppress(OSError):  # runs/.partial itself, once no other fit keeps a checkpoint there
            ckpt.parent.parent.rmdir()
    return records


def _write_runs(records: list[RunRecord], specs: list[RunSpec], runs_dir: Path, ckpt: Path | None) -> None:
    """Write every record's run directory (``rec.path``), skipping those an interrupted call of the same
    fit already wrote: they are listed in ``written.json`` beside the checkpoint ``ckpt``, which is
    updated atomically after each run."""
    listing = ckpt.parent / "written.json" if ckpt is not None else None
    written = json.loads(listing.read_text()) if listing is not None and listing.is_file() else {}
    for i, (rec, spec) in enumerate(zip(records, specs)):
        done = written.get(str(i))
        if done and (Path(done) / "config.json").is_file():
            rec.path = Path(done)
            continue
        rec.path = write_run(rec, runs_dir, spec.label)
        if listing is not None:
            written[str(i)] = str(rec.path)
            atomic_write_text(listing, json.dumps(written, indent=1))


def _check_fit(specs: list[RunSpec], cfg: FitConfig) -> None:
    """ConfigError/ValueError for bad options, no specs, or ``--pos-weight`` with a loss without it."""
    cfg.validate()
    if not specs:
        raise ValueError("no runs to fit")
    if cfg.pos_weight != "none":
        for s in specs:
            if not L.LOSSES[L.canonical_name(s.loss)].POS_WEIGHT:
                raise ConfigError(f"--pos-weight is not defined for --loss {s.loss}; it applies to "
                                  f"{', '.join(L.POS_WEIGHT_LOSSES)} (see `mlhead losses`)")


def _train_loop(specs, data: _Data, cfg: FitConfig, dev, prec: str, ckpt: Path | None, progress) -> _Progress:
    """All epochs (from the checkpoint ``ckpt`` when one exists), checkpointing as configured; returns
    the final progress with every run's best (or last) head, stop epoch and reason."""
    scaler = grad_scaler(dev, prec)
    groups, gens, state = _start(specs, data, cfg, dev, scaler, ckpt)
    first, t0 = state.epoch, time.perf_counter() - state.seconds
    last_save = time.perf_counter()
    for epoch in range(state.epoch + 1, cfg.epochs + 1):
        if not groups:
            break
        groups = _run_epoch(epoch, groups, gens, data, cfg, dev, prec, scaler, state, specs)
        state.epoch, state.seconds = epoch, time.perf_counter() - t0
        if ckpt is not None and epoch % cfg.checkpoint_every == 0 and epoch < cfg.epochs \
                and time.perf_counter() - last_save >= cfg.checkpoint_seconds:
            _save_checkpoint(ckpt, groups, gens, state, scaler)
            last_save = time.perf_counter()
        if progress:
            progress(epoch, cfg.epochs)
    if ckpt is not None and (state.epoch > first or not ckpt.is_file()):
        _save_checkpoint(ckpt, groups, gens, state, scaler)  # the end too: writing the runs may be interrupted
    for g in groups:
        for j, i in enumerate(g.runs):
            state.stopped_epoch[i] = state.epoch
            state.best.state[i] = state.best.state[i] or g.heads.head_state(j)
    return state
