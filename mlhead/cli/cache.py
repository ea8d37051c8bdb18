"""``mlhead cache info | merge | verify``: inspect, join and check embedding caches."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from ._ui import console, err_console, print_error, progress_bar, shorten, split_progress, table


@click.group("cache")
def cache_group():
    """Inspect and check embedding caches (HDF5 files written by `mlhead embed`)."""


def _summary_table(info: dict):
    classes = info["classes"]
    rows = [("state", info["state"]), ("dataset", info.get("dataset") or "-"),
            ("backbone", info.get("backbone") or "-"), ("precision", info.get("precision") or "-"),
            ("dim", info.get("dim")),
            ("classes", f"{len(classes)}: {shorten(', '.join(map(str, classes)), 100)}"),
            ("skipped rows", f"{info['skipped_total']} ({info['skipped_at_load']} when loading, "
                             f"{info['skipped']} while embedding)"),
            ("fingerprint", info.get("fingerprint") or "-"),
            ("checksums", f"{info['checksums']} datasets" if info.get("checksums") else "none stored")]
    t = table(("key", "value"), rows, title=f"cache {info['path']}", show_header=False)
    t.columns[0].style = "bold"
    return t


def _splits_table(info: dict, show_partial: bool):
    cols = ["split", "rows", "dim", "classes", "labels", "label cardinality", "label density",
            "rows without labels"]
    cols += ["planned", "consumed"] if show_partial else []
    rows = []
    for name, v in info["splits"].items():
        cells = [name, v.get("rows"), v.get("dim"), v.get("n_classes"), v.get("labels_layout") or "-",
                 f"{v.get('label_cardinality', 0.0):.3f}",
                 f"{v.get('label_density', 0.0):.3f}", v.get("rows_without_labels", "-")]
        rows.append(cells + ([v.get("planned"), v.get("consumed")] if show_partial else []))
    t = table(cols, rows, title="splits" + (" (rows durable so far in the partial)" if show_partial else ""))
    for c in t.columns[1:]:
        c.justify = "right"
    return t


def _skipped_table(bad: list[dict]):
    rows = [(r.get("when"), shorten(str(r.get("id")), 30), shorten(str(r.get("where", "")), 50),
             shorten(str(r.get("error", "")), 80)) for r in bad[:20]]
    return table(("when", "id", "where", "error"), rows,
                 title=f"skipped rows ({len(bad)}" + (", first 20)" if len(bad) > 20 else ")"))


@cache_group.command("info")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="print the description as JSON")
def cache_info_cmd(path, as_json):
    """Describe a cache: state (complete, or an interrupted partial), splits and shapes, classes, label
    cardinality, backbone, fingerprint fields, skipped rows."""
    from ..cache import cache_info

    info = cache_info(path)
    if as_json:
        click.echo(json.dumps(info, indent=2, sort_keys=True, default=str))
        return
    console.print(_summary_table(info))
    partial = info.get("partial") or {}
    console.print(_splits_table(info, not info["complete"] and bool(partial.get("readable"))))
    if info["complete"] and partial.get("readable"):
        done = sum(v["rows"] for v in partial["splits"].values())
        console.print(f"[yellow]an interrupted rebuild is pending[/] in {partial['path']} ({done} rows so far)")
    bad = [r for r in info.get("skipped_rows", []) if isinstance(r, dict)]
    if bad:
        console.print(_skipped_table(bad))
    fields = info.get("fingerprint_fields") or {}
    if fields:
        console.print(table(("field", "value"), ((k, shorten(fields[k])) for k in sorted(fields)),
                            title="fingerprint fields (a change in any makes the cache stale)"))


@cache_group.command("merge")
@click.argument("shards", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--output", "-o", type=click.Path(path_type=Path), default=None,
              help="merged cache file [default: the shards' file name without .shard-i-of-n]")
@click.option("--force", is_flag=True, help="overwrite an output that was made from other inputs")
@click.option("--remove-shards", is_flag=True, help="delete the shard files after a successful merge")
def cache_merge_cmd(shards, output, force, remove_shards):
    """Join the shard files of `mlhead embed --shard i/n` (all n, any order) into the file one run writes."""
    from ..cache import open_cache
    from ..cache import merge_shards

    with progress_bar() as bar:
        path = merge_shards(shards, output, force=force, remove=remove_shards,
                            progress=split_progress(bar, "merge", rate_unit=None))
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
def cache_import_cmd(embeddings, labels, output, cache_dir, dataset, **options):
    """Build a cache from embeddings you already have (.npy, .npz, Parquet) and a labels table
    (CSV/TSV/JSONL/Parquet: id, labels[, split]); then `mlhead fit` trains on it as on an embedded cache."""
    from ..cache import cache_info, import_cache
    from ..workspace import import_target

    target, dataset = import_target(output, labels, dataset, cache_dir)
    path = import_cache(target, embeddings, labels, dataset=dataset, **options)
    info = cache_info(path)
    rows = ", ".join(f"{s} {v['rows']}" for s, v in info["splits"].items())
    layout = next(iter(info["splits"].values()))["labels_layout"]
    console.print(f"imported [bold]{path}[/] ({rows} rows; dim {info['dim']}; {info['n_classes']} classes; "
                  f"labels {layout})", highlight=False)


@cache_group.command("verify")
@click.argument("path", type=click.Path(path_type=Path))
def cache_verify_cmd(path):
    """Recompute a cache's invariants (shapes, dtypes, finite embeddings, 0/1 labels, unique ids, class
    count, complete flag, fingerprint); exit 0 with "ok", or exit 2 listing every problem."""
    from ..cache import cache_info, verify_report

    problems, notes = verify_report(path)
    if problems:
        for p in problems:
            err_console.print(f"[bold red]problem:[/] {p}", highlight=False, soft_wrap=True)
        print_error(f"{path}: {len(problems)} problem(s)")
        sys.exit(2)
    info = cache_info(path)
    n = sum(v["rows"] for v in info["splits"].values())
    console.print(f"ok: {info['path']} ({n} rows in {len(info['splits'])} splits, {info['n_classes']} classes, "
                  f"dim {info['dim']}; {'; '.join(notes)})", highlight=False)


COMMANDS = [cache_group]
