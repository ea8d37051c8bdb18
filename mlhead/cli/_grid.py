"""Options shared by ``mlhead fit`` and ``mlhead sweep``: the cache, the grid (lists) and the training setup."""

from __future__ import annotations

from pathlib import Path

import click

from .types import CommaList, KeyValue, MemorySize, key_value_dict

PRECISIONS = click.Choice(["auto", "fp32", "bf16", "fp16"])


def grid_options(fn):
    """Decorate a command with the cache, grid and training options (see :func:`build`)."""
    opts = [
        click.option("--cache", "cache_path", type=click.Path(path_type=Path), default=None,
                     help="cache file [default: the newest under --cache-dir]"),
        click.option("--cache-dir", type=click.Path(path_type=Path), default=Path("cache"), show_default=True),
        click.option("--loss", type=CommaList(str), default="sigmoidf1", show_default=True,
                     help="loss name(s), comma-separated (see `mlhead losses`)"),
        click.option("--seed", type=CommaList(int), default="0", show_default=True, help="seed(s), comma-separated"),
        click.option("--lr", type=CommaList(float), default="1e-3", show_default=True,
                     help="Adam learning rate(s), comma-separated"),
        click.option("--beta", type=CommaList(float), default=None,
                     help="sigmoidF1/smooth-*: slope(s) beta > 0, comma-separated"),
        click.option("--eta", type=CommaList(float), default=None,
                     help="sigmoidF1/smooth-*: offset(s) eta, comma-separated"),
        click.option("--presigmoid", is_flag=True, help="sigmoidF1: reproduce the paper's code (sigmoid before S)"),
        click.option("--loss-option", "-O", "loss_options", type=KeyValue(CommaList(str)), multiple=True,
                     callback=key_value_dict, help="other loss option KEY=VALUE[,VALUE...] (e.g. -O gamma=2 -O average=micro)"),
        click.option("--epochs", type=int, default=100, show_default=True),
        click.option("--batch-size", type=int, default=256, show_default=True),
        click.option("--hidden", type=int, default=1024, show_default=True, help="hidden width; 0 = linear probe"),
        click.option("--precision", type=PRECISIONS, default="auto", show_default=True),
        click.option("--select", type=click.Choice(["val_loss", "val_micro_f1", "val_macro_f1"]), default="val_loss",
                     show_default=True, help="criterion for the best epoch"),
        click.option("--standardize", is_flag=True, help="alias of --normalize standardize"),
        click.option("--normalize", type=click.Choice(["none", "l2", "standardize"]), default="none", show_default=True,
                     help="input normalization stored with the head: l2 = x/||x|| (CLIP_benchmark), standardize = "
                          "z-score with train statistics (raw features, e.g. MULAN)"),
        click.option("--weight-decay", type=CommaList(float), default="0", show_default=True,
                     help="AdamW decoupled weight decay(s), comma-separated (a grid axis like --lr)"),
        click.option("--patience", type=int, default=None,
                     help="stop a run when --select has not improved for N evaluations [never]"),
        click.option("--pos-weight", default="none", show_default=True,
                     help="per-class positive weight (torch pos_weight) for crossentropy/focal/asl: auto = neg/pos "
                          "on train, none, or a JSON/CSV file of class -> weight"),
        click.option("--checkpoint-every", type=int, default=1, show_default=True,
                     help="save a resumable checkpoint every N epochs (0: never); rerun the command to resume"),
        click.option("--checkpoint-seconds", type=float, default=30.0, show_default=True,
                     help="at most one checkpoint per this many seconds of training (0: every --checkpoint-every)"),
        click.option("--memory-budget", type=MemorySize(), default=None,
                     help="memory fit may use for the data on top of the process itself (torch, libraries: "
                          "printed), e.g. 1G, 512M; a train split that does not fit is streamed from the cache in "
                          "shuffle buffers [default: half the available RAM, printed]"),
        click.option("--device", default=None),
        click.option("--runs-dir", type=click.Path(path_type=Path), default=Path("runs"), show_default=True),
    ]
    for o in reversed(opts):
        fn = o(fn)
    return fn


def build(cache_path, cache_dir, loss, seed, lr, beta, eta, presigmoid, loss_options, weight_decay, **fit_options):
    """(cache path, run specs, FitConfig) from the options of :func:`grid_options` (library calls only)."""
    from ..sweep import build_grid
    from ..train import FitConfig
    from ..workspace import resolve_cache

    specs = build_grid(loss, seed, lr, beta, eta, presigmoid, loss_options, weight_decay)
    cfg = FitConfig(**fit_options)
    return resolve_cache(cache_path, cache_dir), specs, cfg
