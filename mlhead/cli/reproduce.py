"""``mlhead reproduce``: the papers' protocols on a cache, written as Markdown next to the paper's numbers."""

from __future__ import annotations

from pathlib import Path

import click

from . import _track
from ._ui import console
from .types import CommaList

PRECISIONS = click.Choice(["auto", "fp32", "bf16", "fp16"])


@click.group()
def reproduce():
    """Run the papers' protocols on a cache and write Markdown next to the paper's numbers."""


@reproduce.command("table2")
@click.option("--cache", "cache_path", type=click.Path(path_type=Path), required=True,
              help="cache made with the protocol's split (paper-code: --split-mode paper-contiguous)")
@click.option("--protocol", type=click.Choice(["paper-text", "paper-code"]), default="paper-text", show_default=True)
@click.option("--seeds", type=int, default=5, show_default=True)
@click.option("--epochs", type=int, default=None, help="[the paper's: 100, VOC 60]")
@click.option("--threshold", type=float, default=None, help="[the paper's: 0.05, VOC 0.5]")
@click.option("--beta", "betas", type=CommaList(float), default="1,10,30", show_default=True,
              help="sigmoidF1 grid (paper: [1, 30])")
@click.option("--eta", "etas", type=CommaList(float), default="0,1,2", show_default=True,
              help="sigmoidF1 grid (paper: [0, 2])")
@click.option("--precision", type=PRECISIONS, default="auto", show_default=True)
@click.option("--runs-dir", type=click.Path(path_type=Path), default=Path("runs/reproduce"), show_default=True)
@click.option("--out-dir", type=click.Path(path_type=Path), default=Path("docs/reproduction"), show_default=True)
@_track.track_option
def reproduce_table2(cache_path, protocol, seeds, epochs, threshold, betas, etas, precision, runs_dir, out_dir, track):
    """sigmoidF1 Table 2: 5 losses x seeds, sigmoidF1 beta/eta chosen on val; table, grid, heatmap."""
    from ..reproduce import table2_command, table2_protocol, write_table2_report

    res = table2_protocol(cache_path, protocol, runs_dir, seeds, epochs, threshold, betas, etas,
                          precision=precision, progress=console.print)
    console.print(res["table"].to_rich())
    command = table2_command(cache_path, protocol, seeds, epochs, threshold, betas, etas)
    for p in write_table2_report(res, out_dir, command):
        console.print(f"wrote {p}")
    _track.log(track, [r["run_dir"] for r in res["grid_records"] + res["records"]], runs_dir)


@reproduce.command("zlpr")
@click.option("--cache", "cache_path", type=click.Path(path_type=Path), required=True)
@click.option("--seeds", type=int, default=5, show_default=True)
@click.option("--epochs", type=int, default=100, show_default=True)
@click.option("--hidden", type=int, default=1024, show_default=True)
@click.option("--standardize", is_flag=True, help="z-score raw features with train statistics (MULAN)")
@click.option("--runs-dir", type=click.Path(path_type=Path), default=Path("runs/reproduce"), show_default=True)
@click.option("--out-dir", type=click.Path(path_type=Path), default=Path("docs/reproduction"), show_default=True)
@_track.track_option
def reproduce_zlpr(cache_path, seeds, epochs, hidden, standardize, runs_dir, out_dir, track):
    """ZLPR-paper style comparison (BCE, focal, dice1, dice2, ZLPR) on one cache."""
    from ..reproduce import write_zlpr_report, zlpr_command, zlpr_comparison

    res = zlpr_comparison(cache_path, runs_dir, seeds, epochs, hidden=hidden, standardize=standardize)
    console.print(res["table"].to_rich())
    for p in write_zlpr_report(res, cache_path, out_dir, zlpr_command(cache_path, seeds, epochs, hidden, standardize)):
        console.print(f"wrote {p}")
    _track.log(track, [r["run_dir"] for r in res["records"]], runs_dir)


COMMANDS = [reproduce]
