"""``mlhead sweep``: fit a grid as stacked heads, evaluate every run, print the Table-2 report."""

from __future__ import annotations

import click

from . import _grid, _track
from ._ui import console, epoch_progress, progress_bar
from .fit import warn_diverged
from .types import CommaList


@click.command()
@_grid.grid_options
@click.option("--activation", type=click.Choice(["softmax", "sigmoid", "none"]), default="softmax", show_default=True)
@click.option("--threshold", type=CommaList(float), default=None,
              help="threshold(s), comma-separated; each is evaluated [activation default]")
@click.option("--split", default="test", show_default=True)
@click.option("--group-by", default=None, help="report rows [loss, plus every option the grid varies, e.g. loss+beta+eta]")
@click.option("--ray", "ray_address", default=None, is_flag=False, flag_value="auto",
              help="spread grid cells over a Ray cluster (ADDRESS, or no value for a local Ray)")
@_track.track_option
def sweep(runs_dir, activation, threshold, split, group_by, ray_address, track, **grid):
    """Fit a grid (losses x seeds x options) as stacked heads, evaluate every run, print the Table-2 report."""
    from ..rules import DecisionRule
    from ..sweep import default_group_by, result_tables, sweep as run_sweep

    cache_path, specs, cfg = _grid.build(**grid)
    rules = [DecisionRule(activation, t) for t in threshold or [None]]
    console.print(f"sweep: {len(specs)} run(s) x {len(rules)} rule(s) on [bold]{cache_path}[/]")
    if ray_address:
        from ..distributed import ray_sweep

        results = ray_sweep(cache_path, specs, cfg, runs_dir, rules, split, address=ray_address)
    else:
        with progress_bar() as bar:
            results = run_sweep(cache_path, specs, cfg, runs_dir, rules, split,
                                progress=epoch_progress(bar, cfg.epochs, len(specs)))
    warn_diverged(sorted({r["run_dir"] for r in results if r.get("stop_reason") == "diverged"}))
    for t in result_tables(results, split, group_by or default_group_by(specs)):
        console.print(t.to_rich())
    _track.log(track, [r["run_dir"] for r in results], runs_dir)


COMMANDS = [sweep]
