"""Command line: click commands that parse options, call the library and print with rich.

No logic lives here: every command is a thin layer over ``mlhead.embed``, ``mlhead.train``,
``mlhead.runs``, ``mlhead.metrics``, ``mlhead.report`` and ``mlhead.cache``. Known errors print as
one line (``error: ...``) with exit code 2, never a traceback.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path

import click
from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn, TextColumn,
                           TimeElapsedColumn, TimeRemainingColumn)
from rich.table import Table

_WIDTH = None if sys.stdout.isatty() else 140
console = Console(stderr=False, width=_WIDTH)
err_console = Console(stderr=True, width=_WIDTH)


def _known_errors() -> tuple[type[BaseException], ...]:
    from .backbones import BackboneError
    from .cache import CacheError
    from .datasets import DatasetError
    from .runs import RunError

    return (ValueError, CacheError, DatasetError, BackboneError, RunError, FileNotFoundError, OSError,
            FloatingPointError)


def friendly(fn):
    """Turn known library errors into one ``error: ...`` line and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except _known_errors() as e:
            err_console.print(f"[bold red]error:[/] {e}", highlight=False, markup=True, soft_wrap=True)
            sys.exit(2)
        except KeyboardInterrupt:
            err_console.print("[yellow]interrupted[/]: rerun the same command to resume")
            sys.exit(130)

    return wrapper


def _progress(unit: str) -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TaskProgressColumn(), TextColumn("{task.fields[rate]}"), TimeElapsedColumn(),
                    TimeRemainingColumn(), console=err_console, transient=False)


def _split_list(text: str | None, cast=str) -> list:
    if text is None:
        return []
    try:
        return [cast(x.strip()) for x in str(text).split(",") if x.strip()]
    except ValueError:
        raise click.BadParameter(f"cannot parse {text!r} as a comma-separated list of {cast.__name__}") from None


def _threshold(ctx, param, value):
    return value


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(package_name="mlhead")
def main():
    """mlhead: multilabel classification heads on frozen pretrained encoders.

    \b
    mlhead embed --dataset movieposters --data-dir DIR --weights W   # backbone once -> HDF5 cache
    mlhead fit --loss sigmoidf1 --beta 1 --eta 0                     # train the head on the cache
    mlhead eval --threshold 0.05                                     # decision rule + Table-2 metrics
    """


# ----------------------------------------------------------------------------------------- embed


def _parse_shard(value: str | None):
    if value is None:
        return None
    try:
        i, n = (int(x) for x in value.split("/"))
    except ValueError:
        raise click.BadParameter(f"{value!r}: expected i/n, e.g. 0/4") from None
    return i, n


@main.command()
@click.option("--dataset", required=True, help="dataset name (see `mlhead datasets`)")
@click.option("--data-dir", type=click.Path(path_type=Path), default=None,
              help="dataset folder or table file [default: $MLHEAD_DATA_DIR/<dataset> or ./data]")
@click.option("--cache-dir", type=click.Path(path_type=Path), default=Path("cache"), show_default=True)
@click.option("--output", "-o", type=click.Path(path_type=Path), default=None,
              help="cache file to write [default: <cache-dir>/<dataset>/<backbone>.h5]")
@click.option("--backbone", default=None, help="preset, timm name or local model folder [default: the dataset's]")
@click.option("--weights", type=click.Path(path_type=Path), default=None,
              help="local weights: safetensors/.pth file or folder (config.json gives timm kwargs, mean/std)")
@click.option("--random-init", is_flag=True, help="random backbone weights (smoke tests only)")
@click.option("--pooling", type=click.Choice(["mean", "cls"]), default=None, help="text pooling")
@click.option("--max-length", type=int, default=256, show_default=True, help="text: max tokens")
@click.option("--precision", type=click.Choice(["auto", "fp32", "bf16", "fp16"]), default="auto", show_default=True)
@click.option("--batch-size", type=int, default=64, show_default=True)
@click.option("--workers", type=int, default=None, help="DataLoader workers for decoding/tokenizing")
@click.option("--split-seed", type=int, default=44, show_default=True)
@click.option("--split-mode", type=click.Choice(["random", "paper-contiguous"]), default="random", show_default=True)
@click.option("--labels", "labels_mode", default=None, help="movieposters: altered (default) | original")
@click.option("--voc-difficult", type=click.Choice(["positive", "ignore", "negative"]), default=None)
@click.option("--text-column", default=None, help="table: text column")
@click.option("--image-column", default=None, help="table: image-path column")
@click.option("--labels-column", default=None, help="table: labels column [labels]")
@click.option("--label-sep", default=None, help="table: label separator [|]")
@click.option("--split-column", default=None, help="table: split column (train/val/test)")
@click.option("--id-column", default=None, help="table: id column")
@click.option("--classes", default=None, help="table: comma-separated class list")
@click.option("--name", "mulan_name", default=None, help="mulan: benchmark name (emotions, scene, ...)")
@click.option("--on-error", type=click.Choice(["raise", "skip"]), default="raise", show_default=True,
              help="bad rows (corrupt image, empty text, bad label): stop with an error, or skip and count them")
@click.option("--force", is_flag=True, help="rebuild even if a cache (or an interrupted one) with other inputs exists")
@click.option("--wait-lock", is_flag=True, help="wait for another writer of the same cache instead of failing")
@click.option("--shard", default=None, help="embed one deterministic slice i/n into its own shard file")
@click.option("--device", default=None, help="cpu, cuda, cuda:1 [default: cuda if available]")
@friendly
def embed(dataset, data_dir, cache_dir, output, backbone, weights, random_init, pooling, max_length, precision,
          batch_size, workers, split_seed, split_mode, labels_mode, voc_difficult, text_column, image_column,
          labels_column, label_sep, split_column, id_column, classes, mulan_name, on_error, force, wait_lock,
          shard, device):
    """Stage one: run the frozen backbone once over every split and cache the embeddings (HDF5)."""
    from .datasets import default_data_dir
    from .embed import embed as run_embed

    options = {k: v for k, v in dict(labels=labels_mode, voc_difficult=voc_difficult, text_column=text_column,
                                     image_column=image_column, labels_column=labels_column, label_sep=label_sep,
                                     split_column=split_column, id_column=id_column, classes=classes,
                                     name=mulan_name).items() if v is not None}
    with _progress("rows") as bar:
        tasks: dict[str, int] = {}
        import time as _t
        t_start: dict[str, tuple[float, int]] = {}

        def progress(split, done, total):
            if split not in tasks:
                tasks[split] = bar.add_task(f"embed {split}", total=total, completed=done, rate="")
                t_start[split] = (_t.perf_counter(), done)
            t0, d0 = t_start[split]
            dt = _t.perf_counter() - t0
            rate = f"{(done - d0) / dt:.1f} rows/s" if dt > 0 and done > d0 else (f"resumed at {d0}" if d0 else "")
            bar.update(tasks[split], completed=done, rate=rate)

        res = run_embed(dataset, data_dir or default_data_dir(dataset), cache_dir=cache_dir, backbone=backbone,
                        weights=weights, random_init=random_init, pooling=pooling, max_length=max_length,
                        precision=precision, batch_size=batch_size, workers=workers, split_seed=split_seed,
                        split_mode=split_mode, on_error=on_error, force=force, shard=_parse_shard(shard),
                        dataset_options=options, device=device, wait_lock=wait_lock, progress=progress,
                        output=output)
    for note in res.notes:
        console.print(f"[dim]{note}[/]")
    if res.up_to_date:
        console.print(f"cache up to date: [bold]{res.path}[/] (same inputs; --force rebuilds)")
        return
    t = Table(title=f"cache written: {res.path}")
    for col in ("split", "rows"):
        t.add_column(col)
    for s, n in res.rows.items():
        t.add_row(s, str(n))
    console.print(t)
    console.print(f"{sum(res.rows.values())} rows in {res.seconds:.1f} s ({res.rows_per_second:.1f} rows/s)"
                  + (f", resumed from {res.resumed_rows}" if res.resumed_rows else "")
                  + (f"; skipped {len(res.skipped)} bad rows (listed in the cache attrs)" if res.skipped else ""))


# ------------------------------------------------------------------------------------------- fit


@main.command()
@click.option("--cache", "cache_path", type=click.Path(path_type=Path), default=None,
              help="cache file [default: the newest under --cache-dir]")
@click.option("--cache-dir", type=click.Path(path_type=Path), default=Path("cache"), show_default=True)
@click.option("--loss", default="sigmoidf1", show_default=True, help="loss name(s), comma-separated (see `mlhead losses`)")
@click.option("--seed", default="0", show_default=True, help="seed(s), comma-separated")
@click.option("--lr", default="1e-3", show_default=True, help="Adam learning rate(s), comma-separated")
@click.option("--beta", default=None, help="sigmoidF1/smooth-*: slope(s) beta > 0, comma-separated")
@click.option("--eta", default=None, help="sigmoidF1/smooth-*: offset(s) eta, comma-separated")
@click.option("--presigmoid", is_flag=True, help="sigmoidF1: reproduce the paper's code (sigmoid before S)")
@click.option("--loss-option", "-O", "loss_options", multiple=True,
              help="other loss option KEY=VALUE[,VALUE...] (e.g. -O gamma=2 -O average=micro)")
@click.option("--epochs", type=int, default=100, show_default=True)
@click.option("--batch-size", type=int, default=256, show_default=True)
@click.option("--hidden", type=int, default=1024, show_default=True, help="hidden width; 0 = linear probe")
@click.option("--precision", type=click.Choice(["auto", "fp32", "bf16", "fp16"]), default="auto", show_default=True)
@click.option("--select", type=click.Choice(["val_loss", "val_micro_f1", "val_macro_f1"]), default="val_loss",
              show_default=True, help="criterion for the best epoch")
@click.option("--device", default=None)
@click.option("--runs-dir", type=click.Path(path_type=Path), default=Path("runs"), show_default=True)
@friendly
def fit(cache_path, cache_dir, loss, seed, lr, beta, eta, presigmoid, loss_options, epochs, batch_size, hidden,
        precision, select, device, runs_dir):
    """Stage two: train the head(s) on cached embeddings; lists of losses/seeds/options train at once."""
    from .cache import latest_cache
    from .train import FitConfig, expand_grid, fit as run_fit

    options = {}
    if beta is not None:
        options["beta"] = _split_list(beta, float)
    if eta is not None:
        options["eta"] = _split_list(eta, float)
    if presigmoid:
        options["presigmoid"] = [True]
    for item in loss_options:
        if "=" not in item:
            raise click.BadParameter(f"{item!r}: expected KEY=VALUE", param_hint="--loss-option")
        k, v = item.split("=", 1)
        options[k.strip().replace("-", "_")] = _split_list(v)
    specs = expand_grid(_split_list(loss), _split_list(seed, int), _split_list(lr, float), options)
    cache_path = cache_path or latest_cache(cache_dir)
    cfg = FitConfig(epochs=epochs, batch_size=batch_size, hidden=hidden, precision=precision, device=device,
                    select=select)
    console.print(f"fitting {len(specs)} run(s) on [bold]{cache_path}[/]")
    with _progress("epochs") as bar:
        task = bar.add_task("fit", total=epochs, rate="")
        records = run_fit(cache_path, specs, cfg, runs_dir,
                          progress=lambda e, n: bar.update(task, completed=e, rate=f"{len(specs)} run(s)"))
    t = Table(title=f"{len(records)} run(s) ({records[0].config['precision']}, "
                    f"{records[0].config['train_seconds']:.1f} s)")
    for col in ("run", "best epoch", f"best {select}"):
        t.add_column(col)
    for r in records:
        t.add_row(str(r.path), str(r.config["best_epoch"]), f"{r.config['best_value']:.4f}")
    console.print(t)


# ------------------------------------------------------------------------------------------ eval


def _metrics_table(title: str, values: dict, caption: str) -> Table:
    from .metrics import METRIC_DOCS

    t = Table(title=title, caption=caption)
    t.add_column("metric")
    t.add_column("value", justify="right")
    t.add_column("meaning", style="dim")
    for k, v in values.items():
        doc = METRIC_DOCS.get(k, ("", "", ""))
        t.add_row(k, f"{v:.3f} {doc[0]}" if isinstance(v, float) else str(v), str(doc[2]))
    return t


@main.command("eval")
@click.option("--run", "run_dir", type=click.Path(path_type=Path), default=None,
              help="run directory [default: the newest under --runs-dir]")
@click.option("--runs-dir", type=click.Path(path_type=Path), default=Path("runs"), show_default=True)
@click.option("--all", "all_runs", is_flag=True, help="evaluate every run under --runs-dir")
@click.option("--split", default="test", show_default=True)
@click.option("--activation", type=click.Choice(["softmax", "sigmoid", "none"]), default="softmax", show_default=True)
@click.option("--threshold", type=float, default=None,
              help="label j predicted when score_j >= threshold [softmax 0.05, sigmoid 0.5, none 0]")
@click.option("--top-k", type=int, default=None, help="predict the K highest-scoring labels instead")
@click.option("--tune-thresholds", is_flag=True, help="per-class thresholds tuned on val (max F1), applied to --split")
@click.option("--cache", "cache_path", type=click.Path(path_type=Path), default=None, help="override the run's cache")
@click.option("--output", "-o", type=click.Path(path_type=Path), default=None, help="also write FILE.json or FILE.csv")
@click.option("--per-class", is_flag=True, help="print the per-class table")
@friendly
def eval_(run_dir, runs_dir, all_runs, split, activation, threshold, top_k, tune_thresholds, cache_path, output,
          per_class):
    """Apply an explicit decision rule to a fitted run and report every metric (percent)."""
    from .runs import evaluate_run, latest_run

    if all_runs:
        dirs = sorted(p.parent for p in Path(runs_dir).rglob("config.json"))
    else:
        dirs = [run_dir or latest_run(runs_dir)]
    for d in dirs:
        doc = evaluate_run(d, split, activation, threshold, top_k, tune_thresholds, cache_path,
                           output if len(dirs) == 1 else None)
        cfg = doc["config"]
        caption = (f"{cfg['dataset']} / {cfg['backbone']} / {split}; decision rule: {doc['rule']['name']}; "
                   f"loss {cfg['loss']} {cfg['loss_options'] or ''} seed {cfg['seed']}")
        console.print(_metrics_table(f"{d}", doc["metrics"], caption))
        if per_class:
            t = Table(title=f"per class ({doc['rule']['name']})")
            for col in doc["per_class"][0]:
                t.add_column(col)
            for row in doc["per_class"]:
                t.add_row(*(f"{v:.2f}" if isinstance(v, float) else str(v) for v in row.values()))
            console.print(t)
        console.print(f"wrote {doc['path']}")


# ------------------------------------------------------------------------------------ catalogues


@main.command("losses")
@friendly
def losses_cmd():
    """List every loss: name, options (default, valid range), source and reduction."""
    from .losses import describe

    t = Table(title="losses (mlhead fit --loss NAME)")
    for col in ("name", "options (default; valid)", "source", "reduction"):
        t.add_column(col)
    for d in describe():
        opts = "\n".join(f"{o['name']}={o['default']} ({o['valid']})" for o in d["options"]) or "-"
        t.add_row(d["name"], opts, d["source"], d["reduction"])
    console.print(t)


@main.command("datasets")
@friendly
def datasets_cmd():
    """List datasets: modality, default backbone, split and expected layout."""
    from .datasets import DATASETS

    t = Table(title="datasets (mlhead embed --dataset NAME)")
    for col in ("name", "modality", "default backbone", "split", "layout"):
        t.add_column(col)
    for name, cls in sorted(DATASETS.items()):
        t.add_row(name, cls.modality, cls.default_backbone, cls.split_doc, cls.layout)
    console.print(t)


if __name__ == "__main__":  # pragma: no cover
    main()
