"""Where commands find their inputs by default: the newest cache, the newest run, every run under a root.

``mlhead fit`` reads the newest cache under ``--cache-dir`` and ``mlhead eval`` the newest run under
``--runs-dir`` unless told otherwise, so ``embed -> fit -> eval`` chain with no paths. These are the
only places that choose a default input; each raises the family error (naming the folder and the
command that makes what is missing) when there is nothing to choose.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import ConfigError, RunError


def resolve_cache(cache: str | os.PathLike | None, cache_dir: str | os.PathLike = "cache") -> Path:
    """``cache`` when given, else the most recently modified cache file under ``cache_dir``.

    Raises :class:`~mlhead.errors.CacheError` when ``cache`` is None and ``cache_dir`` holds no
    complete cache (the message names an interrupted embed's partial when there is one).
    """
    if cache is not None:
        return Path(cache)
    from .cache import latest_cache

    return latest_cache(cache_dir)


def resolve_runs(run: str | os.PathLike | None = None, runs_dir: str | os.PathLike = "runs",
                 all_runs: bool = False) -> list[Path]:
    """The run directories a command acts on: ``[run]`` when given; with ``all_runs`` every run
    directory under ``runs_dir`` (:func:`mlhead.runs.find_runs`: MLflow artifact copies skipped), sorted by
    path; else the newest run.

    Raises :class:`~mlhead.errors.RunError` when there is no run to act on (or ``run`` and
    ``all_runs`` are both given).
    """
    from .runs import find_runs, latest_run

    if run is not None and all_runs:
        raise ConfigError("--run and --all exclude each other; give one")
    if run is not None:
        return [Path(run)]
    if not all_runs:
        return [latest_run(runs_dir)]
    found = find_runs(runs_dir)
    if not found:
        raise RunError(f"no run under {runs_dir}/: run `mlhead fit` first or pass --run DIR")
    return found


def import_target(output: str | os.PathLike | None, labels: str | os.PathLike, dataset: str | None = None,
                  cache_dir: str | os.PathLike = "cache") -> tuple[Path, str]:
    """Where ``mlhead cache import`` writes and the dataset name it records: ``(path, dataset)``.

    ``dataset`` defaults to the labels file's stem; ``path`` to ``<cache_dir>/<dataset>/imported.h5``
    (under the cache root, so ``mlhead fit`` finds it as the newest cache).
    """
    dataset = dataset or Path(labels).stem
    return (Path(output) if output is not None else Path(cache_dir) / dataset / "imported.h5"), dataset
