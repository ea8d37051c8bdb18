"""Listing commands: ``mlhead losses`` and ``mlhead datasets``."""

from __future__ import annotations

import click

from ._ui import console, table


@click.command("losses")
def losses_cmd():
    """List every loss: name, options (default, valid range), source and reduction."""
    from ..losses import describe

    rows = []
    for d in describe():
        opts = "\n".join(f"{o['name']}={o['default']} ({o['valid']})" for o in d["options"]) or "-"
        name = d["name"] + "".join(f"\n(alias: {a})" for a in d.get("aliases", []))
        rows.append((name, opts, d["source"], d["reduction"], d["pos_weight"] or "not accepted"))
    console.print(table(("name", "options (default; valid)", "source", "reduction", "--pos-weight"), rows,
                        title="losses (mlhead fit --loss NAME)"))


@click.command("datasets")
def datasets_cmd():
    """List datasets: modality, default backbone, split, expected layout and options (embed flags)."""
    from ..datasets import DATASETS

    rows = []
    for name, cls in sorted(DATASETS.items()):
        flags = "\n".join(f"--{k.replace('_', '-')}" + ("" if o.is_flag or o.default is None else f" [{o.default}]")
                          for k, o in cls.OPTIONS.items()) or "-"
        rows.append((name, cls.modality, cls.default_backbone, cls.split_doc, cls.layout, flags))
    console.print(table(("name", "modality", "default backbone", "split", "layout", "options"), rows,
                        title="datasets (mlhead embed --dataset NAME)"))


COMMANDS = [losses_cmd, datasets_cmd]
