"""``mlhead export``: a fitted run as a self-contained ONNX folder (model, labels, rule, preprocessing, card)."""

from __future__ import annotations

from pathlib import Path

import click

from ._ui import console
from .predict import rule_options


@click.command("export")
@click.option("--run", "run_dir", type=click.Path(path_type=Path), default=None,
              help="run directory [default: the newest under --runs-dir]")
@click.option("--runs-dir", type=click.Path(path_type=Path), default=Path("runs"), show_default=True)
@click.option("--format", "fmt", type=click.Choice(["onnx"]), default="onnx", show_default=True)
@click.option("--output", "-o", type=click.Path(path_type=Path), required=True, help="folder to create")
@rule_options
@click.option("--weights", type=click.Path(path_type=Path), default=None,
              help="the encoder's weights, when they moved since embed (checked by sha256)")
@click.option("--run-cache", type=click.Path(path_type=Path), default=None, help="the run's cache, when it moved")
def export(run_dir, runs_dir, fmt, output, activation, threshold, top_k, weights, run_cache):
    """Export a fitted run (encoder + head + decision rule) as an ONNX folder usable with onnxruntime alone."""
    from ..export import export_run
    from ..predict import rule_with
    from ..runs import last_rule
    from ..workspace import resolve_runs

    (run,) = resolve_runs(run_dir, runs_dir)
    res = export_run(run, output, fmt, rule=rule_with(last_rule(run), activation, threshold, top_k),
                     weights=weights, cache=run_cache)
    console.print(f"exported [bold]{res.path}[/] (decision rule {res.rule}): {', '.join(res.files)}",
                  highlight=False, soft_wrap=True)
    if res.max_abs_diff is not None:
        console.print(f"onnxruntime vs torch on a sample: max |score difference| = {res.max_abs_diff:.2e}")


COMMANDS = [export]
