"""Run directories: the versioned run record, writing/reading a fitted head, predicting and evaluating.

A run directory holds ``config.json`` (a :class:`RunConfig`: every option, the cache path and
fingerprint, the validation decision rule, best epoch; with a ``schema_version``), ``head.safetensors``
(an :class:`~mlhead.heads.MLPHead` state_dict of the best epoch), ``history.csv`` (per epoch:
train_loss, val_loss, val_micro_f1, val_macro_f1) and, after ``mlhead eval``,
``eval/<split>__<rule>.json``, ``metrics.json`` (the latest evaluation) and ``per_class.csv``.
Every file is written atomically (:mod:`mlhead.fileio`), and a new run directory as a whole: it is
written into a ``.tmp-run-*`` sibling and renamed into place, so a full disk or read-only folder leaves no
half-written run. ``head.safetensors`` stores the sha256 of its tensor bytes in its metadata; a flipped,
truncated or otherwise damaged head, ``config.json`` or ``metrics.json`` is a :class:`RunError` naming the
file.

Schema versions of ``config.json``: 1 = no ``schema_version`` key, the validation rule as
``val_activation``/``val_threshold`` (mlhead up to 6b3a37a); 2 = ``schema_version: 2``, the rule as
``val_rule`` (a :meth:`~mlhead.rules.DecisionRule.to_dict`); 3 = the training controls of issue #17:
``weight_decay``, ``patience``, ``pos_weight`` (+ ``pos_weight_values``), ``normalize`` (replacing the
``standardize`` flag), ``stopped_epoch`` and ``stop_reason``. Older versions are migrated on load;
newer ones and unknown keys are refused with a :class:`RunError` naming the file.
"""

from __future__ import annotations

import csv
import errno
import hashlib
import io
import json
import os
import re
import shutil
import time
import uuid
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from .cache import CacheError, open_cache
from .errors import RunError, StorageError
from .fileio import atomic_write_bytes, atomic_write_json, atomic_write_text, fsync_dir, read_json, storage_errors
from .heads import MLPHead
from .rules import DecisionRule

#: The ``schema_version`` this mlhead writes into config.json.
SCHEMA_VERSION = 4

#: Why a run stopped: it ran all its epochs, its selection criterion did not improve for ``patience``
#: evaluations, or its loss became non-finite or exploded (see :data:`mlhead.train.DIVERGENCE_FACTOR`).
STOP_REASONS = ("completed", "patience", "diverged")

#: folder name of MLflow's local artifact store (``--track mlflow``, :mod:`mlhead.tracking`), which
#: holds *copies* of run directories; :func:`find_runs` never searches it
MLFLOW_ARTIFACTS_DIR = "mlartifacts"


@dataclass
class RunConfig:
    """The record of one fitted run (``config.json``), typed and versioned.

    Options of the fit (``epochs`` ... ``normalize``, ``val_rule`` as a rule dict, ``patience``,
    ``pos_weight`` as given plus the per-class ``pos_weight_values`` used), the run's grid cell
    (``loss``, ``loss_options``, ``seed``, ``lr``, ``weight_decay``), its data (``dataset``,
    ``backbone``, ``cache`` path and ``cache_fingerprint``, ``classes``, ``dim`` D, ``n_train``,
    ``n_val``) and its outcome (``best_epoch``, ``best_value`` of ``select``, ``stopped_epoch`` (the
    last epoch trained), ``stop_reason`` (one of :data:`STOP_REASONS`), ``stacked_runs`` K,
    ``train_seconds``, ``suggested_rule`` of the loss). Read access by config.json key (``cfg["loss"]``,
    ``cfg.get("seed")``) works as on the JSON dict.
    """

    loss: str
    classes: list
    dim: int
    hidden: int
    schema_version: int = SCHEMA_VERSION
    epochs: int = 100
    batch_size: int = 256
    precision: str = "auto"
    device: str | None = None
    select: str = "val_loss"
    val_rule: dict = field(default_factory=lambda: DecisionRule().to_dict())
    val_every: int = 1
    normalize: str = "none"
    patience: int | None = None
    pos_weight: str = "none"
    pos_weight_values: list | None = None
    loss_options: dict = field(default_factory=dict)
    seed: int = 0
    lr: float = 1e-3
    weight_decay: float = 0.0
    dataset: str = ""
    backbone: str = ""
    cache: str = ""
    cache_fingerprint: str = ""
    n_train: int = 0
    n_val: int = 0
    best_epoch: int = 0
    best_value: float | None = None
    stopped_epoch: int = 0
    stop_reason: str = "completed"
    stacked_runs: int = 1
    train_seconds: float = 0.0
    suggested_rule: dict | None = None
    encoder: dict | None = None

    @property
    def standardize(self) -> bool:
        """True when inputs are z-scored (``normalize == "standardize"``; the schema-2 flag)."""
        return self.normalize == "standardize"

    @property
    def diverged(self) -> bool:
        """True when the run was stopped because its loss diverged."""
        return self.stop_reason == "diverged"

    @property
    def rule(self) -> DecisionRule:
        """The validation decision rule as a :class:`~mlhead.rules.DecisionRule`."""
        return DecisionRule.from_dict(self.val_rule)

    def __getitem__(self, key: str) -> Any:
        if key not in _FIELDS:
            raise KeyError(key)
        return getattr(self, key)

    def get(self, key: str, default: Any = None) -> Any:
        """``self[key]`` or ``default`` for a key that is not a field."""
        return getattr(self, key) if key in _FIELDS else default

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (the content of config.json)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "config.json") -> RunConfig:
        """Build from a config.json dict of any known schema version (migrated to the current one).

        Raises RunError naming ``source`` for a newer schema, an unknown or missing key, or a value of
        the wrong type.
        """
        d = migrate(dict(d), source)
        unknown = sorted(set(d) - set(_FIELDS))
        if unknown:
            raise RunError(f"{source}: unknown key(s) {unknown} in a schema {d['schema_version']} run config "
                           f"(written by another mlhead version?)")
        missing = sorted(k for k, f in _FIELDS.items() if k not in d and _required(f))
        if missing:
            raise RunError(f"{source}: run config lacks required key(s) {missing}")
        for k, v in d.items():
            _check_type(k, v, source)
        cfg = cls(**d)
        try:
            cfg.rule  # noqa: B018  (validates val_rule)
        except ValueError as e:
            raise RunError(f"{source}: invalid val_rule ({e})") from None
        if cfg.stop_reason not in STOP_REASONS:
            raise RunError(f"{source}: stop_reason {cfg.stop_reason!r} invalid; valid: {', '.join(STOP_REASONS)}")
        return cfg

    def write(self, path: str | Path) -> Path:
        """Write as JSON, atomically (StorageError on a write failure)."""
        return atomic_write_json(path, self.to_dict())

    @classmethod
    def read(cls, path: str | Path) -> RunConfig:
        """Read and migrate a config.json (RunError when absent, unreadable or invalid)."""
        p = Path(path)
        try:
            d = read_json(p, RunError, "; the run record is damaged: refit the run")
        except FileNotFoundError:
            raise RunError(f"not a run directory (no config.json): {p.parent}") from None
        if not isinstance(d, dict):
            raise RunError(f"{p}: expected a JSON object")
        return cls.from_dict(d, str(p))


_FIELDS = {f.name: f for f in fields(RunConfig)}
_TYPES = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,), "dict": (dict,),
          "list": (list,)}


def _required(f) -> bool:
    return f.default is MISSING and f.default_factory is MISSING


def _check_type(key: str, value: Any, source: str) -> None:
    kinds = [k.strip() for k in str(_FIELDS[key].type).split("|")]
    if value is None and "None" in kinds:
        return
    ok = any(isinstance(value, _TYPES[k]) for k in kinds if k in _TYPES)
    if isinstance(value, bool) and "bool" not in kinds:
        ok = False
    if not ok:
        raise RunError(f"{source}: {key} = {value!r} is not of type {_FIELDS[key].type}")


def _v1_to_v2(d: dict[str, Any]) -> dict[str, Any]:
    """v1 kept the validation rule as val_activation/val_threshold."""
    act, t = d.pop("val_activation", "softmax"), d.pop("val_threshold", None)
    d["val_rule"] = DecisionRule(act, t).to_dict()
    return d


def _v2_to_v3(d: dict[str, Any]) -> dict[str, Any]:
    """v2 had the ``standardize`` flag and none of the controls: the defaults they had (Adam = AdamW
    without decay, no patience, no pos_weight) and a run that ran all its epochs."""
    d["normalize"] = "standardize" if d.pop("standardize", False) else "none"
    d.setdefault("stopped_epoch", d.get("epochs", 0))
    d.setdefault("stop_reason", "completed")
    return d


def _v3_to_v4(d: dict[str, Any]) -> dict[str, Any]:
    """v3 did not copy the cache's encoder description into the run (``encoder`` None: predict reads it
    from the run's cache)."""
    return d


#: schema version -> function migrating a config dict of that version to the next one.
MIGRATIONS = {1: _v1_to_v2, 2: _v2_to_v3, 3: _v3_to_v4}

#: the cache attrs that describe (and rebuild) the encoder the cache was made with
ENCODER_KEYS = ("backbone", "weights_sha256", "preprocessing", "modality", "precision", "weights")


def encoder_attrs(attrs) -> dict:
    """The cache's :data:`ENCODER_KEYS` attrs (``""`` when absent) as JSON values."""
    return {k: (v.item() if hasattr(v, "item") else v) for k, v in ((k, attrs.get(k, "")) for k in ENCODER_KEYS)}


def encoder_from_attrs(attrs) -> dict | None:
    """The run record's ``encoder`` field: :func:`encoder_attrs` of the cache, or None for a features
    cache made without an encoder (no ``preprocessing``)."""
    spec = encoder_attrs(attrs)
    return spec if (spec.get("preprocessing") or {}).get("kind") else None


def migrate(d: dict[str, Any], source: str = "config.json") -> dict[str, Any]:
    """A config.json dict of any known schema version, migrated to :data:`SCHEMA_VERSION`.

    Raises RunError naming ``source`` for a schema newer than this mlhead (or not an integer).
    """
    version = d.get("schema_version", 1)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise RunError(f"{source}: schema_version {version!r} is not a positive integer")
    if version > SCHEMA_VERSION:
        raise RunError(f"{source}: run config schema {version} is newer than this mlhead's ({SCHEMA_VERSION}); "
                       "upgrade mlhead to read it")
    while version < SCHEMA_VERSION:
        try:
            d = MIGRATIONS[version](d)
        except ValueError as e:
            raise RunError(f"{source}: invalid val_rule in a schema {version} run config ({e})") from None
        version += 1
    d["schema_version"] = version
    return d


@dataclass
class RunRecord:
    """A fitted run in memory: its :class:`RunConfig`, head state_dict, history rows and directory."""

    config: RunConfig
    state: dict
    history: list[dict] = field(default_factory=list)
    path: Path | None = None


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._=-]+", "_", text).strip("_")


def _csv_text(rows: list[dict]) -> str:
    buf = io.StringIO(newline="")
    w = csv.DictWriter(buf, fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


#: Prefix of the temporary sibling a run directory is written into before it is renamed into place
#: (:func:`write_run`); :func:`find_runs` never lists such a folder.
TMP_RUN_PREFIX = ".tmp-run-"
#: Name of the safetensors metadata key holding the sha256 of the head's tensor bytes.
HEAD_SHA256_KEY = "mlhead_sha256"


def _rename_into_place(tmp: Path, runs_dir: Path, name: str) -> Path:
    """Rename the finished folder ``tmp`` to ``runs_dir/name`` (``name-2``, ``name-3``... when taken)."""
    base = runs_dir / _slug(name)
    path, n = base, 1
    while True:
        if not path.exists():
            try:
                os.rename(tmp, path)
                return path
            except OSError as e:
                if e.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                    raise
        n += 1
        path = Path(f"{base}-{n}")


def _safetensors_data(blob: bytes) -> tuple[dict, bytes]:
    """(header dict, tensor bytes) of a safetensors file's bytes; ValueError when malformed."""
    n = int.from_bytes(blob[:8], "little") if len(blob) >= 8 else -1
    if not 0 <= n <= len(blob) - 8:
        raise ValueError("header length past the end of the file")
    return json.loads(blob[8:8 + n].decode("utf-8")), blob[8 + n:]


def head_bytes(state: dict[str, torch.Tensor]) -> bytes:
    """A head state_dict as safetensors bytes whose metadata holds the sha256 of the tensor bytes
    (:data:`HEAD_SHA256_KEY`), so :func:`load_head` detects a flipped or truncated file."""
    from safetensors.torch import save

    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    digest = hashlib.sha256(_safetensors_data(save(tensors))[1]).hexdigest()
    return save(tensors, metadata={HEAD_SHA256_KEY: digest})


def read_head_state(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a ``head.safetensors`` written by :func:`head_bytes` (or an older one without the
    checksum). Raises RunError naming the file when it is absent, truncated, corrupt or its tensor bytes
    do not match the stored sha256; StorageError when it cannot be read."""
    from safetensors.torch import load

    fix = "; the head file is damaged: refit the run"
    with storage_errors(path, "read"):
        if not path.is_file():
            raise RunError(f"{path.parent}: no head.safetensors (the fit did not finish); refit the run")
        blob = path.read_bytes()
    try:
        header, data = _safetensors_data(blob)
        want = (header.get("__metadata__") or {}).get(HEAD_SHA256_KEY)
        if want is not None and hashlib.sha256(data).hexdigest() != want:
            raise RunError(f"{path}: checksum mismatch (the file was modified or truncated after it was written){fix}")
        return load(blob)
    except RunError:
        raise
    except Exception as e:  # safetensors raises its own SafetensorError, json/Unicode errors, ValueError
        raise RunError(f"{path}: corrupt or truncated safetensors file ({type(e).__name__}: {e}){fix}") from None


def write_run(rec: RunRecord, runs_dir: Path, label: str) -> Path:
    """Write the run into a temporary sibling folder (head.safetensors, history.csv, config.json) and
    rename it to ``<runs_dir>/<timestamp>-<dataset>-<label>`` (suffixed if taken): a run directory
    appears whole or not at all. Every file is written atomically. Raises StorageError naming the path
    on a write failure (disk full, read-only folder); the temporary folder is removed then."""
    runs_dir = Path(runs_dir)
    name = f"{time.strftime('%Y%m%d-%H%M%S')}-{rec.config.dataset or 'data'}-{label}"
    tmp = runs_dir / f"{TMP_RUN_PREFIX}{_slug(name)}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        with storage_errors(runs_dir):
            tmp.mkdir(parents=True)
        atomic_write_bytes(tmp / "head.safetensors", head_bytes(rec.state))
        if rec.history:
            atomic_write_text(tmp / "history.csv", _csv_text(rec.history))
        rec.config.write(tmp / "config.json")
        with storage_errors(runs_dir / _slug(name)):
            path = _rename_into_place(tmp, runs_dir, name)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    fsync_dir(runs_dir)
    return path


def load_run_config(run_dir) -> RunConfig:
    """The :class:`RunConfig` of a run directory, migrated from older schemas (RunError when absent,
    unreadable, of a newer schema or with unknown keys)."""
    return RunConfig.read(Path(run_dir) / "config.json")


def load_config(run_dir) -> dict:
    """``config.json`` of a run directory as a dict, migrated to the current schema (see
    :func:`load_run_config`)."""
    return load_run_config(run_dir).to_dict()


def find_runs(root) -> list[Path]:
    """Every run directory (a folder holding ``config.json``) in or under ``root``, sorted by path.

    ``root`` itself when it is a run directory; a run directory is a leaf (its subfolders are not
    searched); MLflow artifact folders (:data:`MLFLOW_ARTIFACTS_DIR`, copies of runs logged with
    ``--track mlflow``) are skipped. [] when there is none or ``root`` does not exist.
    """
    root = Path(root)
    if (root / "config.json").is_file():
        return [root]
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        if "config.json" in filenames:
            found.append(Path(dirpath))
            dirnames[:] = []
        else:
            dirnames[:] = sorted(d for d in dirnames if d != MLFLOW_ARTIFACTS_DIR and not d.startswith(TMP_RUN_PREFIX))
    return sorted(found)


def latest_run(runs_dir="runs") -> Path:
    """The run directory (as :func:`find_runs` finds them) whose config.json is newest under
    ``runs_dir`` (RunError if none)."""
    found = find_runs(runs_dir)
    if not found:
        raise RunError(f"no run under {runs_dir}/: run `mlhead fit` first or pass --run DIR")
    return max(found, key=lambda d: (d / "config.json").stat().st_mtime_ns)


def load_head(run_dir) -> tuple[MLPHead, dict]:
    """The fitted head (eval mode, float32) and its config (a dict, see :func:`load_config`)."""
    cfg = load_config(run_dir)
    path = Path(run_dir) / "head.safetensors"
    state = read_head_state(path)
    head = MLPHead(cfg["dim"], cfg["hidden"], len(cfg["classes"]), normalize=cfg["normalize"])
    try:
        head.load_state_dict(state)
    except RuntimeError as e:
        raise RunError(f"{path} does not fit {path.parent / 'config.json'} (dim {cfg['dim']}, hidden "
                       f"{cfg['hidden']}, {len(cfg['classes'])} classes): {str(e).splitlines()[0]}") from None
    return head.eval(), cfg


def input_transform(run_dir) -> Callable[[torch.Tensor], torch.Tensor]:
    """The input normalization the run's head was fitted with (``--normalize``), as a function of
    embeddings N x D -> N x D float32 (:func:`mlhead.normalize.apply` with the stored statistics):
    what eval and predict apply before the head's first layer."""
    from . import normalize as N

    head, cfg = load_head(run_dir)
    stats = {k: getattr(head, k) for k in N.STAT_KEYS[cfg["normalize"]]}
    return lambda X: N.apply(torch.as_tensor(X, dtype=torch.float32), cfg["normalize"], stats)


def run_cache(run_dir, cache=None):
    """Open the run's cache (or ``cache``) and refuse one whose fingerprint differs from the run's."""
    cfg = load_config(run_dir)
    c = open_cache(cache or cfg["cache"])
    if c.fingerprint != cfg["cache_fingerprint"]:
        raise CacheError(f"run {run_dir} was fitted on a cache with fingerprint {(cfg['cache_fingerprint'] or '?')[:12]}, "
                         f"but {c.path} has {c.fingerprint[:12]} (rebuilt or different inputs); refit the head")
    return c


@torch.no_grad()
def predict(run_dir, split: str = "test", cache=None) -> tuple[np.ndarray, np.ndarray, list[str], dict]:
    """Logits (N x C float32), targets (N x C uint8), ids and config of a run on a cache split."""
    head, cfg = load_head(run_dir)
    c = run_cache(run_dir, cache)
    X, Y, ids = c.load(split)
    logits = torch.cat([head(X[i:i + 8192]) for i in range(0, X.shape[0], 8192)]) if len(X) else \
        torch.zeros(0, len(cfg["classes"]))
    return logits.numpy(), Y.numpy(), ids, cfg


_EVAL_RUN_KEYS = ("loss", "loss_options", "seed", "lr", "weight_decay", "dataset", "backbone", "hidden", "epochs",
                  "best_epoch", "stopped_epoch", "stop_reason")


def _write_output(output, doc: dict) -> None:
    """``-o FILE``: the evaluation document as JSON, or one CSV row (split, rule, metrics) for ``.csv``."""
    out = Path(output)
    with storage_errors(out):
        out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() == ".csv":
        atomic_write_text(out, _csv_text([{"split": doc["split"], "rule": doc["rule"].get("name"), **doc["metrics"]}]))
    else:
        atomic_write_json(out, doc)


def _write_in_run(run_dir: Path, doc: dict, per_class: list[dict] | None) -> Path:
    """``eval/<split>__<rule>.json``, ``metrics.json`` and ``per_class.csv`` in the run directory."""
    rule = doc["rule"]
    with storage_errors(run_dir / "eval"):
        (run_dir / "eval").mkdir(exist_ok=True)
    path = run_dir / "eval" / f"{doc['split']}__{rule.get('slug') or _slug(rule.get('name', 'rule'))}.json"
    for p in (path, run_dir / "metrics.json"):
        atomic_write_json(p, doc)
    if per_class:
        atomic_write_text(run_dir / "per_class.csv", _csv_text(per_class))
    return path


def write_evaluation(run_dir, split: str, rule: dict, metrics: dict, per_class: list[dict] | None = None,
                     output=None, warnings: list[str] | None = None, notes: list[str] | None = None) -> Path | None:
    """Write ``eval/<split>__<rule>.json``, ``metrics.json`` (and ``per_class.csv``) into the run
    directory, and ``output`` (.json or .csv) first when given. Every file atomically; ``warnings`` (see
    :func:`mlhead.metrics.rule_warnings`) are recorded in the document.

    Returns the eval json path in the run directory. Raises StorageError naming the path when a file
    cannot be written, except when ``output`` was given and written: then a run directory that cannot be
    written (read-only, disk full) is not an error: the reason is appended to ``notes`` and None returned.
    """
    run_dir = Path(run_dir)
    cfg = load_config(run_dir)
    doc = {"split": split, "rule": rule, "metrics": metrics, "run": {k: cfg.get(k) for k in _EVAL_RUN_KEYS},
           "run_dir": str(run_dir)}
    if warnings:
        doc["warnings"] = list(warnings)
    if output:
        _write_output(output, doc)
    try:
        return _write_in_run(run_dir, doc, per_class)
    except StorageError as e:
        if not output:
            raise
        if notes is not None:
            notes.append(f"{e}; the evaluation was written to {output} only")
        return None


def last_rule(run_dir) -> DecisionRule:
    """The decision rule a run was last evaluated with (``metrics.json``, which ``mlhead eval`` writes;
    per-class thresholds included when ``--tune-thresholds`` tuned them), else the run's validation rule
    (``config.json`` ``val_rule``). ``mlhead predict`` and ``mlhead export`` use it by default.

    Raises RunError naming ``metrics.json`` when it is unreadable or its rule invalid."""
    path = Path(run_dir) / "metrics.json"
    if not path.is_file():
        return load_run_config(run_dir).rule
    try:
        rule = read_json(path, RunError, f"; rerun `mlhead eval --run {run_dir}`").get("rule")
        if isinstance(rule, dict) and "activation" in rule:
            return DecisionRule.from_dict({k: v for k, v in rule.items() if k != "slug"})
    except RunError:
        raise
    except (AttributeError, ValueError) as e:
        raise RunError(f"{path}: cannot read the decision rule ({e}); rerun `mlhead eval --run {run_dir}`") from None
    return load_run_config(run_dir).rule  # an old metrics.json that names its rule only


def resolve_rule(run_dir, rule: DecisionRule | None = None, cache=None) -> DecisionRule:
    """``rule`` (default: softmax>=0.05) with per-class thresholds tuned on its ``tuned_on`` split of
    the run's cache when it is a ``--tune-thresholds`` recipe (:attr:`DecisionRule.needs_tuning`); above
    :data:`mlhead.metrics.MANY_CLASSES` classes from row blocks (:func:`mlhead.blockeval.tune_blocks`,
    the same thresholds, never the split's N x C logits)."""
    from .metrics import many_classes

    rule = rule or DecisionRule()
    if not rule.needs_tuning:
        return rule
    if many_classes(len(load_config(run_dir)["classes"])):  # row blocks, as evaluate_run (mlhead.blockeval)
        from . import blockeval as B

        head, _ = load_head(run_dir)
        c = run_cache(run_dir, cache)
        return B.tune_blocks(B.head_blocks(head, c, rule.tuned_on), c.load_sparse(rule.tuned_on), rule)
    val_logits, val_targets, _, _ = predict(run_dir, rule.tuned_on, cache)
    return rule.tune(val_logits, val_targets)


def ranking_ks(n_classes: int, ks=None) -> list:
    """The ranking cut-offs eval reports: ``ks`` as given, or those of :data:`mlhead.ranking.DEFAULT_KS`
    that are <= ``n_classes``."""
    from .ranking import DEFAULT_KS

    return [k for k in DEFAULT_KS if k <= n_classes] if ks is None else list(ks)


def ranking_values(scores, targets, cache, ks=None, kind: str = "scores") -> dict[str, float]:
    """``p@k``, ``r@k``, ``ndcg@k`` and ``psp@k`` (percent; :func:`mlhead.ranking.ranking_metrics`, from
    the per-row top-k of ``scores``, N x C logits, or with ``kind="topk"`` the N x K top-k indices
    themselves) for every k in :func:`ranking_ks` of ``ks``. ``targets``: N x C, dense or scipy.sparse.
    PSP@k uses the label counts of ``cache``'s train split (read as CSR), left out when the cache has no
    train split. The top-k of the logits is the top-k under every activation (softmax and sigmoid keep
    each row's order). Raises ConfigError for a k outside 1..C."""
    from .ranking import label_counts, ranking_metrics

    ks = ranking_ks(targets.shape[1], ks)
    if not ks or not targets.shape[0]:
        return {}
    counts = n_train = None
    if "train" in cache.splits:
        train = cache.load_sparse("train")
        counts, n_train = label_counts(train), train.shape[0]
    values = ranking_metrics(scores, targets, ks, counts, n_train=n_train, kind=kind)
    return {k: v for k, v in values.items() if "@" in k}


def _evaluate_in_memory(run_dir, split: str, rule: DecisionRule, cache, ks) -> tuple[dict, list[dict]]:
    """Metrics and per-class rows from the split's whole N x C logits (:func:`predict`): C <= 1,000."""
    from . import metrics as M

    logits, targets, _, cfg = predict(run_dir, split, cache)
    values = {**M.evaluate_rule(logits, targets, rule), **ranking_values(logits, targets, run_cache(run_dir, cache), ks)}
    return values, M.per_class(logits, targets, rule, cfg["classes"])


def _evaluate_blocked(run_dir, split: str, rule: DecisionRule, cache, ks) -> tuple[dict, list[dict]]:
    """The same from row blocks of the head's logits over the cache (:mod:`mlhead.blockeval`): C > 1,000,
    memory bounded by a block, never N x C."""
    from . import blockeval as B
    from .ranking import check_ks

    head, cfg = load_head(run_dir)
    c = run_cache(run_dir, cache)
    labels = c.load_sparse(split)
    ks = ranking_ks(labels.shape[1], ks)
    kmax = max(check_ks(ks, labels.shape[1])) if ks else 0
    values, rows, topk = B.evaluate_blocks(B.head_blocks(head, c, split), labels, rule, cfg["classes"], kmax)
    return {**values, **ranking_values(topk, labels, c, ks, kind="topk")}, rows


def evaluate_run(run_dir, split: str = "test", rule: DecisionRule | None = None, cache=None, output=None,
                 ks=None) -> dict:
    """Evaluate a fitted run under one explicit decision rule and write the result files.

    ``rule``: a :class:`~mlhead.rules.DecisionRule` (default softmax>=0.05); a ``--tune-thresholds``
    recipe (``DecisionRule(activation, threshold, tuned_on="val")``) gets per-class thresholds
    chosen on that split (maximising each class's F1) and applied to ``split``. ``ks``: the cut-offs of
    the ranking metrics P@k, R@k, nDCG@k, PSP@k added to the metrics (:func:`ranking_values`; default
    1, 3, 5 where <= C). Above :data:`mlhead.metrics.MANY_CLASSES` classes the split is evaluated in row
    blocks (:mod:`mlhead.blockeval`: same keys and values, memory bounded by a block instead of N x C).
    Returns the eval document {split, rule, metrics, per_class, path, config, warnings, notes}:
    ``warnings`` from :func:`mlhead.metrics.rule_warnings` (also written into the JSON), ``notes`` why the
    run directory was not written when ``output`` was (``path`` None then). Raises RunError/CacheError
    (missing run, cache mismatch) and ConfigError (a rule that does not fit the run, a k outside 1..C).
    """
    from . import metrics as M

    rule = resolve_rule(run_dir, rule, cache)
    cfg = load_config(run_dir)
    evaluate = _evaluate_blocked if M.many_classes(len(cfg["classes"])) else _evaluate_in_memory
    values, rows = evaluate(run_dir, split, rule, cache, ks)
    warnings, notes = M.rule_warnings(values, rule), []
    path = write_evaluation(run_dir, split, {**rule.to_dict(), "slug": rule.slug}, values, rows, output,
                            warnings, notes)
    return {"split": split, "rule": rule.to_dict(), "metrics": values, "per_class": rows, "path": path,
            "config": cfg, "warnings": warnings, "notes": notes}
