"""Experiment tracking: map mlhead run directories onto MLflow runs (``--track mlflow[:URI]``).

MLflow is the tracker; this module only maps a run directory's records onto it:

* one MLflow run per run directory, found again by the tag ``mlhead.run_key`` (a digest of the
  directory's absolute path, also stored as ``mlhead.run_dir``), so ``mlhead eval`` after
  ``mlhead fit`` logs into the run ``fit`` created instead of starting a second one;
* params: loss and its options, seed, lr, weight decay (when recorded), epochs, batch size, hidden,
  dataset, backbone, weights sha256 and cache fingerprint (:func:`run_params`);
* per-epoch metrics from ``history.csv`` (step = epoch) and every evaluation (``eval/*.json``, else
  ``metrics.json``) as ``<split>/<rule slug>/<metric>``, e.g. ``test/softmax-ge-0.05/macro_f1``
  (MLflow keys cannot hold ``>=``; the slug is the one of the evaluation's file name);
* the run directory's files as artifacts.

Logging is idempotent: a metric point (step, value) already in the run is not logged again, so
logging a run twice leaves its histories unchanged.

The default store is a local SQLite database next to the run directories,
``sqlite:///<runs-dir>/mlflow.db`` (a real MLflow backend, no server; an existing ``mlflow.db`` between
a run directory and the runs dir is preferred, see :func:`store_dir`), with artifacts under
``<runs-dir>/mlartifacts/<experiment>`` (never taken for runs: :func:`mlhead.runs.find_runs`); browse
it with ``mlflow ui --backend-store-uri sqlite:///<runs-dir>/mlflow.db``.
Any MLflow tracking URI (``http://host:5000``, ``postgresql://...``, ``databricks``) is accepted.
Needs the ``track`` extra: ``pip install 'mlhead[track]'``.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

from .errors import ConfigError, DependencyError, MlheadError, RunError, StorageError
from .runs import MLFLOW_ARTIFACTS_DIR as ARTIFACTS_DIR
from .runs import load_config

#: the experiment runs are logged to unless another is named
DEFAULT_EXPERIMENT = "mlhead"
#: file name of the default SQLite store inside a runs directory (its artifacts: ARTIFACTS_DIR beside it)
DEFAULT_DB = "mlflow.db"
#: tag holding the digest of the run directory's absolute path (how a run is found again)
RUN_KEY_TAG = "mlhead.run_key"
RUN_DIR_TAG = "mlhead.run_dir"

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+:")
_ILLEGAL_KEY_CHARS = re.compile(r"[^\w.\- /]+")


@dataclass(frozen=True)
class TrackSpec:
    """A parsed ``--track`` value: the backend (always ``mlflow``) and its tracking URI, or ``None``
    for the default SQLite store under the runs directory of each run."""

    backend: str = "mlflow"
    uri: str | None = None

    def uri_for(self, run_dir, runs_dir=None) -> str:
        """The tracking URI a run directory is logged to: ``uri`` when set, else :func:`default_uri`
        of the store folder (:func:`store_dir`)."""
        return self.uri or default_uri(store_dir(run_dir, runs_dir))


def store_dir(run_dir, runs_dir=None) -> Path:
    """The folder of the default store for a run directory.

    The nearest folder holding ``mlflow.db`` from the run directory's parent up to ``runs_dir`` (when
    the run lies inside it), so ``mlhead eval --track mlflow`` finds the store ``fit``, ``sweep`` or
    ``reproduce`` created; when there is none yet, ``runs_dir`` (the run's parent when the run is not
    inside ``runs_dir`` or none is given). Paths are made absolute.
    """
    parent = Path(run_dir).resolve().parent
    root = Path(runs_dir).resolve() if runs_dir is not None else parent
    if root != parent and root not in parent.parents:
        return parent
    for folder in (parent, *parent.parents):
        if (folder / DEFAULT_DB).exists() or folder == root:
            return folder
    return root  # pragma: no cover  (root is always among the parents)


def parse_spec(spec: str) -> TrackSpec:
    """Parse a ``--track`` value: ``mlflow`` or ``mlflow:URI``.

    Args:
        spec: ``"mlflow"`` (default store, see :func:`default_uri`) or ``"mlflow:URI"`` where URI is
            any MLflow tracking URI with a scheme, e.g. ``mlflow:sqlite:///exp/mlflow.db``,
            ``mlflow:http://localhost:5000``, ``mlflow:databricks``.

    Returns:
        The :class:`TrackSpec`.

    Raises:
        ConfigError: another tracker, an empty URI, or a URI without a scheme (a bare path).
    """
    text = (spec or "").strip()
    backend, sep, uri = text.partition(":")
    if backend != "mlflow":
        raise ConfigError(f"--track {spec!r}: unknown tracker; valid: mlflow, mlflow:URI "
                          f"(e.g. mlflow:sqlite:///runs/mlflow.db, mlflow:http://localhost:5000)")
    if not sep:
        return TrackSpec()
    if not uri or any(c.isspace() for c in uri):
        raise ConfigError(f"--track {spec!r}: expected mlflow:URI with a non-empty URI without spaces")
    if not (_SCHEME.match(uri) or uri == "databricks"):
        raise ConfigError(f"--track {spec!r}: {uri!r} is not a tracking URI (no scheme); for a local store "
                          f"use mlflow:sqlite:///{uri.rstrip('/')}/{DEFAULT_DB}")
    return TrackSpec(uri=uri)


def default_uri(runs_dir) -> str:
    """``sqlite:///<runs_dir>/mlflow.db`` with ``runs_dir`` made absolute (the default store)."""
    return f"sqlite:///{Path(runs_dir).resolve() / DEFAULT_DB}"


def _mlflow():
    """Import MLflow, or raise DependencyError naming the extra that provides it."""
    try:
        import mlflow  # noqa: F401
        from mlflow import MlflowClient
        from mlflow.exceptions import MlflowException
    except ImportError as e:
        raise DependencyError(f"--track mlflow needs MLflow ({e}): pip install 'mlhead[track]'") from None
    return MlflowClient, MlflowException


def require_mlflow() -> None:
    """Raise DependencyError (``pip install 'mlhead[track]'``) when MLflow is not importable; call it
    before long work whose results are to be tracked."""
    _mlflow()


def run_params(config: dict, cache_attrs: dict | None = None) -> dict[str, str]:
    """The MLflow params of a run config: its hyper-parameters and the identity of its inputs.

    Args:
        config: a run's config (``mlhead.runs.load_config``).
        cache_attrs: attrs of the run's cache, consulted for keys the config does not record.

    Returns:
        Param name -> string value (MLflow params are strings): ``loss``, ``loss.<option>`` for each
        loss option, ``seed``, ``lr``, ``weight_decay`` (when recorded), ``epochs``, ``batch_size``,
        ``hidden``, ``dataset``, ``backbone``, ``weights_sha256`` and ``cache_fingerprint``. Keys found
        in neither the config nor the cache attrs are left out.
    """
    attrs = {**(cache_attrs or {}), **(config.get("cache_attrs") or {})}
    params = {"loss": config.get("loss")}
    params.update({f"loss.{k}": v for k, v in sorted((config.get("loss_options") or {}).items())})
    for key in ("seed", "lr", "weight_decay", "epochs", "batch_size", "hidden", "dataset", "backbone",
                "weights_sha256", "cache_fingerprint"):
        params[key] = config[key] if config.get(key) is not None else attrs.get(key)
    return {k: _param_value(v) for k, v in params.items() if v is not None}


def _cache_attrs(config: dict) -> dict:
    """Attrs of the run's cache when it is still there with the run's fingerprint (else {}): the source of
    ``weights_sha256`` for run configs that do not record it."""
    from .cache import open_cache

    if "weights_sha256" in config or not config.get("cache"):
        return {}
    try:
        cache = open_cache(config["cache"])
    except (MlheadError, OSError):
        return {}
    return dict(cache.attrs) if cache.fingerprint == config.get("cache_fingerprint") else {}


def _param_value(value) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)


def _metric_key(*parts: str) -> str:
    """An MLflow-legal key: ``parts`` joined with "/", each with ">=" as "-ge-" and every character MLflow
    refuses in keys (and "/" inside a part) as "-"."""
    return "/".join(_ILLEGAL_KEY_CHARS.sub("-", p.replace(">=", "-ge-").replace("/", "-")).strip("-") for p in parts)


def run_metrics(run_dir) -> dict[str, list[tuple[int, float]]]:
    """The MLflow metrics of a run directory: metric key -> [(step, value)].

    Per-epoch columns of ``history.csv`` under their column names (step = epoch; read with
    :func:`mlhead.report.load_history`); each evaluation (:func:`mlhead.report.collect`) as
    ``<split>/<rule slug>/<metric>`` at step 0; ``best_epoch`` from the config at step 0.
    Raises RunError for a directory without ``config.json`` or with a malformed record (named).
    """
    from .report import collect, load_history

    run_dir = Path(run_dir)
    config = load_config(run_dir)
    out: dict[str, list[tuple[int, float]]] = {}
    try:
        if (run_dir / "history.csv").is_file():
            columns = load_history(run_dir / "history.csv")
            epochs = [int(e) for e in columns.pop("epoch")]
            out = {k: list(zip(epochs, v.tolist())) for k, v in columns.items()}
        for rec in collect(run_dir):
            rule = rec["rule"].get("slug") or rec["rule_name"]
            out.update({_metric_key(rec["split"], rule, m): [(0, v)] for m, v in rec["metrics"].items()})
    except ValueError as e:
        raise RunError(f"{run_dir}: cannot read the run's records for MLflow: {e}") from None
    if config.get("best_epoch") is not None:
        out["best_epoch"] = [(0, float(config["best_epoch"]))]
    return out


def _run_key(run_dir: Path) -> str:
    return hashlib.sha256(str(run_dir).encode()).hexdigest()[:32]


def _artifact_location(uri: str, experiment: str = DEFAULT_EXPERIMENT) -> str | None:
    """For a local SQLite store: ``<folder of the db>/mlartifacts/<experiment>`` as a file URI (MLflow's
    own default would be relative to the working directory); None for other stores (the server decides)."""
    if not uri.startswith("sqlite:///") or ":memory:" in uri:
        return None
    db = Path(unquote(uri[len("sqlite:///"):].split("?")[0]))  # sqlite:///rel.db, sqlite:////abs.db
    db.parent.mkdir(parents=True, exist_ok=True)
    folder = re.sub(r"[^\w.-]+", "-", experiment).strip(".-") or "experiment"
    return (db.parent / ARTIFACTS_DIR / folder).resolve().as_uri()


def _client(uri: str):
    """An MlflowClient for ``uri`` (ConfigError when MLflow refuses the URI)."""
    MlflowClient, MlflowException = _mlflow()
    try:
        _artifact_location(uri)  # creates the SQLite store's folder
        return MlflowClient(tracking_uri=uri)
    except (MlflowException, OSError) as e:
        raise ConfigError(f"--track mlflow:{uri}: MLflow cannot use this tracking URI: {e}") from None


def _experiment_id(client, uri: str, name: str) -> str:
    exp = client.get_experiment_by_name(name)
    if exp is None:
        return client.create_experiment(name, artifact_location=_artifact_location(uri, name))
    if exp.lifecycle_stage != "active":
        raise ConfigError(f"MLflow experiment {name!r} at {uri} is deleted; restore it "
                          f"(mlflow experiments restore --experiment-id {exp.experiment_id}) or name another")
    return exp.experiment_id


def _find_or_create_run(client, experiment_id: str, run_dir: Path, config: dict) -> str:
    """The MLflow run tagged with this run directory's key; a new one (named after it) when none."""
    key = _run_key(run_dir)
    found = client.search_runs([experiment_id], filter_string=f"tags.`{RUN_KEY_TAG}` = '{key}'", max_results=1)
    if found:
        return found[0].info.run_id
    tags = {RUN_KEY_TAG: key, RUN_DIR_TAG: str(run_dir),
            **{f"mlhead.{k}": str(config[k]) for k in ("dataset", "backbone", "loss") if config.get(k)}}
    return client.create_run(experiment_id, tags=tags, run_name=run_dir.name).info.run_id


def _point(step: int, value: float) -> tuple[int, float | str]:
    """A metric point as the store holds it, to compare: NaN equal to NaN, +-inf as +-float max (MLflow
    stores infinities that way)."""
    if math.isnan(value):
        return step, "nan"
    return step, max(-sys.float_info.max, min(sys.float_info.max, value))


def _log_new(client, run_id: str, params: dict[str, str], metrics: dict[str, list[tuple[int, float]]]) -> None:
    """Log the params and (step, value) points the run does not hold yet, in batches MLflow accepts.

    A param already logged keeps its value (MLflow params are immutable)."""
    from mlflow.entities import Metric, Param

    have_params = client.get_run(run_id).data.params
    new_params = [Param(k, v) for k, v in params.items() if k not in have_params]
    now = int(time.time() * 1000)
    new_metrics = []
    for key, points in metrics.items():
        have = {_point(m.step, m.value) for m in client.get_metric_history(run_id, key)}
        new_metrics += [Metric(key, v, now, step) for step, v in points if _point(step, v) not in have]
    for i in range(0, max(len(new_params), len(new_metrics)), 100):
        client.log_batch(run_id, metrics=new_metrics[i:i + 100], params=new_params[i:i + 100])


def log_run(run_dir, uri: str | None = None, experiment: str = DEFAULT_EXPERIMENT) -> str:
    """Log one mlhead run directory to MLflow: params, per-epoch and eval metrics, files as artifacts.

    The MLflow run is the one tagged with this directory (created on first use), so logging after
    ``fit`` and again after ``eval`` gives one MLflow run holding both; points already logged are not
    logged again.

    Args:
        run_dir: a run directory (has ``config.json``).
        uri: MLflow tracking URI; None: the SQLite store in the run directory's parent (the runs dir).
        experiment: MLflow experiment name (created when absent).

    Returns:
        The MLflow run id.

    Raises:
        DependencyError: MLflow is not installed (``pip install 'mlhead[track]'``).
        ConfigError: MLflow refuses the URI, or the experiment is deleted.
        RunError: ``run_dir`` is not a run directory.
        StorageError: the tracking store failed while logging (the run directory is left as it was).
    """
    _, MlflowException = _mlflow()
    run_dir = Path(run_dir).resolve()
    config = load_config(run_dir)
    metrics = run_metrics(run_dir)
    uri = uri or TrackSpec().uri_for(run_dir)
    client = _client(uri)
    try:
        run_id = _find_or_create_run(client, _experiment_id(client, uri, experiment), run_dir, config)
        _log_new(client, run_id, run_params(config, _cache_attrs(config)), metrics)
        client.log_artifacts(run_id, str(run_dir))
    except (MlflowException, OSError) as e:
        raise StorageError(f"MLflow logging of {run_dir} to {uri} failed: {e}") from None
    return run_id


@dataclass(frozen=True)
class Tracked:
    """Where one run directory was logged: its MLflow run id and the tracking URI."""

    run_dir: Path
    run_id: str
    uri: str


def log_runs(run_dirs, spec: TrackSpec | str, runs_dir=None,
             experiment: str = DEFAULT_EXPERIMENT) -> list[Tracked]:
    """:func:`log_run` for each distinct run directory under a ``--track`` spec.

    Args:
        run_dirs: run directories (repeats are logged once, in first-seen order).
        spec: a :class:`TrackSpec` or a ``--track`` string (:func:`parse_spec`).
        runs_dir: the command's runs dir, where the default store lives (see :func:`store_dir`).
        experiment: MLflow experiment name.

    Returns:
        One :class:`Tracked` per run directory. Errors as :func:`parse_spec` and :func:`log_run`.
    """
    spec = parse_spec(spec) if isinstance(spec, str) else spec
    out = []
    for d in dict.fromkeys(Path(d) for d in run_dirs):
        uri = spec.uri_for(d, runs_dir)
        out.append(Tracked(d, log_run(d, uri, experiment), uri))
    return out
