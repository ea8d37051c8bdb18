"""Command line: click commands that parse options, call the library and print with rich.

No logic lives here: every command is a thin layer over ``mlhead.embed``, ``mlhead.train``,
``mlhead.runs``, ``mlhead.metrics``, ``mlhead.report`` and ``mlhead.cache``. Known errors print as
one line (``error: ...``) with exit code 2, never a traceback.
"""

from __future__ import annotations

import functools
import json
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
    from .errors import BackboneError
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
@click.option("--workers", type=int, default=None, help="DataLoader worker processes for decoding/tokenizing [default: CUDA 2; CPU images 0 = each batch decoded here by every core between forward passes; CPU texts 1]")
@click.option("--split-seed", type=int, default=44, show_default=True)
@click.option("--split-mode", type=click.Choice(["random", "paper-contiguous", "stratified"]), default="random", show_default=True,
              help="random: seeded (table: stable hash of each row id); stratified: iterative multilabel stratification")
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
@click.option("--dataset-option", "-D", "dataset_opts", multiple=True,
              help="other loader option KEY=VALUE (e.g. -D file=keras_arxiv_data_sample1000.csv; see `mlhead datasets`)")
@click.option("--on-error", type=click.Choice(["raise", "skip"]), default="raise", show_default=True,
              help="bad rows (corrupt image, empty text, bad label): stop with an error, or skip and count them")
@click.option("--force", is_flag=True, help="rebuild even if a cache (or an interrupted one) with other inputs exists")
@click.option("--wait-lock", is_flag=True, help="wait for another writer of the same cache instead of failing")
@click.option("--shard", default=None, help="embed one deterministic slice i/n into its own shard file")
@click.option("--ray", "ray_address", default=None, is_flag=False, flag_value="auto",
              help="run the embed as --num-shards Ray tasks and merge them (ADDRESS of a Ray cluster; "
                   "no value: the cluster this machine belongs to, else a local Ray)")
@click.option("--num-shards", type=int, default=None,
              help="with --ray: number of shards [default: the cluster's GPUs, else its CPUs]")
@click.option("--device", default=None, help="cpu, cuda, cuda:1 [default: cuda if available]")
@friendly
def embed(dataset, data_dir, cache_dir, output, backbone, weights, random_init, pooling, max_length, precision,
          batch_size, workers, split_seed, split_mode, labels_mode, voc_difficult, text_column, image_column,
          labels_column, label_sep, split_column, id_column, classes, mulan_name, dataset_opts, on_error, force,
          wait_lock,
          shard, ray_address, num_shards, device):
    """Stage one: run the frozen backbone once over every split and cache the embeddings (HDF5)."""
    from .datasets import default_data_dir
    from .embed import EmbedConfig
    from .embed import embed as run_embed

    options = {k: v for k, v in dict(labels=labels_mode, voc_difficult=voc_difficult, text_column=text_column,
                                     image_column=image_column, labels_column=labels_column, label_sep=label_sep,
                                     split_column=split_column, id_column=id_column, classes=classes,
                                     name=mulan_name).items() if v is not None}
    for item in dataset_opts:
        if "=" not in item:
            raise click.BadParameter(f"{item!r}: expected KEY=VALUE", param_hint="--dataset-option")
        k, v = item.split("=", 1)
        try:  # true/false/numbers as JSON; anything else stays a string
            options[k.strip().replace("-", "_")] = json.loads(v.strip().lower() if v.strip().lower()
                                                             in ("true", "false") else v)
        except json.JSONDecodeError:
            options[k.strip().replace("-", "_")] = v
    config = EmbedConfig(dataset, data_dir or default_data_dir(dataset), cache_dir=cache_dir, output=output,
                         backbone=backbone, weights=weights, random_init=random_init, pooling=pooling,
                         max_length=max_length, precision=precision, batch_size=batch_size, workers=workers,
                         split_seed=split_seed, split_mode=split_mode, on_error=on_error, force=force,
                         shard=_parse_shard(shard), dataset_options=options, device=device, wait_lock=wait_lock)
    if ray_address is not None or num_shards is not None:
        if ray_address is None:
            raise click.BadParameter("needs --ray [ADDRESS]", param_hint="--num-shards")
        if shard is not None:
            raise click.BadParameter("--ray makes the shards itself; leave --shard out", param_hint="--shard")
        from .cache import open_cache
        from .distributed import ray_embed

        shards_done: list[dict] = []
        path = ray_embed(config, num_shards, address=ray_address, on_shard_done=shards_done.append)
        if not shards_done:
            console.print(f"cache up to date: [bold]{path}[/] (same inputs; --force rebuilds)")
            return
        c = open_cache(path)
        console.print(f"cache written: [bold]{path}[/] ({len(shards_done)} shards merged; "
                      f"{', '.join(f'{s} {c.shapes[s][0]}' for s in c.splits)} rows; "
                      f"{sum(s['resumed_rows'] > 0 for s in shards_done)} resumed)")
        return
    with _progress("rows") as bar:
        tasks: dict[str, int] = {}
        import time as _t
        t_start: dict[str, tuple[float, int]] = {}

        def progress(split, done, total):
            if split not in tasks:
                tasks[split] = bar.add_task(f"embed {split}" + (f" (resumed at {done})" if done else ""),
                                            total=total, completed=done, rate="")
                t_start[split] = (_t.perf_counter(), done)
            t0, d0 = t_start[split]
            dt = _t.perf_counter() - t0
            rate = f"{(done - d0) / dt:.1f} rows/s" if dt > 0 and done > d0 else (f"resumed at {d0}" if d0 else "")
            bar.update(tasks[split], completed=done, rate=rate)

        res = run_embed(config, progress=progress,
                        notify=lambda msg: err_console.print(f"[yellow]{msg}[/]", highlight=False, soft_wrap=True))
    for note in res.notes:
        console.print(f"[dim]{note}[/]")
    if res.up_to_date:
        console.print(f"cache up to date: [bold]{res.path}[/] (same inputs; --force rebuilds)")
        return
    console.print(f"cache written: [bold]{res.path}[/]", highlight=False, soft_wrap=True)
    t = Table()
    for col in ("split", "rows"):
        t.add_column(col)
    for s, n in res.rows.items():
        t.add_row(s, str(n))
    console.print(t)
    n_load, n_embed = len(res.skipped_at_load), len(res.skipped_while_embedding)
    console.print(f"{sum(res.rows.values())} rows in {res.seconds:.1f} s ({res.rows_per_second:.1f} rows/s)"
                  + (f", resumed from {res.resumed_rows} rows written earlier" if res.resumed_rows else "")
                  + (f"; skipped {len(res.skipped)} bad rows ({n_load} when loading the dataset, {n_embed} "
                     "unreadable while embedding; listed in the cache attrs skipped_at_load / skipped, "
                     "see `mlhead cache info`)" if res.skipped else ""), highlight=False, soft_wrap=True)


# ------------------------------------------------------------------------------------------- fit


def _grid_options(fn):
    """Options shared by `fit` and `sweep`: the cache, the grid (lists) and the training setup."""
    opts = [
        click.option("--cache", "cache_path", type=click.Path(path_type=Path), default=None,
                     help="cache file [default: the newest under --cache-dir]"),
        click.option("--cache-dir", type=click.Path(path_type=Path), default=Path("cache"), show_default=True),
        click.option("--loss", default="sigmoidf1", show_default=True,
                     help="loss name(s), comma-separated (see `mlhead losses`)"),
        click.option("--seed", default="0", show_default=True, help="seed(s), comma-separated"),
        click.option("--lr", default="1e-3", show_default=True, help="Adam learning rate(s), comma-separated"),
        click.option("--beta", default=None, help="sigmoidF1/smooth-*: slope(s) beta > 0, comma-separated"),
        click.option("--eta", default=None, help="sigmoidF1/smooth-*: offset(s) eta, comma-separated"),
        click.option("--presigmoid", is_flag=True, help="sigmoidF1: reproduce the paper's code (sigmoid before S)"),
        click.option("--loss-option", "-O", "loss_options", multiple=True,
                     help="other loss option KEY=VALUE[,VALUE...] (e.g. -O gamma=2 -O average=micro)"),
        click.option("--epochs", type=int, default=100, show_default=True),
        click.option("--batch-size", type=int, default=256, show_default=True),
        click.option("--hidden", type=int, default=1024, show_default=True, help="hidden width; 0 = linear probe"),
        click.option("--precision", type=click.Choice(["auto", "fp32", "bf16", "fp16"]), default="auto",
                     show_default=True),
        click.option("--select", type=click.Choice(["val_loss", "val_micro_f1", "val_macro_f1"]), default="val_loss",
                     show_default=True, help="criterion for the best epoch"),
        click.option("--standardize", is_flag=True, help="alias of --normalize standardize"),
        click.option("--normalize", type=click.Choice(["none", "l2", "standardize"]), default="none", show_default=True,
                     help="input normalization stored with the head: l2 = x/||x|| (CLIP_benchmark), standardize = "
                          "z-score with train statistics (raw features, e.g. MULAN)"),
        click.option("--weight-decay", default="0", show_default=True,
                     help="AdamW decoupled weight decay(s), comma-separated (a grid axis like --lr)"),
        click.option("--patience", type=int, default=None,
                     help="stop a run when --select has not improved for N evaluations [never]"),
        click.option("--pos-weight", default="none", show_default=True,
                     help="per-class positive weight (torch pos_weight) for crossentropy/focal/asl: auto = neg/pos "
                          "on train, none, or a JSON/CSV file of class -> weight"),
        click.option("--checkpoint-every", type=int, default=1, show_default=True,
                     help="save a resumable checkpoint every N epochs (0: never); rerun the command to resume"),
        click.option("--device", default=None),
        click.option("--runs-dir", type=click.Path(path_type=Path), default=Path("runs"), show_default=True),
    ]
    for o in reversed(opts):
        fn = o(fn)
    return fn


def _grid(cache_path, cache_dir, loss, seed, lr, beta, eta, presigmoid, loss_options, epochs, batch_size, hidden,
          precision, select, standardize, normalize, weight_decay, patience, pos_weight, checkpoint_every, device):
    """(cache path, run specs, FitConfig) from the shared grid options."""
    from .cache import latest_cache
    from .train import FitConfig, expand_grid

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
    specs = expand_grid(_split_list(loss), _split_list(seed, int), _split_list(lr, float), options,
                        _split_list(weight_decay, float))
    cfg = FitConfig(epochs=epochs, batch_size=batch_size, hidden=hidden, precision=precision, device=device,
                    select=select, standardize=standardize, normalize=normalize, patience=patience,
                    pos_weight=pos_weight, checkpoint_every=checkpoint_every)
    return cache_path or latest_cache(cache_dir), specs, cfg


def _epoch_bar(bar: Progress, epochs: int, n_runs: int):
    task = bar.add_task("fit", total=epochs, rate="")
    return lambda e, n: bar.update(task, completed=e, rate=f"{n_runs} run(s)")


@main.command()
@_grid_options
@friendly
def fit(runs_dir, **grid):
    """Stage two: train the head(s) on cached embeddings; lists of losses/seeds/options train at once."""
    from .train import fit as run_fit

    cache_path, specs, cfg = _grid(**grid)
    console.print(f"fitting {len(specs)} run(s) on [bold]{cache_path}[/]")
    with _progress("epochs") as bar:
        records = run_fit(cache_path, specs, cfg, runs_dir, progress=_epoch_bar(bar, cfg.epochs, len(specs)),
                          notify=_note)
    t = Table(title=f"{len(records)} run(s) ({records[0].config['precision']}, "
                    f"{records[0].config['train_seconds']:.1f} s)")
    for col in ("run", "best epoch", f"best {cfg.select}", "stopped"):
        t.add_column(col)
    for r in records:
        best = "-" if r.config["best_value"] is None else f"{r.config['best_value']:.4f}"
        t.add_row(str(r.path), str(r.config["best_epoch"]), best, f"{r.config.stop_reason} @ {r.config.stopped_epoch}")
    console.print(t)
    _warn_diverged(records)


def _note(message: str) -> None:
    err_console.print(f"[yellow]note:[/] {message}", highlight=False, soft_wrap=True)


def _warn_diverged(records) -> None:
    """One warning line per diverged run (its loss became non-finite or exploded)."""
    for r in records:
        if r.config.diverged:
            err_console.print(f"[bold yellow]warning:[/] run {r.path} diverged at epoch {r.config.stopped_epoch} "
                              "(non-finite loss or > 1e3 x its initial loss; try a lower --lr); stopped, kept out "
                              "of report means", highlight=False, soft_wrap=True)


@main.command()
@_grid_options
@click.option("--activation", type=click.Choice(["softmax", "sigmoid", "none"]), default="softmax", show_default=True)
@click.option("--threshold", default=None, help="threshold(s), comma-separated; each is evaluated [activation default]")
@click.option("--split", default="test", show_default=True)
@click.option("--group-by", default=None, help="report rows [loss, or loss+beta+eta when a beta/eta grid is given]")
@click.option("--ray", "ray_address", default=None, is_flag=False, flag_value="auto",
              help="spread grid cells over a Ray cluster (ADDRESS, or no value for a local Ray)")
@friendly
def sweep(runs_dir, activation, threshold, split, group_by, ray_address, **grid):
    """Fit a grid (losses x seeds x options) as stacked heads, evaluate every run, print the Table-2 report."""
    from . import report as R
    from .rules import DecisionRule
    from .sweep import sweep as run_sweep

    cache_path, specs, cfg = _grid(**grid)
    thresholds = _split_list(threshold, float) or [None]
    rules = [DecisionRule(activation, t) for t in thresholds]
    console.print(f"sweep: {len(specs)} run(s) x {len(rules)} rule(s) on [bold]{cache_path}[/]")
    if ray_address:
        from .distributed import ray_sweep
        results = ray_sweep(cache_path, specs, cfg, runs_dir, rules, split, address=ray_address)
    else:
        with _progress("epochs") as bar:
            results = run_sweep(cache_path, specs, cfg, runs_dir, rules, split,
                                progress=_epoch_bar(bar, cfg.epochs, len(specs)))
    for d in sorted({r["run_dir"] for r in results if r.get("stop_reason") == "diverged"}):
        err_console.print(f"[bold yellow]warning:[/] run {d} diverged (see stop_reason/stopped_epoch in its "
                          "config.json); kept out of the report means", highlight=False, soft_wrap=True)
    multi = [k for k in ("beta", "eta", "lr", "weight_decay") if grid.get(k) and len(_split_list(grid[k])) > 1]
    records = R.collect(sorted({r["run_dir"] for r in results}))
    for rule in dict.fromkeys(r["rule_name"] for r in records):
        console.print(R.table2(records, split=split, rule=rule, group_by=group_by or "+".join(["loss", *multi])).to_rich())


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
    from .rules import DecisionRule
    from .runs import evaluate_run, latest_run

    rule = DecisionRule(activation, threshold, top_k, tuned_on="val" if tune_thresholds else None)

    if all_runs:
        dirs = sorted(p.parent for p in Path(runs_dir).rglob("config.json"))
    else:
        dirs = [run_dir or latest_run(runs_dir)]
    for d in dirs:
        doc = evaluate_run(d, split, rule, cache_path, output if len(dirs) == 1 else None)
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


# ---------------------------------------------------------------------------------------- report


@main.command()
@click.argument("runs", nargs=-1, type=click.Path(path_type=Path))
@click.option("--split", default="test", show_default=True)
@click.option("--rule", default=None, help="decision rule name, e.g. 'softmax>=0.05' [required if runs mix rules]")
@click.option("--group-by", default="loss", show_default=True, help="row key(s), e.g. loss or loss+beta+eta")
@click.option("--metrics", "metric_list", default=None,
              help="columns [weighted_f1,micro_f1,macro_f1,macro_precision,map]")
@click.option("--dataset", default=None, help="keep only runs of this dataset")
@click.option("--backbone", default=None, help="keep only runs of this backbone")
@click.option("--out-dir", type=click.Path(path_type=Path), default=None,
              help="write table2.md, table2.tex, table2.csv (and plots) here")
@click.option("--heatmap", "heatmap_metric", default=None, help="Figure-3 beta x eta heatmap of this metric")
@click.option("--heatmap-loss", default="sigmoidf1", show_default=True)
@click.option("--learning-curves", is_flag=True, help="plot learning curves from history.csv")
@click.option("--per-class", "per_class_run", type=click.Path(path_type=Path), default=None,
              help="per-class F1 bars and PR curves of this run (its latest evaluation)")
@click.option("--html", "html_path", type=click.Path(path_type=Path), default=None,
              help="also write one self-contained HTML page (tables, figures, run links, provenance)")
@friendly
def report(runs, split, rule, group_by, metric_list, dataset, backbone, out_dir, heatmap_metric, heatmap_loss,
           learning_curves, per_class_run, html_path):
    """Aggregate evaluated runs into a Table-2-shaped table (mean +- std over seeds, best in bold)."""
    from . import report as R

    records = R.collect(list(runs) or [Path("runs")])
    kw = {"metrics": _split_list(metric_list)} if metric_list else {}
    table = R.table2(records, split=split, rule=rule, group_by=group_by, dataset=dataset, backbone=backbone, **kw)
    console.print(table.to_rich())
    written = []
    if out_dir:
        out_dir.mkdir(parents=True, exist_ok=True)
        for name, text in (("table2.md", table.to_markdown()), ("table2.tex", table.to_latex())):
            (out_dir / name).write_text(text)
            written.append(out_dir / name)
        table.to_csv(out_dir / "table2.csv")
        written.append(out_dir / "table2.csv")
    plots = out_dir or Path(".")
    if heatmap_metric:
        written += R.plot_heatmap(records, heatmap_metric, plots / f"heatmap_{heatmap_metric}", split=split,
                                  rule=rule or table.rule, loss=heatmap_loss, dataset=dataset, backbone=backbone)
    if learning_curves:
        runs = {Path(r["run_dir"]): r["config"] for r in records if (Path(r["run_dir"]) / "history.csv").exists()}
        labels = [f"{c.get('loss')} {c.get('loss_options') or ''} s{c.get('seed')}".replace("  ", " ")
                  for c in runs.values()]
        written += R.plot_learning_curves([d / "history.csv" for d in runs], plots / "learning_curves",
                                          metrics=["micro_f1"], labels=labels)
    if per_class_run:
        rows, probs, targets, classes = R.per_class_data(per_class_run)
        written += R.plot_per_class_f1(rows, plots / "per_class_f1")
        written += R.plot_pr_curves(probs, targets, classes, plots / "pr_curves")
    if html_path:
        written.append(R.render_html(list(runs) or [Path("runs")], html_path, split=split, rule=rule,
                                     group_by=group_by, dataset=dataset, backbone=backbone,
                                     heatmap_metric=heatmap_metric or "weighted_f1", heatmap_loss=heatmap_loss,
                                     per_class_run=per_class_run, command=["mlhead", *sys.argv[1:]], **kw))
    for p in written:
        console.print(f"wrote {p}")


# ----------------------------------------------------------------------------------------- cache


@main.group("cache")
def cache_group():
    """Inspect and check embedding caches (HDF5 files written by `mlhead embed`)."""


def _fmt(v, n: int = 70) -> str:
    text = v if isinstance(v, str) else json.dumps(v, sort_keys=True, default=str)
    return text if len(text) <= n else text[:n - 3] + "..."


@cache_group.command("info")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="print the description as JSON")
@friendly
def cache_info_cmd(path, as_json):
    """Describe a cache: state (complete, or an interrupted partial), splits and shapes, classes, label
    cardinality, backbone, fingerprint fields, skipped rows."""
    from .cache import cache_info

    info = cache_info(path)
    if as_json:
        click.echo(json.dumps(info, indent=2, sort_keys=True, default=str))
        return
    t = Table(title=f"cache {info['path']}", show_header=False)
    t.add_column("key", style="bold")
    t.add_column("value")
    classes = info["classes"]
    rows = [("state", info["state"]), ("dataset", info.get("dataset") or "-"),
            ("backbone", info.get("backbone") or "-"), ("precision", info.get("precision") or "-"),
            ("dim", str(info.get("dim"))),
            ("classes", f"{len(classes)}: {_fmt(', '.join(map(str, classes)), 100)}"),
            ("skipped rows", f"{info['skipped_total']} ({info['skipped_at_load']} when loading, "
                             f"{info['skipped']} while embedding)"),
            ("fingerprint", info.get("fingerprint") or "-"),
            ("checksums", f"{info['checksums']} datasets" if info.get("checksums") else "none stored")]
    for k, v in rows:
        t.add_row(k, v)
    console.print(t)
    partial = info.get("partial") or {}
    show_partial = not info["complete"] and partial.get("readable")
    st = Table(title="splits" + (" (rows durable so far in the partial)" if show_partial else ""))
    cols = ["split", "rows", "dim", "classes", "labels", "label cardinality", "label density", "rows without labels"]
    cols += ["planned", "consumed"] if show_partial else []
    for c in cols:
        st.add_column(c, justify="left" if c == "split" else "right")
    for name, v in info["splits"].items():
        cells = [name, str(v.get("rows")), str(v.get("dim")), str(v.get("n_classes")), str(v.get("labels_layout") or "-"),
                 f"{v.get('label_cardinality', 0.0):.3f}", f"{v.get('label_density', 0.0):.3f}",
                 str(v.get("rows_without_labels", "-"))]
        cells += [str(v.get("planned")), str(v.get("consumed"))] if show_partial else []
        st.add_row(*cells)
    console.print(st)
    if info["complete"] and partial.get("readable"):
        done = sum(v["rows"] for v in partial["splits"].values())
        console.print(f"[yellow]an interrupted rebuild is pending[/] in {partial['path']} ({done} rows so far)")
    bad = [r for r in info.get("skipped_rows", []) if isinstance(r, dict)]
    if bad:
        bt = Table(title=f"skipped rows ({len(bad)}" + (", first 20)" if len(bad) > 20 else ")"))
        for c in ("when", "id", "where", "error"):
            bt.add_column(c)
        for r in bad[:20]:
            bt.add_row(str(r.get("when")), _fmt(str(r.get("id")), 30), _fmt(str(r.get("where", "")), 50),
                       _fmt(str(r.get("error", "")), 80))
        console.print(bt)
    fields = info.get("fingerprint_fields") or {}
    if fields:
        ft = Table(title="fingerprint fields (a change in any makes the cache stale)")
        ft.add_column("field")
        ft.add_column("value")
        for k in sorted(fields):
            ft.add_row(k, _fmt(fields[k]))
        console.print(ft)


@cache_group.command("merge")
@click.argument("shards", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--output", "-o", type=click.Path(path_type=Path), default=None,
              help="merged cache file [default: the shards' file name without .shard-i-of-n]")
@click.option("--force", is_flag=True, help="overwrite an output that was made from other inputs")
@click.option("--remove-shards", is_flag=True, help="delete the shard files after a successful merge")
@friendly
def cache_merge_cmd(shards, output, force, remove_shards):
    """Join the shard files of `mlhead embed --shard i/n` (all n, any order) into the file one run writes."""
    from .cache import open_cache
    from .shards import merge_shards

    with _progress("rows") as bar:
        tasks: dict[str, int] = {}

        def progress(split, done, total):
            if split not in tasks:
                tasks[split] = bar.add_task(f"merge {split}", total=total, completed=done, rate="")
            bar.update(tasks[split], completed=done)

        path = merge_shards(shards, output, force=force, remove=remove_shards, progress=progress)
    c = open_cache(path)
    console.print(f"merged {len(shards)} shard(s) into [bold]{path}[/] "
                  f"({', '.join(f'{s} {c.shapes[s][0]}' for s in c.splits)} rows)")


@cache_group.command("import")
@click.argument("embeddings", type=click.Path(path_type=Path))
@click.argument("labels", type=click.Path(path_type=Path))
@click.option("--output", "-o", type=click.Path(path_type=Path), default=None,
              help="cache file to write [default: <cache-dir>/<dataset>/imported.h5]")
@click.option("--cache-dir", type=click.Path(path_type=Path), default=Path("cache"), show_default=True,
              help="root of the default output (where fit looks for the newest cache)")
@click.option("--dataset", default=None, help="dataset name recorded in the cache [default: the labels file's stem]")
@click.option("--id-column", default="id", show_default=True, help="id column (labels table; Parquet embeddings)")
@click.option("--labels-column", default="labels", show_default=True,
              help="labels column: names separated by --label-sep, or a JSON list; empty = no label")
@click.option("--label-sep", default="|", show_default=True, help="separator between label names")
@click.option("--split-column", default="split", show_default=True,
              help="split column (train/val/test), in the labels table or the Parquet embeddings")
@click.option("--embedding-column", default=None,
              help="Parquet list column holding the embedding [default: the only list column, else emb_0, emb_1, ...]")
@click.option("--labels-layout", type=click.Choice(["auto", "dense", "csr"]), default="auto", show_default=True,
              help="label storage: auto = CSR above 1,000 classes")
@click.option("--force", is_flag=True, help="replace an existing output file")
@friendly
def cache_import_cmd(embeddings, labels, output, cache_dir, dataset, id_column, labels_column, label_sep,
                     split_column, embedding_column, labels_layout, force):
    """Build a cache from embeddings you already have (.npy, .npz, Parquet) and a labels table
    (CSV/TSV/JSONL/Parquet: id, labels[, split]); then `mlhead fit` trains on it as on an embedded cache."""
    from .cache import cache_info, import_cache

    dataset = dataset or labels.stem
    path = import_cache(output or cache_dir / dataset / "imported.h5", embeddings, labels, id_column=id_column,
                        labels_column=labels_column, split_column=split_column, label_sep=label_sep,
                        embedding_column=embedding_column, dataset=dataset, force=force, labels_layout=labels_layout)
    info = cache_info(path)
    rows = ", ".join(f"{s} {v['rows']}" for s, v in info["splits"].items())
    layout = next(iter(info["splits"].values()))["labels_layout"]
    console.print(f"imported [bold]{path}[/] ({rows} rows; dim {info['dim']}; {info['n_classes']} classes; "
                  f"labels {layout})", highlight=False)


@cache_group.command("verify")
@click.argument("path", type=click.Path(path_type=Path))
@friendly
def cache_verify_cmd(path):
    """Recompute a cache's invariants (shapes, dtypes, finite embeddings, 0/1 labels, unique ids, class
    count, complete flag, fingerprint); exit 0 with "ok", or exit 2 listing every problem."""
    from .cache import cache_info, verify_report

    problems, notes = verify_report(path)
    if problems:
        for p in problems:
            err_console.print(f"[bold red]problem:[/] {p}", highlight=False, soft_wrap=True)
        err_console.print(f"[bold red]error:[/] {path}: {len(problems)} problem(s)", highlight=False)
        sys.exit(2)
    info = cache_info(path)
    n = sum(v["rows"] for v in info["splits"].values())
    console.print(f"ok: {info['path']} ({n} rows in {len(info['splits'])} splits, {info['n_classes']} classes, "
                  f"dim {info['dim']}; {'; '.join(notes)})", highlight=False)


# ------------------------------------------------------------------------------------- reproduce


@main.group()
def reproduce():
    """Run the papers' protocols on a cache and write Markdown next to the paper's numbers."""


def _write_md(out: Path, name: str, text: str) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    (out / name).write_text(text)
    console.print(f"wrote {out / name}")
    return out / name


@reproduce.command("table2")
@click.option("--cache", "cache_path", type=click.Path(path_type=Path), required=True,
              help="cache made with the protocol's split (paper-code: --split-mode paper-contiguous)")
@click.option("--protocol", type=click.Choice(["paper-text", "paper-code"]), default="paper-text", show_default=True)
@click.option("--seeds", type=int, default=5, show_default=True)
@click.option("--epochs", type=int, default=None, help="[the paper's: 100, VOC 60]")
@click.option("--threshold", type=float, default=None, help="[the paper's: 0.05, VOC 0.5]")
@click.option("--beta", "betas", default="1,10,30", show_default=True, help="sigmoidF1 grid (paper: [1, 30])")
@click.option("--eta", "etas", default="0,1,2", show_default=True, help="sigmoidF1 grid (paper: [0, 2])")
@click.option("--precision", type=click.Choice(["auto", "fp32", "bf16", "fp16"]), default="auto", show_default=True)
@click.option("--runs-dir", type=click.Path(path_type=Path), default=Path("runs/reproduce"), show_default=True)
@click.option("--out-dir", type=click.Path(path_type=Path), default=Path("docs/reproduction"), show_default=True)
@friendly
def reproduce_table2(cache_path, protocol, seeds, epochs, threshold, betas, etas, precision, runs_dir, out_dir):
    """sigmoidF1 Table 2: 5 losses x seeds, sigmoidF1 beta/eta chosen on val; table, grid, heatmap."""
    from . import report as R
    from .reproduce import paper_table_markdown, table2_protocol

    res = table2_protocol(cache_path, protocol, runs_dir, seeds, epochs, threshold, _split_list(betas, float),
                          _split_list(etas, float), precision=precision, progress=lambda m: console.print(m))
    console.print(res["table"].to_rich())
    stem = f"{res['dataset']}-{protocol}"
    heat = R.plot_heatmap(res["grid_records"], "weighted_f1", out_dir / f"{stem}-heatmap", split="val",
                          loss="sigmoidf1")
    md = (f"### {res['dataset']} ({res['backbone']}), protocol `{protocol}`\n\n"
          f"Command: `mlhead reproduce table2 --cache {cache_path} --protocol {protocol} --seeds {seeds}"
          f"{f' --epochs {epochs}' if epochs is not None else ''}{f' --threshold {threshold:g}' if threshold is not None else ''}"
          f" --beta {betas} --eta {etas}`; "
          f"{res['epochs']} epochs, rule `{res['table'].rule}`, sigmoidF1 beta={res['beta']:g} eta={res['eta']:g} "
          f"(best val weighted_f1 of the grid); wall time {res['seconds'] / 60:.1f} min "
          f"(grid {res['grid_seconds'] / 60:.1f} min).\n\n{res['table'].to_markdown()}\n\n"
          f"{paper_table_markdown(res['dataset'])}\n{res['grid_table'].to_markdown()}\n\n"
          f"![beta x eta heatmap]({heat[0].name})\n")
    _write_md(out_dir, f"{stem}.md", md)
    res["table"].to_csv(out_dir / f"{stem}.csv")


@reproduce.command("zlpr")
@click.option("--cache", "cache_path", type=click.Path(path_type=Path), required=True)
@click.option("--seeds", type=int, default=5, show_default=True)
@click.option("--epochs", type=int, default=100, show_default=True)
@click.option("--hidden", type=int, default=1024, show_default=True)
@click.option("--standardize", is_flag=True, help="z-score raw features with train statistics (MULAN)")
@click.option("--runs-dir", type=click.Path(path_type=Path), default=Path("runs/reproduce"), show_default=True)
@click.option("--out-dir", type=click.Path(path_type=Path), default=Path("docs/reproduction"), show_default=True)
@friendly
def reproduce_zlpr(cache_path, seeds, epochs, hidden, standardize, runs_dir, out_dir):
    """ZLPR-paper style comparison (BCE, focal, dice1, dice2, ZLPR) on one cache."""
    from .reproduce import zlpr_comparison

    res = zlpr_comparison(cache_path, runs_dir, seeds, epochs, hidden=hidden, standardize=standardize)
    console.print(res["table"].to_rich())
    name = Path(cache_path).parent.name
    md = (f"### {name}: ZLPR-style comparison\n\nCommand: `mlhead reproduce zlpr --cache {cache_path} --seeds {seeds} "
          f"--epochs {epochs}{' --standardize' if standardize else ''}`; wall time {res['seconds'] / 60:.1f} min.\n\n{res['table'].to_markdown()}\n")
    _write_md(out_dir, f"{name}-zlpr.md", md)


# ------------------------------------------------------------------------------------ catalogues


@main.command("losses")
@friendly
def losses_cmd():
    """List every loss: name, options (default, valid range), source and reduction."""
    from .losses import describe

    t = Table(title="losses (mlhead fit --loss NAME)")
    for col in ("name", "options (default; valid)", "source", "reduction", "--pos-weight"):
        t.add_column(col)
    for d in describe():
        opts = "\n".join(f"{o['name']}={o['default']} ({o['valid']})" for o in d["options"]) or "-"
        name = d["name"] + "".join(f"\n(alias: {a})" for a in d.get("aliases", []))
        t.add_row(name, opts, d["source"], d["reduction"], d["pos_weight"] or "not accepted")
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
