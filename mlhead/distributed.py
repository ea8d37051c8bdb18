"""Scale-out on a Ray cluster (optional extra: ``pip install 'mlhead[ray]'``).

* :func:`ray_embed` runs the ``n`` shards of an embed (:func:`mlhead.embed.embed` of an
  :class:`~mlhead.embed.EmbedConfig` with ``shard=(i, n)``) as Ray tasks, one GPU each where the
  cluster has GPUs, then joins them with :func:`mlhead.cache.merge_shards` into the file a single run writes and deletes the shard files.
  A shard whose worker dies (killed, out of memory, node lost) is retried by Ray (``max_retries``)
  and resumes from its own ``.partial``; finished shards are kept, so rerunning after a failure
  redoes only what is missing.
* :func:`ray_sweep` splits a grid into cells (:func:`mlhead.sweep.cells`: runs sharing a seed stay
  stacked) and fits/evaluates every cell with :func:`mlhead.sweep.run_cell` as a Ray task.

Ray tasks, not Ray Tune: the work is a fixed list of independent jobs. Every path (data, cache,
runs, weights) must be on storage that the driver and every worker see at the same path (a shared
file system, e.g. NFS/Lustre/EFS), since tasks read and write files, not Ray objects. Ray is
imported lazily: without it every entry point raises :class:`RayUnavailableError`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import shutil
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from .errors import ConfigError, DatasetError, DependencyError, MlheadError
from .fileio import atomic_write_text

INSTALL_HINT = "pip install 'mlhead[ray]'"
#: environment variables forwarded to the workers of a Ray instance started or joined here
FORWARDED_ENV = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "MLHEAD_DATA_DIR", "HF_HOME", "TORCH_HOME")


class RayUnavailableError(DependencyError, ValueError):
    """Ray is not installed (``pip install 'mlhead[ray]'``)."""


class ClusterError(MlheadError, OSError):
    """A Ray task failed for a system reason (worker or node died, out of memory) after its retries."""


def require_ray():
    """The ``ray`` module, or :class:`RayUnavailableError` saying how to install it."""
    try:
        import ray
    except ImportError:
        raise RayUnavailableError(f"--ray needs Ray, which is not installed: {INSTALL_HINT} "
                                  "(the same Ray version on every node of the cluster)") from None
    return ray


@contextlib.contextmanager
def ray_session(address: str | None = None, num_cpus: int | None = None, quiet: bool = False) -> Iterator[Any]:
    """Yield the ``ray`` module connected to a Ray instance; shut it down afterwards if started here.

    Already initialised (e.g. by the caller) -> used as is. ``address`` None or ``"local"``: start a
    local instance with ``num_cpus`` (default: all cores). ``"auto"``: join the cluster this machine
    belongs to (``ray start`` / ``RAY_ADDRESS``), else start a local instance. Anything else
    (``host:port``, ``ray://host:10001``) must be reachable (ConnectionError otherwise).
    """
    ray = require_ray()
    if ray.is_initialized():
        yield ray
        return
    env = {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}
    common = {"include_dashboard": False, "runtime_env": {"env_vars": env} if env else None,
              "logging_level": logging.WARNING if quiet else logging.INFO}
    local = {"address": "local", "num_cpus": num_cpus or os.cpu_count() or 1, **common}
    if address in (None, "", "local"):
        ray.init(**local)
    elif address == "auto":
        try:
            ray.init(address="auto", **common)
        except ConnectionError:
            print("no running Ray cluster found (`ray start --head`); starting a local one", file=sys.stderr)
            ray.init(**local)
    else:
        ray.init(address=address, **common)
    try:
        yield ray
    finally:
        ray.shutdown()


def _gpu_per_node(ray) -> tuple[float, float, float]:
    """(total GPUs, CPUs per GPU on the GPU nodes (min), CPUs of the largest node)."""
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    gpus = sum(n["Resources"].get("GPU", 0) for n in nodes)
    per_gpu = [n["Resources"].get("CPU", 0) / n["Resources"]["GPU"] for n in nodes if n["Resources"].get("GPU")]
    biggest = max((n["Resources"].get("CPU", 0) for n in nodes), default=1)
    return gpus, (min(per_gpu) if per_gpu else 0), biggest


def _resources(ray, n_tasks: int, cpus: float | None, gpus: float | None, device: str | None) -> tuple[float, float]:
    """CPUs and GPUs per task: one GPU per task when the cluster has GPUs (unless device is cpu) and
    the CPUs that come with a GPU; on CPU-only clusters the CPUs shared among the tasks (whole
    numbers, at most a node's)."""
    total_gpus, cpus_per_gpu, biggest = _gpu_per_node(ray)
    if gpus is None:
        gpus = 1 if total_gpus >= 1 and not str(device or "").startswith("cpu") else 0
    if cpus is None:
        if gpus:
            cpus = max(1, int(cpus_per_gpu * gpus)) if cpus_per_gpu else 1
        else:
            total = ray.cluster_resources().get("CPU", 1)
            cpus = max(1, min(int(biggest), int(total // max(1, n_tasks))))
    if cpus <= 0:
        raise ConfigError(f"CPUs per task {cpus} invalid; valid: > 0")
    return cpus, gpus


def _default_shards(ray, device: str | None) -> int:
    """One shard per GPU of the cluster, else one per CPU (each then runs single-threaded)."""
    res = ray.cluster_resources()
    if res.get("GPU", 0) >= 1 and not str(device or "").startswith("cpu"):
        return int(res["GPU"])
    return max(1, int(res.get("CPU", 1)))


def _set_threads(cpus: float) -> None:
    import torch

    torch.set_num_threads(max(1, int(cpus)))


def _progress_bar(total: int, what: str, enabled: bool):
    if not enabled:
        return contextlib.nullcontext(None)
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   TextColumn("{task.fields[note]}"), console=Console(stderr=True), transient=False)
    return _Bar(bar, total, what)


class _Bar:
    def __init__(self, bar, total, what):
        self.bar, self.total, self.what = bar, total, what

    def __enter__(self):
        self.bar.__enter__()
        self.task = self.bar.add_task(self.what, total=self.total, note="")
        return self

    def advance(self, note: str = "") -> None:
        self.bar.update(self.task, advance=1, note=note)

    def __exit__(self, *exc):
        return self.bar.__exit__(*exc)


def _cause(err: BaseException) -> BaseException:
    cause = getattr(err, "cause", None)
    return cause if isinstance(cause, BaseException) else err


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def _gather(ray, refs: list, labels: list[str], bar, on_done: Callable[[int, Any], str] | None,
            retries: int, results: list | None = None) -> list:
    """Results of ``refs`` in order (also filled into ``results`` as they come, None for unfinished).

    The first failure stops the other tasks and is raised, once they are all stopped, with its
    task's label: the task's own error (ValueError, CacheError, DatasetError, ...) re-raised with the
    label in front, or :class:`ClusterError` for a worker/node that died ``retries + 1`` times.
    Stopping kills the tasks' worker processes (``ray.cancel(force=True)``) rather than raising
    KeyboardInterrupt inside them: an interrupt that lands inside an import (torch's C extension)
    leaves a broken worker that Ray would reuse. A killed embed shard keeps the rows it flushed
    (at most ~1 s of work is lost). Ctrl-C on the driver stops every task the same way.
    """
    pending = {ref: i for i, ref in enumerate(refs)}
    if results is None:
        results = []
    results[:] = [None] * len(refs)
    failure: list = []  # [(index, exception)] of the first failed task
    try:
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                i = pending.pop(ref)
                if not _collect(ray, ref, i, results, pending, failure):
                    continue
                note = on_done(i, results[i]) if on_done else ""
                if bar is not None:
                    bar.advance(note or "")
    except KeyboardInterrupt:
        for ref in pending:
            ray.cancel(ref, force=True)
        raise
    if not failure:
        return results
    i, err = failure[0]
    raise _task_error(err, labels[i], retries) from None


def _collect(ray, ref, i: int, results: list, pending: dict, failure: list) -> bool:
    """Store task ``i``'s result; on the first failure cancel the pending tasks. True when it succeeded."""
    from ray.exceptions import TaskCancelledError

    try:
        results[i] = ray.get(ref)
    except TaskCancelledError:
        return False
    except Exception as e:  # noqa: BLE001 - every task failure is reported by _gather
        if not failure:
            failure.append((i, e))
            for other in pending:
                ray.cancel(other, force=True)
        return False
    return True


def _task_error(err: BaseException, label: str, retries: int) -> BaseException:
    """The exception to raise for a failed task: its own error with ``label`` in front, or ClusterError."""
    from ray.exceptions import RayTaskError

    if isinstance(err, RayTaskError):
        cause = _cause(err)
        if isinstance(cause, Exception):
            try:
                return type(cause)(f"{label}: {cause}")
            except Exception:  # noqa: BLE001 - an exception type with another constructor
                return RuntimeError(f"{label}: {type(cause).__name__}: {cause}")
    return ClusterError(f"{label}: the Ray task failed ({type(err).__name__}: {_first_line(err)}; a task whose "
                        f"worker died is retried up to {retries} times); finished work is kept, rerun to resume")


# ------------------------------------------------------------------------------------------- embed


def _embed_shard_task(config, cpus: float, progress: Callable | None) -> dict:
    """Ray task: embed one shard (``config.shard``), resuming its .partial if an earlier attempt was killed."""
    _set_threads(cpus)
    import ray

    from .embed import embed

    res = embed(config, progress=progress)
    return {"shard": list(config.shard), "path": str(res.path), "rows": dict(res.rows),
            "resumed_rows": res.resumed_rows, "up_to_date": res.up_to_date, "seconds": res.seconds,
            "processed": res.processed, "skipped": len(res.skipped_while_embedding),
            "node": ray.util.get_node_ip_address(), "pid": os.getpid()}


def _probe_task(config, candidates: list[str], cpus: float) -> str | None:
    """Ray task: the first candidate cache that holds what a single-run embed of ``config`` would write
    (its plan's fingerprint against each file's; on a worker, since ``precision=auto`` resolves per node)."""
    _set_threads(cpus)
    from .embed import plan_embed

    plan = plan_embed(config)
    return next((path for path in candidates if plan.is_current(path)), None)


def _absolute(config):
    """``config`` with its paths (cache dir, output, weights, a local backbone folder) made absolute."""
    def resolved(p):
        return None if p is None else str(Path(p).resolve())

    bb = config.backbone
    if bb and (os.sep in str(bb) or str(bb).startswith(".")) and Path(bb).exists():
        bb = str(Path(bb).resolve())
    return dataclasses.replace(config, data_dir=resolved(config.data_dir), cache_dir=resolved(config.cache_dir),
                               output=resolved(config.output), weights=resolved(config.weights), backbone=bb)


def _merged_candidates(cache_dir: Path, dataset: str, output: Path | None) -> list[str]:
    """Complete single-run caches that a rerun might find up to date (checked by a probe task)."""
    from .cache import read_attrs
    from .embed import cache_path
    from .cache.merge import SHARD_NAME

    if output is not None:
        return [str(output)] if output.is_file() else []
    found = []
    for p in sorted((cache_dir / dataset).glob("*.h5")):
        if SHARD_NAME.match(p.name) or p.name.endswith(".tmp.h5"):
            continue
        try:
            attrs = read_attrs(p)
        except OSError:
            continue
        fp = attrs.get("fingerprint_json")
        if (attrs.get("complete") and isinstance(fp, dict) and fp.get("shard") is None
                and p == cache_path(cache_dir, dataset, str(attrs.get("backbone")))):
            found.append(str(p))
    return found


def ray_embed(config, num_shards: int | None = None, address: str | None = None,
              cpus_per_task: float | None = None, gpus_per_task: float | None = None, max_retries: int = 3,
              num_cpus: int | None = None, keep_shards: bool = False, show_progress: bool = True,
              on_shard_done: Callable[[dict], None] | None = None,
              progress: Callable[[str, int, int], None] | None = None) -> Path:
    """Embed ``config`` (an :class:`~mlhead.embed.EmbedConfig` without ``shard``) as ``num_shards`` Ray
    tasks and merge them into the single-run cache file.

    ``num_shards`` defaults to the cluster's GPUs, or its CPUs on a CPU-only cluster. Shard ``i`` writes
    ``<name>.shard-i-of-n.h5`` next to the output, which is ``config.output`` or
    ``<cache_dir>/<dataset>/<backbone>.h5``; after a successful merge the shard files are deleted
    (``keep_shards`` keeps them); after a failure they stay, and rerunning the same call reuses the
    finished shards and resumes the others. A rerun whose output is already up to date returns it at
    once (one probe task compares its plan with the file), unless ``config.force``.

    Per task: ``gpus_per_task`` (default 1 if the cluster has GPUs and ``config.device`` is not cpu,
    else 0) and ``cpus_per_task`` (default: the CPUs per GPU of a GPU node, or the cluster's CPUs
    divided among the shards); torch uses that many threads. ``max_retries``: how often a shard whose
    worker died is rerun. ``address``: see :func:`ray_session` (``num_cpus`` sizes a local instance).
    ``on_shard_done(summary)`` is called in the driver for each finished shard (shard, path, rows,
    resumed_rows, seconds, node, pid). ``progress(split, done, total)`` is :func:`~mlhead.embed.embed`'s
    callback, run inside the tasks (pickled). Use an explicit ``precision`` on mixed hardware: ``auto``
    resolves per node, and shards of different precision refuse to merge.

    Raises ConfigError for bad options, the tasks' own errors (DatasetError, BackboneError,
    CacheError, ...) prefixed with the shard, :class:`ClusterError` when a shard's worker died more
    than ``max_retries`` times, CacheError when the shards cannot be merged,
    :class:`RayUnavailableError` without Ray.
    """
    require_ray()
    from .cache import merge_shards, merged_path, shard_path
    from .errors import ConfigError

    if config.shard is not None:
        raise ConfigError("ray_embed makes the shards itself: pass num_shards, not shard")
    if num_shards is not None and int(num_shards) < 1:
        raise ConfigError(f"--num-shards {num_shards} invalid; valid: >= 1")
    if not Path(config.data_dir).exists():
        raise DatasetError(f"--data-dir {Path(config.data_dir).resolve()}: no such file or folder (with --ray "
                                "it must be on storage every node sees, at the same path)")
    config = _absolute(config.validate())
    out = Path(config.output) if config.output is not None else None
    with ray_session(address, num_cpus) as ray:
        n = int(num_shards) if num_shards is not None else _default_shards(ray, config.device)
        cpus, gpus = _resources(ray, n, cpus_per_task, gpus_per_task, config.device)
        if gpus and str(config.device or "").startswith("cuda"):
            config = dataclasses.replace(config, device="cuda")  # Ray gives each task its GPU(s) as cuda:0...
        if not config.force:
            candidates = _merged_candidates(Path(config.cache_dir), config.dataset, out)
            if candidates:
                probe = ray.remote(_probe_task).options(num_cpus=cpus, num_gpus=gpus, max_retries=max_retries)
                found = ray.get(probe.remote(config, candidates, cpus))
                if found:
                    return Path(found)
        task = ray.remote(_embed_shard_task).options(num_cpus=cpus, num_gpus=gpus, max_retries=max_retries,
                                                     retry_exceptions=False)
        refs = [task.remote(dataclasses.replace(config, shard=(i, n),
                                                output=str(shard_path(out, (i, n))) if out else None),
                            cpus, progress)
                for i in range(n)]
        labels = [f"shard {i}/{n}" for i in range(n)]
        with _progress_bar(n, f"embed {config.dataset} ({n} shards, {cpus:g} CPU{f', {gpus:g} GPU' if gpus else ''} "
                              "each)", show_progress) as bar:
            summaries = _gather(ray, refs, labels, bar, _shard_note(on_shard_done), max_retries)
    paths = [Path(s["path"]) for s in summaries]
    target = out if out is not None else merged_path(paths[0])
    return merge_shards(paths, target, force=config.force, remove=not keep_shards)


def _shard_note(on_shard_done: Callable[[dict], None] | None) -> Callable[[int, dict], str]:
    """The progress note of a finished shard (calling ``on_shard_done(summary)`` first)."""
    def done(i: int, summary: dict) -> str:
        if on_shard_done:
            on_shard_done(summary)
        rows = sum(summary["rows"].values())
        how = "up to date" if summary["up_to_date"] else f"{summary['seconds']:.1f} s"
        return f"shard {i}: {rows} rows, {how}" + (f", resumed at {summary['resumed_rows']}"
                                                    if summary["resumed_rows"] else "")

    return done


# ------------------------------------------------------------------------------------------- sweep


CELL_RESULTS = "cell.json"
SWEEP_STATE = "sweep.json"


def _sweep_cell_task(cache: str, specs: list, cfg, cell_dir: str, rules: list, split: str, cpus: float) -> list[dict]:
    """Ray task: fit one cell as stacked heads and evaluate its runs, then write its results to
    ``cell.json``. A finished cell returns those results; an unfinished one (its worker or the
    driver killed) resumes from the fit's checkpoint (see :func:`mlhead.sweep.run_cell`)."""
    from .sweep import run_cell

    _set_threads(cpus)
    done = Path(cell_dir) / CELL_RESULTS
    if done.is_file():
        return json.loads(done.read_text())
    results = run_cell(cache, specs, cfg, Path(cell_dir), rules, split)
    atomic_write_text(done, json.dumps(results, indent=1))
    return results


def _sweep_key(cache, specs, cfg, rules, split: str, max_runs_per_cell) -> str:
    """What makes a Ray sweep the same sweep: cache fingerprint, runs, options, rules, split, cells."""
    from .cache import fingerprint_digest, open_cache

    doc = {"cache": open_cache(cache).fingerprint, "specs": [dataclasses.asdict(s) for s in specs],
           "cfg": {**{k: v for k, v in dataclasses.asdict(cfg).items() if not k.startswith("checkpoint_")},
                   "val_rule": cfg.val_rule.to_dict()},
           "rules": [r.to_dict() for r in rules], "split": split, "max_runs_per_cell": max_runs_per_cell}
    return fingerprint_digest(doc)[:16]


def _sweep_root(runs_dir: Path, key: str) -> Path:
    """The unfinished sweep folder of this sweep (``sweep.json`` with the same key) to resume, or a new
    ``<runs_dir>/sweep-<time>-<id>`` marked unfinished."""
    for state in sorted(runs_dir.glob(f"sweep-*/{SWEEP_STATE}")):
        with contextlib.suppress(OSError, ValueError):
            doc = json.loads(state.read_text())
            if doc.get("key") == key and not doc.get("finished"):
                return state.parent
    root = runs_dir / f"sweep-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    root.mkdir(parents=True)
    _mark_sweep(root, key, finished=False)
    return root


def _mark_sweep(root: Path, key: str, finished: bool) -> None:
    """Write the sweep folder's ``sweep.json``: its key and whether it finished (atomically)."""
    atomic_write_text(root / SWEEP_STATE, json.dumps({"key": key, "finished": finished}))


def ray_sweep(cache_path, specs: Sequence, cfg, runs_dir, rules: Sequence = (), split: str = "test",
              address: str | None = None, max_runs_per_cell: int | None = None, cpus_per_task: float | None = None,
              gpus_per_task: float | None = None, max_retries: int = 3, num_cpus: int | None = None,
              show_progress: bool = True) -> list[dict]:
    """Fit and evaluate a grid on a Ray cluster, one task per cell; same results as a local sweep.

    Cells come from :func:`mlhead.sweep.cells` (runs sharing a seed train stacked; at most
    ``max_runs_per_cell`` runs per cell). Each cell writes its run directories under
    ``<runs_dir>/sweep-<time>-<id>/cell-<k>/`` (``mlhead report RUNS_DIR`` finds them, as it finds a
    local sweep's) and returns :func:`mlhead.sweep.run_cell`'s dicts; the result is their
    concatenation in cell order. Resumable: the same sweep (same cache, runs, options, rules) run again
    after its driver was killed continues in the same folder (``sweep.json`` holds its key and whether
    it finished): finished cells return their ``cell.json``, the others resume from their fits'
    checkpoints. A cell whose worker died is retried (resuming) up to ``max_retries`` times. When a
    cell fails, the others are stopped and the run directories of every unfinished cell are removed
    (finished cells keep theirs; a rerun starts those cells afresh). Resources per task as in :func:`ray_embed`
    (GPU: ``cfg.device``). Raises ValueError/CacheError/RunError from the cells (prefixed with the
    cell), :class:`ClusterError`, :class:`RayUnavailableError`.
    """
    require_ray()
    from .cache import CacheError
    from .rules import DecisionRule
    from .sweep import cells

    rules = list(rules) or [DecisionRule()]
    cfg.validate()
    if not specs:
        raise ConfigError("no runs to fit")
    cache = Path(cache_path).resolve()
    if not cache.is_file():
        raise CacheError(f"cache file not found: {cache} (with --ray it must be on storage every node sees, "
                         "at the same path)")
    parts = cells(list(specs), max_runs_per_cell)
    key = _sweep_key(cache, specs, cfg, rules, split, max_runs_per_cell)
    root = _sweep_root(Path(runs_dir).resolve(), key)
    with ray_session(address, num_cpus) as ray:
        cpus, gpus = _resources(ray, len(parts), cpus_per_task, gpus_per_task, cfg.device)
        if gpus and str(cfg.device or "").startswith("cuda"):
            cfg = dataclasses.replace(cfg, device="cuda")  # Ray gives each task its GPU(s) as cuda:0...
        task = ray.remote(_sweep_cell_task).options(num_cpus=cpus, num_gpus=gpus, max_retries=max_retries,
                                                    retry_exceptions=False)
        width = len(str(len(parts) - 1))
        refs = [task.remote(str(cache), cell, cfg, str(root / f"cell-{k:0{width}d}"), rules, split, cpus)
                for k, cell in enumerate(parts)]
        labels = [f"cell {k} ({len(c)} run{'s' * (len(c) != 1)}, seed {c[0].seed})" for k, c in enumerate(parts)]
        out: list = []
        try:
            with _progress_bar(len(parts), f"sweep {len(specs)} runs in {len(parts)} cells ({cpus:g} "
                                           f"CPU{f', {gpus:g} GPU' if gpus else ''} each)", show_progress) as bar:
                _gather(ray, refs, labels, bar, None, max_retries, results=out)
        except Exception:
            # every task has stopped: drop the run directories of the cells that did not finish, so a
            # rerun (a new sweep directory) leaves no half-evaluated duplicates for `mlhead report`
            for k, part in enumerate(out):
                if part is None:
                    shutil.rmtree(root / f"cell-{k:0{width}d}", ignore_errors=True)
            raise
    _mark_sweep(root, key, finished=True)
    return [r for part in out for r in part]
