"""Stage two: train heads on cached embeddings held in memory; many runs at once.

Runs (loss, loss options, seed, lr) are grouped by (seed, lr): the runs of a group share the
initial weights and the minibatch sequence, so they train as one :class:`~mlhead.heads.StackedHeads`
whose first layer is a single wide GEMM. Minibatches are drawn by indexing a seeded permutation of
the whole split (one tensor on the device; no per-example DataLoader). Adam (fused where
available) on float32 master weights; forward/backward under bf16 autocast on CPUs with AMX or
AVX512-BF16 (fp16/bf16 on CUDA); losses and metrics in float32. Each run keeps its own best epoch
by a validation criterion and gets its own run directory (see :mod:`mlhead.runs`).
"""

from __future__ import annotations

import itertools
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from . import losses as L
from .cache import open_cache
from .device import autocast, dtype_of, resolve_device, resolve_precision
from .heads import StackedHeads
from .runs import RunRecord, write_run

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
    val_activation: str = "softmax"
    val_threshold: float = 0.05
    val_every: int = 1
    standardize: bool = False

    def validate(self) -> None:
        """Raise ValueError naming the first out-of-range option."""
        for name, value, ok, valid in (("epochs", self.epochs, self.epochs >= 1, ">= 1"),
                                       ("batch-size", self.batch_size, self.batch_size >= 1, ">= 1"),
                                       ("hidden", self.hidden, self.hidden >= 0, ">= 0"),
                                       ("val-every", self.val_every, self.val_every >= 1, ">= 1")):
            if not ok:
                raise ValueError(f"--{name} {value} is out of range; valid: {valid}")
        if self.select not in SELECT_CHOICES:
            raise ValueError(f"--select {self.select!r} invalid; valid: {', '.join(SELECT_CHOICES)}")


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


def _val_scores(logits: torch.Tensor, y_np: np.ndarray, cfg: FitConfig) -> tuple[float, float]:
    from sklearn.metrics import f1_score

    from .metrics import decide

    pred = decide(logits.numpy(), activation=cfg.val_activation, threshold=cfg.val_threshold)
    return (100 * f1_score(y_np, pred, average="micro", zero_division=0),
            100 * f1_score(y_np, pred, average="macro", zero_division=0))


def fit(cache_path, specs: list[RunSpec], cfg: FitConfig | None = None, runs_dir="runs",
        progress: Callable[[int, int], None] | None = None, write: bool = True) -> list[RunRecord]:
    """Train one head per spec on the cache's train split, selecting each run's best epoch on val.

    Returns the run records (with their directories when ``write``). Raises ValueError for bad
    options, CacheError for a missing/incomplete cache or one without train/val splits.
    """
    cfg = cfg or FitConfig()
    cfg.validate()
    if not specs:
        raise ValueError("no runs to fit")
    cache = open_cache(cache_path)
    dev = resolve_device(cfg.device)
    prec = resolve_precision(cfg.precision, dev)
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
    store = torch.float32 if prec == "fp32" else dtype_of(prec)
    Xtr, Xva = Xtr.to(dev, store), Xva.to(dev, store)  # no copy when already there
    Ytr_f, Yva_f = Ytr.to(dev, torch.float32), Yva.to(dev, torch.float32)
    yva_np = Yva.numpy()
    N, D = Xtr.shape
    C = Ytr.shape[1]
    groups = _make_groups(specs, D, cfg.hidden, C, dev)
    if Ytr.max() > 1 or Yva.max() > 1:  # once, instead of each loss checking every step
        raise ValueError(f"{cache.path}: labels must be multi-hot 0/1")
    params = [{"params": list(g.heads.parameters()), "lr": g.lr} for g in groups]
    opt = torch.optim.Adam(params, fused=dev.type in ("cpu", "cuda"))
    gens = {g.seed: torch.Generator().manual_seed(g.seed + 1_000_003) for g in groups}
    K = len(specs)
    history: list[list[dict]] = [[] for _ in range(K)]
    best = [{"value": None, "epoch": 0, "state": None} for _ in range(K)]
    sign = 1.0 if cfg.select == "val_loss" else -1.0
    t0 = time.perf_counter()
    for epoch in range(1, cfg.epochs + 1):
        perms = {s: torch.randperm(N, generator=gen).to(dev) for s, gen in gens.items()}
        train_sum = torch.zeros(K, device=dev)
        n_steps = 0
        for start in range(0, N, cfg.batch_size):
            opt.zero_grad(set_to_none=True)
            total = 0.0
            for g in groups:
                idx = perms[g.seed][start:start + cfg.batch_size]
                with autocast(dev, prec):
                    logits = g.heads(Xtr.index_select(0, idx))
                per_run = _group_loss(g, logits, Ytr_f.index_select(0, idx))
                total = total + per_run.sum()
                train_sum.index_add_(0, torch.tensor(g.runs, device=dev), per_run.detach())
            total.backward()
            opt.step()
            n_steps += 1
        if epoch % cfg.val_every and epoch != cfg.epochs:
            continue
        train_loss = (train_sum / n_steps).tolist()
        for g in groups:
            with torch.no_grad():
                val_logits = _predict(g.heads, Xva, dev, prec)
                val_loss = _group_loss(g, val_logits, Yva_f).tolist()
            for j, i in enumerate(g.runs):
                micro, macro = _val_scores(val_logits[j].cpu(), yva_np, cfg)
                row = {"epoch": epoch, "train_loss": train_loss[i], "val_loss": val_loss[j],
                       "val_micro_f1": micro, "val_macro_f1": macro}
                history[i].append(row)
                value = row[cfg.select]
                if np.isfinite(value) and (best[i]["value"] is None or sign * value < sign * best[i]["value"]):
                    best[i] = {"value": value, "epoch": epoch, "state": g.heads.head_state(j)}
        if progress:
            progress(epoch, cfg.epochs)
    seconds = time.perf_counter() - t0
    records = []
    for i, spec in enumerate(specs):
        g = next(g for g in groups if i in g.runs)
        state = best[i]["state"] or g.heads.head_state(g.runs.index(i))
        rec = RunRecord(config={
            **asdict(cfg), "precision": prec, "loss": spec.loss, "loss_options": spec.options, "seed": spec.seed,
            "lr": spec.lr, "dataset": cache.attrs.get("dataset", ""), "backbone": cache.attrs.get("backbone", ""),
            "cache": str(Path(cache.path).resolve()), "cache_fingerprint": cache.fingerprint,
            "classes": cache.classes, "dim": D, "n_train": N, "n_val": int(Xva.shape[0]),
            "best_epoch": best[i]["epoch"], "best_value": best[i]["value"], "stacked_runs": K,
            "train_seconds": seconds,
            "suggested_rule": getattr(L.LOSSES[L.canonical_name(spec.loss)], "DECISION_RULE", None)},
            state={**state, **scaling}, history=history[i])
        if write:
            rec.path = write_run(rec, Path(runs_dir), spec.label)
        records.append(rec)
    return records
