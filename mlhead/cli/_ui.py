"""Console output shared by every command: the rich consoles, progress bars, tables and the error line.

Results go to stdout (``console``); progress, notes and errors to stderr (``err_console``). Widths are
fixed at 140 columns when stdout is not a terminal, so logs and tests see whole lines.
"""

from __future__ import annotations

import sys
import time
from typing import Callable, Iterable

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn, TextColumn,
                           TimeElapsedColumn, TimeRemainingColumn)
from rich.table import Table

_WIDTH = None if sys.stdout.isatty() else 140
console = Console(stderr=False, width=_WIDTH)
err_console = Console(stderr=True, width=_WIDTH)


def print_error(message: str) -> None:
    """The one ``error: ...`` line of an expected failure (stderr); ``message`` is printed as is (its
    brackets, e.g. ``pip install 'mlhead[track]'``, are not read as rich markup)."""
    from rich.markup import escape

    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, markup=True, soft_wrap=True)


def note(message: str) -> None:
    """A yellow note on stderr (e.g. a resumed or waited-for cache)."""
    err_console.print(f"[yellow]{message}[/]", highlight=False, soft_wrap=True)


def warn(message: str) -> None:
    """A ``warning: ...`` line on stderr (the command goes on)."""
    err_console.print(f"[bold yellow]warning:[/] {message}", highlight=False, soft_wrap=True)


def progress_bar() -> Progress:
    """A rich progress bar on stderr: description, bar, done/total, percent, rate, elapsed, remaining."""
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TaskProgressColumn(), TextColumn("{task.fields[rate]}"), TimeElapsedColumn(),
                    TimeRemainingColumn(), console=err_console, transient=False)


def split_progress(bar: Progress, verb: str, rate_unit: str | None = "rows") -> Callable[[str, int, int], None]:
    """A ``progress(split, done, total)`` callback drawing one task per split on ``bar``.

    A split first reported with ``done > 0`` was resumed: its description says so, and the rate
    (``rate_unit``/s, None for no rate) counts only rows done in this process.
    """
    tasks: dict[str, int] = {}
    start: dict[str, tuple[float, int]] = {}

    def progress(split: str, done: int, total: int) -> None:
        if split not in tasks:
            resumed = f" (resumed at {done})" if done and rate_unit else ""
            tasks[split] = bar.add_task(f"{verb} {split}{resumed}", total=total, completed=done, rate="")
            start[split] = (time.perf_counter(), done)
        t0, d0 = start[split]
        dt = time.perf_counter() - t0
        rate = ""
        if rate_unit and dt > 0 and done > d0:
            rate = f"{(done - d0) / dt:.1f} {rate_unit}/s"
        elif rate_unit and d0:
            rate = f"resumed at {d0}"
        bar.update(tasks[split], completed=done, rate=rate)

    return progress


def epoch_progress(bar: Progress, epochs: int, n_runs: int) -> Callable[[int, int], None]:
    """A ``progress(epoch, n)`` callback for fitting ``n_runs`` stacked runs over ``epochs`` epochs."""
    task = bar.add_task("fit", total=epochs, rate="")
    return lambda epoch, n: bar.update(task, completed=epoch, rate=f"{n_runs} run(s)")


def table(columns: Iterable[str], rows: Iterable[Iterable[object]], title: str | None = None,
          **kwargs) -> Table:
    """A rich Table with ``columns`` and ``rows`` (cells converted with ``str``)."""
    t = Table(title=title, **kwargs)
    for col in columns:
        t.add_column(col)
    for row in rows:
        t.add_row(*(str(c) for c in row))
    return t


def shorten(value: object, n: int = 70) -> str:
    """``value`` as one line of at most ``n`` characters (JSON for non-strings; ``...`` when cut)."""
    import json

    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= n else text[:n - 3] + "..."
