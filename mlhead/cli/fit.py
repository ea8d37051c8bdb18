"""``mlhead fit``: stage two, train the head(s) on cached embeddings."""

from __future__ import annotations

import click

from . import _grid, _track
from ._ui import console, epoch_progress, err_console, progress_bar, table, warn


def _note(message: str) -> None:
    err_console.print(f"[yellow]note:[/] {message}", highlight=False, soft_wrap=True)


def warn_diverged(run_dirs, epochs: dict | None = None) -> None:
    """One warning line per diverged run (its loss became non-finite or exploded)."""
    for d in run_dirs:
        at = f" at epoch {epochs[d]}" if epochs and d in epochs else ""
        warn(f"run {d} diverged{at} (non-finite loss or > 1e3 x its initial loss; try a lower --lr); stopped, "
             "kept out of report means")


@click.command()
@_grid.grid_options
@_track.track_option
def fit(runs_dir, track, **grid):
    """Stage two: train the head(s) on cached embeddings; lists of losses/seeds/options train at once."""
    from ..train import fit as run_fit

    cache_path, specs, cfg = _grid.build(**grid)
    console.print(f"fitting {len(specs)} run(s) on [bold]{cache_path}[/]")
    with progress_bar() as bar:
        records = run_fit(cache_path, specs, cfg, runs_dir, progress=epoch_progress(bar, cfg.epochs, len(specs)),
                          notify=_note)
    first = records[0].config
    rows = [(r.path, r.config["best_epoch"], "-" if r.config["best_value"] is None else f"{r.config['best_value']:.4f}",
             f"{r.config.stop_reason} @ {r.config.stopped_epoch}") for r in records]
    console.print(table(("run", "best epoch", f"best {cfg.select}", "stopped"), rows,
                        title=f"{len(records)} run(s) ({first['precision']}, {first['train_seconds']:.1f} s)"))
    warn_diverged([r.path for r in records if r.config.diverged],
                  {r.path: r.config.stopped_epoch for r in records})
    _track.log(track, [r.path for r in records], runs_dir)


COMMANDS = [fit]
