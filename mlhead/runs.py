"""Run directories: write/read a fitted head, find the latest run, predict and evaluate a run.

A run directory holds ``config.json`` (every option, the cache path and fingerprint, best epoch),
``head.safetensors`` (an :class:`~mlhead.heads.MLPHead` state_dict of the best epoch),
``history.csv`` (per epoch: train_loss, val_loss, val_micro_f1, val_macro_f1) and, after
``mlhead eval``, ``eval/<split>__<rule>.json``, ``metrics.json`` (the latest evaluation) and
``per_class.csv``.
"""

from __future__ import annotations

from .errors import RunError  # noqa: F401  (re-exported)

import csv
import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .cache import CacheError, open_cache
from .heads import MLPHead




@dataclass
class RunRecord:
    config: dict
    state: dict
    history: list[dict] = field(default_factory=list)
    path: Path | None = None


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._=-]+", "_", text).strip("_")


def write_run(rec: RunRecord, runs_dir: Path, label: str) -> Path:
    """Create ``<runs_dir>/<timestamp>-<dataset>-<label>`` (suffixed if taken) and write the run."""
    from safetensors.torch import save_file

    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = runs_dir / _slug(f"{stamp}-{rec.config.get('dataset', 'data')}-{label}")
    path, n = base, 1
    while True:
        try:
            path.mkdir(parents=True)
            break
        except FileExistsError:
            n += 1
            path = Path(f"{base}-{n}")
    save_file({k: v.contiguous() for k, v in rec.state.items()}, str(path / "head.safetensors"))
    if rec.history:
        with open(path / "history.csv", "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(rec.history[0]))
            w.writeheader()
            w.writerows(rec.history)
    (path / "config.json").write_text(json.dumps(rec.config, indent=2, default=str))
    return path


def load_config(run_dir) -> dict:
    """``config.json`` of a run directory (RunError when absent or unreadable)."""
    p = Path(run_dir) / "config.json"
    try:
        return json.loads(p.read_text())
    except FileNotFoundError:
        raise RunError(f"not a run directory (no config.json): {run_dir}") from None
    except json.JSONDecodeError as e:
        raise RunError(f"{p}: unreadable ({e})") from None


def latest_run(runs_dir="runs") -> Path:
    """The run directory whose config.json is newest under ``runs_dir`` (RunError if none)."""
    found = sorted(Path(runs_dir).rglob("config.json"), key=lambda p: p.stat().st_mtime_ns, reverse=True)
    if not found:
        raise RunError(f"no run under {runs_dir}/: run `mlhead fit` first or pass --run DIR")
    return found[0].parent


def load_head(run_dir) -> tuple[MLPHead, dict]:
    """The fitted head (eval mode, float32) and its config."""
    from safetensors.torch import load_file

    cfg = load_config(run_dir)
    state = load_file(str(Path(run_dir) / "head.safetensors"))
    head = MLPHead(cfg["dim"], cfg["hidden"], len(cfg["classes"]), standardize=cfg.get("standardize", False))
    head.load_state_dict(state)
    return head.eval(), cfg


def run_cache(run_dir, cache=None):
    """Open the run's cache (or ``cache``) and refuse one whose fingerprint differs from the run's."""
    cfg = load_config(run_dir)
    c = open_cache(cache or cfg["cache"])
    if c.fingerprint != cfg.get("cache_fingerprint"):
        raise CacheError(f"run {run_dir} was fitted on a cache with fingerprint {cfg.get('cache_fingerprint', '?')[:12]}, "
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


def write_evaluation(run_dir, split: str, rule: dict, metrics: dict, per_class: list[dict] | None = None,
                     output=None) -> Path:
    """Write ``eval/<split>__<rule>.json`` and ``metrics.json`` (and ``per_class.csv``); also ``output``
    (.json or .csv) when given. Returns the eval json path."""
    run_dir = Path(run_dir)
    cfg = load_config(run_dir)
    run_keys = ("loss", "loss_options", "seed", "lr", "dataset", "backbone", "hidden", "epochs", "best_epoch")
    doc = {"split": split, "rule": rule, "metrics": metrics, "run": {k: cfg.get(k) for k in run_keys},
           "run_dir": str(run_dir)}
    (run_dir / "eval").mkdir(exist_ok=True)
    path = run_dir / "eval" / f"{split}__{rule.get('slug') or _slug(rule.get('name', 'rule'))}.json"
    for p in (path, run_dir / "metrics.json"):
        tmp = p.with_suffix(".tmp")
        tmp.write_text(json.dumps(doc, indent=2, default=str))
        os.replace(tmp, p)
    if per_class:
        _write_csv(run_dir / "per_class.csv", per_class)
    if output:
        out = Path(output)
        out.parent.mkdir(parents=True, exist_ok=True)
        if out.suffix.lower() == ".csv":
            _write_csv(out, [{"split": split, "rule": rule.get("name"), **metrics}])
        else:
            out.write_text(json.dumps(doc, indent=2, default=str))
    return path


def _write_csv(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def evaluate_run(run_dir, split: str = "test", activation: str = "softmax", threshold: float | None = None,
                 top_k: int | None = None, tune_thresholds: bool = False, cache=None, output=None) -> dict:
    """Evaluate a fitted run under one explicit decision rule and write the result files.

    ``tune_thresholds``: per-class thresholds chosen on the val split (maximising each class's F1)
    and applied to ``split``. Returns the eval document {split, rule, metrics, per_class, path}.
    Raises RunError/CacheError (missing run, cache mismatch) and ValueError (bad rule options).
    """
    from . import metrics as M

    logits, targets, _, cfg = predict(run_dir, split, cache)
    if tune_thresholds:
        val_logits, val_targets, _, _ = predict(run_dir, "val", cache)
        rule = M.tuned_rule(val_logits, val_targets, activation, threshold)
    else:
        rule = M.DecisionRule(activation=activation, threshold=threshold, top_k=top_k)
    values = M.evaluate(logits, targets, activation=rule.activation, threshold=rule.threshold,
                        top_k=rule.top_k, thresholds=rule.thresholds)
    rows = M.per_class(logits, targets, rule, cfg["classes"])
    path = write_evaluation(run_dir, split, {**rule.to_dict(), "slug": rule.slug}, values, rows, output)
    return {"split": split, "rule": rule.to_dict(), "metrics": values, "per_class": rows, "path": path,
            "config": cfg}
