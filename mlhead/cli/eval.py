"""``mlhead eval``: apply an explicit decision rule to fitted runs and report every metric."""

from __future__ import annotations

from pathlib import Path

import click

from . import _track
from ._ui import console, note, table, warn
from .types import CommaList


def metrics_table(title: str, values: dict, caption: str):
    """A rich table of metric name, value (with its unit) and meaning (from ``METRIC_DOCS``)."""
    from ..metrics import metric_doc

    rows = []
    for k, v in values.items():
        doc = metric_doc(k)
        rows.append((k, f"{v:.3f} {doc[0]}" if isinstance(v, float) else v, doc[2]))
    t = table(("metric", "value", "meaning"), rows, title=title, caption=caption)
    t.columns[1].justify = "right"
    t.columns[2].style = "dim"
    return t


def per_class_table(doc: dict):
    """A rich table of an evaluation's per-class rows."""
    rows = doc["per_class"]
    return table(list(rows[0]), ([f"{v:.2f}" if isinstance(v, float) else v for v in r.values()] for r in rows),
                 title=f"per class ({doc['rule']['name']})")


@click.command("eval")
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
@click.option("--k", "ks", type=CommaList(int), default=None,
              help="cut-offs of P@k, R@k, nDCG@k and PSP@k (propensities from the train labels) [1,3,5 up to C]")
@_track.track_option
def eval_(run_dir, runs_dir, all_runs, split, activation, threshold, top_k, tune_thresholds, cache_path, output,
          per_class, ks, track):
    """Apply an explicit decision rule to a fitted run and report every metric (percent)."""
    from ..rules import DecisionRule
    from ..runs import evaluate_run
    from ..workspace import resolve_runs

    rule = DecisionRule(activation, threshold, top_k, tuned_on="val" if tune_thresholds else None)
    dirs = resolve_runs(run_dir, runs_dir, all_runs)
    for d in dirs:
        doc = evaluate_run(d, split, rule, cache_path, output if len(dirs) == 1 else None, ks)
        cfg = doc["config"]
        caption = (f"{cfg['dataset']} / {cfg['backbone']} / {split}; decision rule: {doc['rule']['name']}; "
                   f"loss {cfg['loss']} {cfg['loss_options'] or ''} seed {cfg['seed']}")
        console.print(metrics_table(f"{d}", doc["metrics"], caption))
        if per_class:
            console.print(per_class_table(doc))
        for w in doc["warnings"]:
            warn(w)
        for n in doc["notes"]:
            note(n)
        console.print(f"wrote {doc['path'] or output}")
    _track.log(track, dirs, runs_dir)


COMMANDS = [eval_]
