"""Stage two: train heads on cached embeddings held in memory; many runs at once.

Runs (loss, loss options, seed, lr) are grouped by (seed, lr): the runs of a group share the
initial weights and the minibatch sequence, so they train as one :class:`~mlhead.heads.StackedHeads`
whose first layer is a single wide GEMM. Minibatches are drawn by indexing a seeded permutation of
the whole split (one tensor on the device; no per-example DataLoader). Adam (fused where
available) on float32 master weights; forward/backward under bf16 autocast on CPUs with AMX or
AVX512-BF16 (fp16/bf16 on CUDA); losses and metrics in float32. Each run keeps its own best epoch
by a validation criterion and gets its own run directory (see :mod:`mlhead.runs`).

:func:`fit` is four steps: :func:`_load` (splits onto the device, standardized if asked),
:func:`_train_epoch` (one pass over the seeded permutation, every group), :func:`_validate` (val loss
and the val F1s of :func:`mlhead.metrics.f1_scores` under ``FitConfig.val_rule``, the numbers
``mlhead eval`` reports under that rule) and :class:`_BestTracker` (each run's best epoch and head).
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from . import losses as L
from .cache import open_cache
from .device import autocast, dtype_of, resolve_device, resolve_precision
from .errors import ConfigError
from .heads import StackedHeads
from .rules import DecisionRule
from .runs import RunConfig, RunRecord, write_run

SELECT_CHOICES = ("val_loss", "val_micro_f1", "val_macro_f1")


@dataclass(frozen=True)
class RunSpec:
    """One run of a grid: loss name, its options, seed and learning rate."""

    loss: str
    loss_options: tuple = ()
    seed: int = 0
    lr: float = 1e-3

    @property
    def options(self) -> dict:
        return dict(self.loss_options)

    @property
    def label(self) -> str:
        opts = "".join(f"-{k}{v}" for k, v in self.loss_options)
        return f"{self.loss}{opts}-lr{self.lr:g}-s{self.seed}"


@dataclass
class FitConfig:
    """Options shared by every run of one ``fit`` call."""

    epochs: int = 100
    batch_size: int = 256
    hidden: int = 1024
    precision: str = "auto"
    device: str | None = None
    select: str = "val_loss"
    val_rule: DecisionRule = field(default_factory=DecisionRule)
    val_every: int = 1
    standardize: bool = False

    def validate(self) -> None:
        """Raise ConfigError (a ValueError) naming the first out-of-range option."""
        for name, value, ok, valid in (("epochs", self.epochs, self.epochs >= 1, ">= 1"),
                                       ("batch-size", self.batch_size, self.batch_size >= 1, ">= 1"),
                                       ("hidden", self.hidden, self.hidden >= 0, ">= 0"),
                                       ("val-every", self.val_every, self.val_every >= 1, ">= 1")):
            if not ok:
                raise ConfigError(f"--{name} {value} is out of range; valid: {valid}")
        if self.select not in SELECT_CHOICES:
            raise ConfigError(f"--select {self.select!r} invalid; valid: {', '.join(SELECT_CHOICES)}")
        if not isinstance(self.val_rule, DecisionRule) or self.val_rule.needs_tuning:
            raise ConfigError(f"val_rule must be a DecisionRule with fixed thresholds, got {self.val_rule!r}")


def expand_grid(losses: Sequence[str], seeds: Sequence[int] = (0,), lrs: Sequence[float] = (1e-3,),
                options: dict[str, Sequence] | None = None) -> list[RunSpec]:
    """Every (loss, option values, seed, lr) combination; each loss gets only the options it accepts.

    ``options`` maps option name -> list of values, e.g. {"beta": [1, 10], "eta": [0, 1]}. Raises
    ValueError for an unknown loss, or an option no listed loss accepts, or an out-of-range value.
    """
    options = dict(options or {})
    used: set[str] = set()
    specs: list[RunSpec] = []
    for loss in losses:
        accepted = L.accepted_options(loss, {k: v[0] for k, v in options.items()})
        used |= set(accepted)
        names = sorted(accepted)
        for values in itertools.product(*(options[n] for n in names)):
            opts = dict(zip(names, values))
            L.build(loss, **opts)  # validates ranges now, not after hours of training
            for seed, lr in itertools.product(seeds, lrs):
                if lr <= 0:
                    raise ValueError(f"--lr {lr} is out of range; valid: > 0")
                specs.append(RunSpec(L.canonical_name(loss), tuple(sorted(opts.items())), int(seed), float(lr)))
    unused = set(options) - used
    if unused:
        raise ValueError(f"option(s) {', '.join(sorted(unused))} not accepted by any of the losses "
                         f"{', '.join(losses)} (see `mlhead losses`)")
    return list(dict.fromkeys(specs))


@dataclass
class _Group:
    """Runs sharing seed and lr: one StackedHeads, one minibatch sequence."""

    seed: int
    lr: float
    runs: list[int]
    heads: StackedHeads
    loss_groups: list[tuple[torch.nn.Module, torch.Tensor]] = field(default_factory=list)


def _make_groups(specs: list[RunSpec], dim: int, hidden: int, n_classes: int, device) -> list[_Group]:
    by_key: dict[tuple, list[int]] = {}
    for i, s in enumerate(specs):
        by_key.setdefault((s.seed, s.lr), []).append(i)
    groups = []
    for (seed, lr), idx in by_key.items():
        heads = StackedHeads(dim, hidden, n_classes, [seed] * len(idx)).to(device)
        g = _Group(seed, lr, idx, heads)
        by_loss: dict[tuple, list[int]] = {}
        for j, i in enumerate(idx):
            by_loss.setdefault((specs[i].loss, specs[i].loss_options), []).append(j)
        for (name, opts), js in by_loss.items():
            g.loss_groups.append((L.build(name, **dict(opts)), torch.tensor(js, device=device)))
        groups.append(g)
    return groups


def _group_loss(g: _Group, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-run losses (K vector, float32) of one group on one batch."""
    out = logits.new_zeros(len(g.runs), dtype=torch.float32)
    for loss_fn, js in g.loss_groups:
        part = logits if len(js) == len(g.runs) else logits.index_select(0, js)
        # targets were validated once up front (_check_targets); skip the per-step check and host sync
        out = out.index_copy(0, js, loss_fn._loss(part.float(), y.expand_as(part)).reshape(-1))
    return out


@torch.no_grad()
def _predict(heads: StackedHeads, X: torch.Tensor, dev, prec, chunk: int = 8192) -> torch.Tensor:
    outs = []
    for i in range(0, X.shape[0], chunk):
        with autocast(dev, prec):
            outs.append(heads(X[i:i + chunk]).float())
    return torch.cat(outs, 1)


@dataclass
class _Data:
    """The train and val splits on the device (inputs in the storage dtype, targets float32)."""

    Xtr: torch.Tensor
    Ytr: torch.Tensor
    Xva: torch.Tensor
    Yva: torch.Tensor
    yva: np.ndarray  # val targets, uint8 N x C on the host (for the metrics)
    scaling: dict  # input_mean/input_std stored with each head when standardized


def _load(cache, cfg: FitConfig, dev, prec: str) -> _Data:
    """Load train and val, z-score them with train statistics when ``cfg.standardize``, move them to
    ``dev``. Raises ValueError without a val split or with labels that are not multi-hot."""
    if "val" not in cache.splits:
        raise ValueError(f"{cache.path}: no val split to select the best epoch on")
    store = torch.float32 if prec == "fp32" or cfg.standardize else dtype_of(prec)
    Xtr, Ytr, _ = cache.load("train", store)
    Xva, Yva, _ = cache.load("val", store)
    scaling = {}
    if cfg.standardize:  # z-score with train statistics; stored with each head so eval applies it
        mean, std = Xtr.mean(0), Xtr.std(0)
        std = torch.where(std > 1e-6, std, torch.ones_like(std))  # constant train columns: centre only
        Xtr, Xva = (Xtr - mean) / std, (Xva - mean) / std
        scaling = {"input_mean": mean.contiguous(), "input_std": std.contiguous()}
    if Ytr.max() > 1 or Yva.max() > 1:  # once, instead of each loss checking every step
        raise ValueError(f"{cache.path}: labels must be multi-hot 0/1")
    store = torch.float32 if prec == "fp32" else dtype_of(prec)
    return _Data(Xtr.to(dev, store), Ytr.to(dev, torch.float32), Xva.to(dev, store), Yva.to(dev, torch.float32),
                 Yva.numpy(), scaling)


def _train_epoch(groups: list[_Group], data: _Data, opt, perms: dict, cfg: FitConfig, dev, prec) -> list[float]:
    """One pass over the train split in minibatches of the seeded permutations ``perms`` (seed -> N
    indices); every group steps on the same batch positions. Returns the mean train loss per run."""
    N = data.Xtr.shape[0]
    train_sum = torch.zeros(sum(len(g.runs) for g in groups), device=dev)
    n_steps = 0
    for start in range(0, N, cfg.batch_size):
        opt.zero_grad(set_to_none=True)
        total = 0.0
        for g in groups:
            idx = perms[g.seed][start:start + cfg.batch_size]
            with autocast(dev, prec):
                logits = g.heads(data.Xtr.index_select(0, idx))
            per_run = _group_loss(g, logits, data.Ytr.index_select(0, idx))
            total = total + per_run.sum()
            train_sum.index_add_(0, torch.tensor(g.runs, device=dev), per_run.detach())
        total.backward()
        opt.step()
        n_steps += 1
    return (train_sum / n_steps).tolist()


def _val_f1(logits: torch.Tensor, data: _Data, rule: DecisionRule) -> dict[str, float]:
    """micro/macro F1 (percent) of one run's val logits, exactly as ``mlhead eval`` computes them;
    NaN for non-finite logits (a diverged run is not selected)."""
    from .metrics import f1_scores

    if not torch.isfinite(logits).all():
        return {"micro_f1": float("nan"), "macro_f1": float("nan")}
    return f1_scores(logits.cpu(), data.yva, rule)


def _validate(g: _Group, data: _Data, cfg: FitConfig, dev, prec) -> list[dict]:
    """One group's validation rows, one per run of the group: val_loss, val_micro_f1, val_macro_f1."""
    with torch.no_grad():
        val_logits = _predict(g.heads, data.Xva, dev, prec)
        val_loss = _group_loss(g, val_logits, data.Yva).tolist()
    rows = []
    for j in range(len(g.runs)):
        f1 = _val_f1(val_logits[j], data, cfg.val_rule)
        rows.append({"val_loss": val_loss[j], "val_micro_f1": f1["micro_f1"], "val_macro_f1": f1["macro_f1"]})
    return rows


class _BestTracker:
    """Each run's best epoch by ``select`` (lowest val_loss, highest F1; non-finite values never win)
    and a copy of its head at that epoch."""

    def __init__(self, n_runs: int, select: str):
        self.select = select
        self.sign = 1.0 if select == "val_loss" else -1.0
        self.value: list[float | None] = [None] * n_runs
        self.epoch = [0] * n_runs
        self.state: list[dict | None] = [None] * n_runs

    def update(self, i: int, row: dict, state_fn: Callable[[], dict]) -> None:
        """Keep run ``i``'s ``row`` (with its epoch) and ``state_fn()`` if it beats the best so far."""
        value = row[self.select]
        best = self.value[i]
        if np.isfinite(value) and (best is None or self.sign * value < self.sign * best):
            self.value[i], self.epoch[i], self.state[i] = value, row["epoch"], state_fn()


def _run_config(spec: RunSpec, cfg: FitConfig, cache, data: _Data, prec: str, best: _BestTracker, i: int,
                n_runs: int, seconds: float) -> RunConfig:
    """The :class:`~mlhead.runs.RunConfig` of run ``i``."""
    return RunConfig(
        loss=spec.loss, classes=list(cache.classes), dim=int(data.Xtr.shape[1]), hidden=cfg.hidden,
        epochs=cfg.epochs, batch_size=cfg.batch_size, precision=prec, device=cfg.device, select=cfg.select,
        val_rule=cfg.val_rule.to_dict(), val_every=cfg.val_every, standardize=cfg.standardize,
        loss_options=spec.options, seed=spec.seed, lr=spec.lr, dataset=cache.attrs.get("dataset", ""),
        backbone=cache.attrs.get("backbone", ""), cache=str(Path(cache.path).resolve()),
        cache_fingerprint=cache.fingerprint, n_train=int(data.Xtr.shape[0]), n_val=int(data.Xva.shape[0]),
        best_epoch=best.epoch[i], best_value=best.value[i], stacked_runs=n_runs, train_seconds=seconds,
        suggested_rule=getattr(L.LOSSES[L.canonical_name(spec.loss)], "DECISION_RULE", None))


def fit(cache_path, specs: list[RunSpec], cfg: FitConfig | None = None, runs_dir="runs",
        progress: Callable[[int, int], None] | None = None, write: bool = True) -> list[RunRecord]:
    """Train one head per spec on the cache's train split, selecting each run's best epoch on val.

    Validation (every ``cfg.val_every`` epochs and at the last) records val_loss and the val
    micro/macro F1 under ``cfg.val_rule``; the best epoch maximises/minimises ``cfg.select`` and its
    head is kept. Returns the run records (with their directories when ``write``). Raises
    ConfigError/ValueError for bad options, CacheError for a missing/incomplete cache or one without
    train/val splits.
    """
    cfg = cfg or FitConfig()
    cfg.validate()
    if not specs:
        raise ValueError("no runs to fit")
    cache = open_cache(cache_path)
    dev = resolve_device(cfg.device)
    prec = resolve_precision(cfg.precision, dev)
    data = _load(cache, cfg, dev, prec)
    groups = _make_groups(specs, data.Xtr.shape[1], cfg.hidden, data.Ytr.shape[1], dev)
    params = [{"params": list(g.heads.parameters()), "lr": g.lr} for g in groups]
    opt = torch.optim.Adam(params, fused=dev.type in ("cpu", "cuda"))
    gens = {g.seed: torch.Generator().manual_seed(g.seed + 1_000_003) for g in groups}
    history: list[list[dict]] = [[] for _ in specs]
    best = _BestTracker(len(specs), cfg.select)
    t0 = time.perf_counter()
    for epoch in range(1, cfg.epochs + 1):
        perms = {s: torch.randperm(data.Xtr.shape[0], generator=gen).to(dev) for s, gen in gens.items()}
        train_loss = _train_epoch(groups, data, opt, perms, cfg, dev, prec)
        if epoch % cfg.val_every and epoch != cfg.epochs:
            continue
        for g in groups:
            for j, (i, val) in enumerate(zip(g.runs, _validate(g, data, cfg, dev, prec))):
                row = {"epoch": epoch, "train_loss": train_loss[i], **val}
                history[i].append(row)
                best.update(i, row, lambda g=g, j=j: g.heads.head_state(j))
        if progress:
            progress(epoch, cfg.epochs)
    seconds = time.perf_counter() - t0
    records = []
    for i, spec in enumerate(specs):
        g = next(g for g in groups if i in g.runs)
        state = best.state[i] or g.heads.head_state(g.runs.index(i))
        rec = RunRecord(_run_config(spec, cfg, cache, data, prec, best, i, len(specs), seconds),
                        {**state, **data.scaling}, history[i])
        if write:
            rec.path = write_run(rec, Path(runs_dir), spec.label)
        records.append(rec)
    return records
