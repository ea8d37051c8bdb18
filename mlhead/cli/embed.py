"""``mlhead embed``: stage one, the frozen backbone once over every split into an HDF5 cache.

The dataset-specific flags (``--voc-difficult``, ``--text-column``, ...) are generated from the
options each dataset loader declares (:class:`mlhead.datasets.DatasetOption`), so a new dataset
module brings its flags with it; every such option is also accepted as ``-D KEY=VALUE``.
"""

from __future__ import annotations

from pathlib import Path

import click

from ..datasets import declared_options
from ..datasets.base import SPLIT_MODES
from ._ui import console, note, progress_bar, split_progress, table
from .types import KeyValue, Shard, key_value_dict

#: prefix of the parameter names of generated dataset flags
_DS = "dataset_opt__"
PRECISIONS = click.Choice(["auto", "fp32", "bf16", "fp16"])


def _core_options(fn):
    opts = [
        click.option("--dataset", required=True, help="dataset name (see `mlhead datasets`)"),
        click.option("--data-dir", type=click.Path(path_type=Path), default=None,
                     help="dataset folder or table file [default: $MLHEAD_DATA_DIR/<dataset> or ./data]"),
        click.option("--cache-dir", type=click.Path(path_type=Path), default=Path("cache"), show_default=True),
        click.option("--output", "-o", type=click.Path(path_type=Path), default=None,
                     help="cache file to write [default: <cache-dir>/<dataset>/<backbone>.h5]"),
        click.option("--backbone", default=None,
                     help="preset, timm name or local model folder [default: the dataset's]"),
        click.option("--weights", type=click.Path(path_type=Path), default=None,
                     help="local weights: safetensors/.pth file or folder (config.json gives timm kwargs, mean/std)"),
        click.option("--random-init", is_flag=True, help="random backbone weights (smoke tests only)"),
        click.option("--pooling", type=click.Choice(["mean", "cls"]), default=None, help="text pooling"),
        click.option("--max-length", type=int, default=256, show_default=True, help="text: max tokens"),
        click.option("--precision", type=PRECISIONS, default="auto", show_default=True),
        click.option("--batch-size", type=int, default=64, show_default=True),
        click.option("--sort-window", type=int, default=32, show_default=True,
                     help="texts: batches per window sorted by token count (batches pad to their own longest "
                          "text; rows are written in dataset order); 1 = dataset order"),
        click.option("--workers", type=int, default=None,
                     help="DataLoader worker processes for decoding/tokenizing [default: CUDA 2; CPU 0: images "
                          "decoded here by every core between forward passes, texts tokenized here once per window]"),
        click.option("--split-seed", type=int, default=44, show_default=True),
        click.option("--split-mode", type=click.Choice(list(SPLIT_MODES)), default="random", show_default=True,
                     help="random: seeded (table: stable hash of each row id); stratified: iterative multilabel "
                          "stratification"),
        click.option("--dataset-option", "-D", "dataset_opts", type=KeyValue(), multiple=True,
                     callback=key_value_dict,
                     help="dataset option KEY=VALUE, the same as its flag (e.g. -D file=keras_arxiv_data.csv)"),
        click.option("--on-error", type=click.Choice(["raise", "skip"]), default="raise", show_default=True,
                     help="bad rows (corrupt image, empty text, bad label): stop with an error, or skip and count them"),
        click.option("--force", is_flag=True,
                     help="rebuild even if a cache (or an interrupted one) with other inputs exists"),
        click.option("--wait-lock", is_flag=True, help="wait for another writer of the same cache instead of failing"),
        click.option("--shard", type=Shard(), default=None,
                     help="embed one deterministic slice i/n into its own shard file"),
        click.option("--ray", "ray_address", default=None, is_flag=False, flag_value="auto",
                     help="run the embed as --num-shards Ray tasks and merge them (ADDRESS of a Ray cluster; "
                          "no value: the cluster this machine belongs to, else a local Ray)"),
        click.option("--num-shards", type=click.IntRange(min=1), default=None,
                     help="with --ray: number of shards [default: the cluster's GPUs, else its CPUs]"),
        click.option("--device", default=None, help="cpu, cuda, cuda:1 [default: cuda if available]"),
    ]
    for o in reversed(opts):
        fn = o(fn)
    return fn


def dataset_flags(declared: dict | None = None) -> list:
    """One click option per declared dataset option (see :func:`mlhead.datasets.declared_options`):
    ``--<name>`` with the declaring datasets' help; on/off options as ``--x/--no-x``; a shared
    ``choices`` as a click Choice. Unset flags are None (the loader's default applies)."""
    out = []
    for key, decls in (declared_options() if declared is None else declared).items():
        flag = "--" + key.replace("_", "-")
        text = "; ".join(f"{ds}: {opt.help}" + ("" if opt.is_flag or opt.default is None else f" [{opt.default}]")
                         for ds, opt in decls)
        choices = {opt.choices for _, opt in decls}
        if all(opt.is_flag for _, opt in decls):
            out.append(click.option(f"{flag}/--no-{flag[2:]}", _DS + key, default=None, help=text))
        else:
            kind = click.Choice(list(choices.pop())) if len(choices) == 1 and None not in choices else None
            out.append(click.option(flag, _DS + key, type=kind, default=None, help=text))
    return out


def _with_dataset_flags(fn):
    for o in reversed(dataset_flags()):
        fn = o(fn)
    return fn


def check_unique_flags(command: click.Command) -> None:
    """Raise RuntimeError (a bug in a dataset module) when a generated dataset flag repeats another flag."""
    seen: dict[str, str] = {}
    for param in command.params:
        for opt in [*param.opts, *param.secondary_opts]:
            if opt in seen:
                raise RuntimeError(f"mlhead embed: flag {opt} declared twice ({seen[opt]} and {param.name}); "
                                   "rename the dataset option")
            seen[opt] = param.name


def dataset_options(dataset: str, params: dict, dashed: dict) -> dict:
    """The dataset options of one ``mlhead embed`` call: the generated flags given (popped from
    ``params``) plus ``-D`` pairs ``dashed``, checked against what ``dataset`` declares."""
    from ..datasets import check_options
    from ..errors import ConfigError

    given = {k[len(_DS):]: params.pop(k) for k in [k for k in params if k.startswith(_DS)]}
    flags = {k: "--" + k.replace("_", "-") for k, v in given.items() if v is not None}
    options = {k: given[k] for k in flags}
    for key, value in dashed.items():
        if key in options:
            raise ConfigError(f"-D {key}=... repeats --{key.replace('_', '-')}; give it once")
        options[key] = value
    return check_options(dataset, options, flags)


@click.command()
@_core_options
@_with_dataset_flags
def embed(dataset, data_dir, ray_address, num_shards, dataset_opts, **params):
    """Stage one: run the frozen backbone once over every split and cache the embeddings (HDF5)."""
    from ..datasets import default_data_dir
    from ..embed import EmbedConfig

    options = dataset_options(dataset, params, dataset_opts)
    config = EmbedConfig(dataset, data_dir or default_data_dir(dataset), dataset_options=options, **params)
    if ray_address is not None or num_shards is not None:
        _ray_embed(config, ray_address, num_shards)
        return
    from ..embed import embed as run_embed

    with progress_bar() as bar:
        res = run_embed(config, progress=split_progress(bar, "embed"), notify=note)
    _print_result(res)


def _ray_embed(config, ray_address, num_shards) -> None:
    from ..cache import open_cache
    from ..distributed import ray_embed
    from ..errors import ConfigError

    if ray_address is None:
        raise ConfigError("--num-shards needs --ray [ADDRESS]")
    if config.shard is not None:
        raise ConfigError("--ray makes the shards itself; leave --shard out")
    done: list[dict] = []
    path = ray_embed(config, num_shards, address=ray_address, on_shard_done=done.append)
    if not done:
        console.print(f"cache up to date: [bold]{path}[/] (same inputs; --force rebuilds)")
        return
    c = open_cache(path)
    console.print(f"cache written: [bold]{path}[/] ({len(done)} shards merged; "
                  f"{', '.join(f'{s} {c.shapes[s][0]}' for s in c.splits)} rows; "
                  f"{sum(s['resumed_rows'] > 0 for s in done)} resumed)")


def _print_result(res) -> None:
    for text in res.notes:
        console.print(f"[dim]{text}[/]")
    if res.up_to_date:
        console.print(f"cache up to date: [bold]{res.path}[/] (same inputs; --force rebuilds)")
        return
    console.print(f"cache written: [bold]{res.path}[/]", highlight=False, soft_wrap=True)
    console.print(table(("split", "rows"), res.rows.items()))
    n_load, n_embed = len(res.skipped_at_load), len(res.skipped_while_embedding)
    console.print(f"{sum(res.rows.values())} rows in {res.seconds:.1f} s ({res.rows_per_second:.1f} rows/s)"
                  + (f", resumed from {res.resumed_rows} rows written earlier" if res.resumed_rows else "")
                  + (f"; skipped {len(res.skipped)} bad rows ({n_load} when loading the dataset, {n_embed} "
                     "unreadable while embedding; listed in the cache attrs skipped_at_load / skipped, "
                     "see `mlhead cache info`)" if res.skipped else ""), highlight=False, soft_wrap=True)


check_unique_flags(embed)
COMMANDS = [embed]
