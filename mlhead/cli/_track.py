"""``--track mlflow[:URI]``: the option fit, sweep, eval and reproduce share, and the call that logs
the run directories a command produced or evaluated (:func:`mlhead.tracking.log_runs`)."""

from __future__ import annotations

import click

from ._ui import console
from .types import Track

track_option = click.option(
    "--track", type=Track(), default=None,
    help="also log each run to MLflow: mlflow (SQLite store --runs-dir/mlflow.db) or mlflow:URI "
         "(any tracking URI); needs pip install 'mlhead[track]'")


def log(spec, run_dirs, runs_dir=None) -> None:
    """Log ``run_dirs`` under the parsed ``--track`` value (nothing when it is None) and print where."""
    if spec is None:
        return
    from ..tracking import log_runs

    tracked = log_runs(run_dirs, spec, runs_dir)
    console.print(f"tracked {len(tracked)} run(s) in MLflow at {', '.join(sorted({t.uri for t in tracked}))}",
                  highlight=False, soft_wrap=True)
