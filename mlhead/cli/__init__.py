"""Command line: the ``mlhead`` click group and one module per command.

Each command module parses options (click, with the types of :mod:`mlhead.cli.types`), calls the
library and prints with rich (:mod:`mlhead.cli._ui`); no logic lives here. Errors: an expected
failure (the :class:`~mlhead.errors.MlheadError` family) prints one ``error: ...`` line and exits
with code 2 (``--debug`` adds its traceback); anything else is a bug and propagates with its
traceback. Ctrl-C prints how to resume and exits with code 130.
"""

from __future__ import annotations

import click

from ..errors import MlheadError
from . import cache, catalog, embed, export, fit, predict, reproduce, report, sweep
from . import eval as eval_cmd
from ._ui import err_console, print_error


class MlheadGroup(click.Group):
    """The top-level group: turns the MlheadError family (only) into one line and exit code 2."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except MlheadError as e:
            if ctx.params.get("debug"):
                err_console.print_exception(show_locals=False)
            print_error(str(e))
            ctx.exit(2)
        except KeyboardInterrupt:
            err_console.print("[yellow]interrupted[/]: rerun the same command to resume")
            ctx.exit(130)


@click.group(cls=MlheadGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(package_name="mlhead")
@click.option("--debug", is_flag=True, envvar="MLHEAD_DEBUG",
              help="show the traceback of expected errors too (also: MLHEAD_DEBUG=1)")
def main(debug):
    """mlhead: multilabel classification heads on frozen pretrained encoders.

    \b
    mlhead embed --dataset movieposters --data-dir DIR --weights W   # backbone once -> HDF5 cache
    mlhead fit --loss sigmoidf1 --beta 1 --eta 0                     # train the head on the cache
    mlhead eval --threshold 0.05                                     # decision rule + Table-2 metrics
    """


for _module in (embed, fit, sweep, eval_cmd, report, predict, export, cache, reproduce, catalog):
    for _command in _module.COMMANDS:
        main.add_command(_command)

__all__ = ["main", "MlheadGroup"]
