"""Aggregate evaluated runs: load their evaluation files, select one split/rule/dataset/backbone,
group runs into rows and average over seeds (sigmoidF1 paper Table 2, Figure 3's grid).

A run directory (written by ``mlhead fit``/``mlhead eval``) holds ``config.json`` (loss, loss_options,
seed, dataset, backbone, ...), ``history.csv`` (epoch, train_loss, val_loss, val_<metric>...) and, per
evaluation, ``eval/<split>__<rule-slug>.json`` = ``{"split", "rule": DecisionRule.to_dict(),
"metrics": {key: float}, "run": {...}}``; ``metrics.json`` is a copy of the latest one.
Records of different datasets, backbones or decision rules are never mixed silently: filter them or
get a ValueError listing what was found.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, RunError
from ..fileio import read_json
from ..metrics import LOWER_IS_BETTER, upgrade_metric_keys
from ..rules import DecisionRule
from ..runs import find_runs, migrate
from .render import DISPLAY_NAMES, Table2

TABLE2_METRICS = ("weighted_f1", "micro_f1", "macro_f1", "macro_precision", "map")

#: Order of the paper's Table 2 rows; other losses follow alphabetically.
LOSS_ORDER = ("crossentropy", "focal", "asl", "unboundedf1", "sigmoidf1", "zlpr")

#: Config keys that legitimately differ between seeds of one row.
_PER_RUN_KEYS = {"seed", "best_epoch", "run_dir", "run_name", "name", "created", "time", "timestamp",
                 "duration_s", "git", "git_commit", "host", "fingerprint", "cache_fingerprint", "stopped_epoch",
                 "stop_reason", "train_seconds"}


# --------------------------------------------------------------------------------------------------
# loading


def _read_json(path: Path) -> Any:
    return read_json(path, RunError)


def collect(paths: str | os.PathLike | Iterable[str | os.PathLike]) -> list[dict[str, Any]]:
    """Load every evaluation of the run directories in or under ``paths``.

    Args:
        paths: one path or several; each is a run directory (has ``config.json``) or a root searched
            recursively for run directories.

    Returns:
        One record per evaluation file ``<run>/eval/*.json`` (or ``<run>/metrics.json`` when the run
        has no ``eval/`` files), sorted by path: ``{"run_dir", "path", "split", "rule" (dict),
        "rule_name", "metrics" (dict key -> float), "config"}``. ``config`` is the evaluation's
        ``run`` subset updated with ``config.json`` (config.json wins). Runs never evaluated are
        skipped.

    Raises:
        RunError: a path does not exist or holds no run directory, or a config/evaluation file is
            malformed (named).
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    return [rec for run in _run_dirs(paths) for rec in _run_records(run)]


def _run_dirs(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Every run directory in or under ``paths`` (resolved, sorted, unique)."""
    run_dirs: list[Path] = []
    for p in paths:
        p = Path(p)
        if not p.exists():
            raise RunError(f"{p}: no such run directory or root")
        if not p.is_dir():
            raise RunError(f"{p}: expected a run directory or a directory of runs")
        found = find_runs(p)
        if not found:
            raise RunError(f"{p}: no run directories (directories with config.json) found")
        run_dirs.extend(found)
    return sorted({d.resolve() for d in run_dirs})


def _run_records(run: Path) -> list[dict[str, Any]]:
    """One record per evaluation file of one run directory (config migrated to the current schema)."""
    config = _read_json(run / "config.json")
    if not isinstance(config, dict):
        raise RunError(f"{run / 'config.json'}: expected a JSON object")  # noqa: TRY004
    config = migrate(config, str(run / "config.json"))
    files = sorted((run / "eval").glob("*.json")) if (run / "eval").is_dir() else []
    if not files and (run / "metrics.json").is_file():
        files = [run / "metrics.json"]
    records = []
    for f in files:
        ev = _read_json(f)
        if not isinstance(ev, dict) or not isinstance(ev.get("metrics"), dict) or "rule" not in ev:
            raise RunError(f"{f}: expected an object with 'split', 'rule' and 'metrics'")
        rule = ev["rule"] if isinstance(ev["rule"], dict) else {"name": str(ev["rule"])}
        records.append({
            "run_dir": str(run),
            "path": str(f),
            "split": ev.get("split", "test"),
            "rule": rule,
            "rule_name": rule.get("name") or DecisionRule.from_dict(rule).name,
            "metrics": {k: float(v) if v is not None else math.nan
                        for k, v in upgrade_metric_keys(ev["metrics"]).items()},
            "config": {**(ev.get("run") or {}), **config},
        })
    return records


# --------------------------------------------------------------------------------------------------
# selection and grouping


def config_value(config: dict[str, Any], key: str) -> Any:
    """``config[key]``, else ``config["loss_options"][key]``, else None."""
    if key in config:
        return config[key]
    opts = config.get("loss_options") or {}
    return opts.get(key)


def _rule_name(rule: Any) -> str:
    if isinstance(rule, DecisionRule):
        return rule.name
    if isinstance(rule, dict):
        return rule.get("name") or DecisionRule.from_dict(rule).name
    return str(rule)


def _distinct(records: list[dict], fn) -> list[str]:
    return sorted({str(fn(r)) for r in records})


def select(
    records: Sequence[dict[str, Any]],
    split: str = "test",
    rule: Any = None,
    dataset: str | None = None,
    backbone: str | None = None,
) -> list[dict[str, Any]]:
    """Records of one split, one decision rule, one dataset and one backbone.

    ``rule`` is a rule name ("softmax>=0.05"), a DecisionRule or its dict; ``None`` accepts the
    records only if they all share one rule. Likewise for ``dataset``/``backbone``. Raises
    ConfigError (RunError when there are no records), listing what was found, when nothing matches or when records would be mixed.
    """
    recs = list(records)
    if not recs:
        raise RunError("no evaluated runs given (run `mlhead eval` first)")
    chosen = [r for r in recs if r["split"] == split]
    if not chosen:
        raise ConfigError(f"no evaluations on split {split!r}; splits found: {_distinct(recs, lambda r: r['split'])}")
    checks = (
        ("rule", lambda r: r["rule_name"], None if rule is None else _rule_name(rule)),
        ("dataset", lambda r: r["config"].get("dataset"), dataset),
        ("backbone", lambda r: r["config"].get("backbone"), backbone),
    )
    for what, fn, wanted in checks:
        found = _distinct(chosen, fn)
        if wanted is not None:
            chosen = [r for r in chosen if str(fn(r)) == str(wanted)]
            if not chosen:
                raise ConfigError(f"no {split} evaluations with {what} {wanted!r}; {what}s found: {found}")
        elif len(found) > 1:
            raise ConfigError(
                f"{split} evaluations mix {len(found)} {what}s: {found}; refusing to average across "
                f"them, pass {what}= to choose one"
            )
    return chosen


def _fmt_value(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def _sort_part(key: str, v: Any) -> tuple:
    if key == "loss" and isinstance(v, str):
        return (0, LOSS_ORDER.index(v) if v in LOSS_ORDER else len(LOSS_ORDER), v)
    if v is None:
        return (3, 0, "")
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return (1, float(v), "")
    return (2, 0, str(v))


def _flat_config(config: dict[str, Any]) -> dict[str, Any]:
    """config with loss_options' keys lifted to the top level (top-level keys win)."""
    opts = config.get("loss_options") or {}
    return {**opts, **{k: v for k, v in config.items() if k != "loss_options"}}


def _group(records: list[dict], keys: list[str]) -> list[tuple[tuple, list[dict]]]:
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        k = tuple(config_value(r["config"], key) for key in keys)
        k = tuple(tuple(v) if isinstance(v, list) else v for v in k)
        groups.setdefault(k, []).append(r)
    ordered = sorted(groups.items(), key=lambda kv: [_sort_part(key, v) for key, v in zip(keys, kv[0])])
    for k, rs in ordered:
        seeds = [r["config"].get("seed") for r in rs]
        dup = sorted({str(s) for s in seeds if seeds.count(s) > 1})
        if dup:
            same = [r for r in rs if str(r["config"].get("seed")) in dup]
            flat = [_flat_config(r["config"]) for r in same]
            allkeys = set().union(*flat) - _PER_RUN_KEYS
            differ = sorted(
                key for key in allkeys
                if len({json.dumps(f.get(key), sort_keys=True, default=str) for f in flat}) > 1
            )
            how = (f"they differ in {differ}: add those keys to group_by (e.g. "
                   f"{'+'.join(keys + differ)!r}) or filter the records"
                   if differ else "their configs are identical (a copied run?): pass only one")
            raise ConfigError(
                f"row {_row_label(keys, k)!r} has several runs with seed {', '.join(dup)} "
                f"({', '.join(r['run_dir'] for r in same)}); {how}"
            )
    return ordered


def _row_label(keys: list[str], values: tuple) -> str:
    first = _fmt_value(values[0]) if values[0] is not None else "-"
    rest = [f"{k}={_fmt_value(v)}" for k, v in zip(keys[1:], values[1:]) if v is not None]
    return f"{first} ({', '.join(rest)})" if rest else first


def table2(
    records: Sequence[dict[str, Any]],
    metrics: Sequence[str] = TABLE2_METRICS,
    split: str = "test",
    rule: Any = None,
    group_by: str = "loss",
    *,
    dataset: str | None = None,
    backbone: str | None = None,
    digits: int = 2,
    title: str = "Multilabel classification",
) -> Table2:
    """Aggregate records (from :func:`collect`) into a Table-2-shaped :class:`Table2`.

    Args:
        records: from :func:`collect`.
        metrics: metric keys (columns), values in the metrics' units (percent, coverage_error a count).
        split: evaluation split to use.
        rule: decision rule name / DecisionRule / dict; None requires a single rule in the records.
        group_by: config key defining rows, or several joined by "+" (e.g. "loss+beta+eta"); keys
            are looked up in config.json, then in its loss_options.
        dataset, backbone: optional filters (None requires a single value in the records).
        digits: decimals shown (and used to decide ties for bold).

    Each row: mean and sample std (ddof=1; NaN when n = 1) over the row's runs, one per seed. Runs
    whose config says ``stop_reason: diverged`` are not averaged: they are left out of mean ± std (a
    row of diverged runs only shows n/a, n = 0) and listed in the caption.

    Raises:
        ValueError: no records; records mixing rules/datasets/backbones (listed) without a filter;
        a metric missing from a record (the file and available keys named); a row with two runs of
        the same seed (the differing config keys named).
    """
    chosen = select(records, split=split, rule=rule, dataset=dataset, backbone=backbone)
    metrics = list(metrics)
    if not metrics:
        raise ConfigError("metrics must name at least one metric")
    _require_metrics(chosen, metrics)
    keys = [k.strip() for k in group_by.split("+") if k.strip()]
    if not keys:
        raise ConfigError("group_by must name a config key, e.g. 'loss' or 'loss+beta+eta'")
    groups = _group(chosen, keys)
    kept = [[r for r in rs if not _diverged(r)] for _, rs in groups]
    stats = [_row_stats(rs, metrics) for rs in kept]
    mean, std = np.array([m for m, _ in stats]), np.array([s for _, s in stats])
    ns = [len(rs) for rs in kept]
    diverged = [f"{_row_label(keys, k)} seed {r['config'].get('seed')} (epoch {r['config'].get('stopped_epoch')})"
                for k, rs in groups for r in rs if _diverged(r)]
    first = chosen[0]["config"]
    ds, bb = str(first.get("dataset", "unknown dataset")), str(first.get("backbone", "unknown backbone"))
    rule_name = chosen[0]["rule_name"]
    return Table2(rows=[_row_label(keys, k) for k, _ in groups], metrics=metrics, mean=mean, std=std, n=ns,
                  seeds=[sorted((r["config"].get("seed") for r in rs), key=lambda v: _sort_part("seed", v))
                         for _, rs in groups],
                  best=_best_mask(mean, metrics, digits),
                  caption=_caption(title, bb, ds, split, rule_name, ns, metrics) + _diverged_note(diverged),
                  dataset=ds, backbone=bb,
                  split=split, rule=rule_name, group_by=group_by, digits=digits,
                  runs=[[r["run_dir"] for r in rs] for _, rs in groups])


def _require_metrics(records: list[dict], metrics: Sequence[str]) -> None:
    for r in records:
        missing = [m for m in metrics if m not in r["metrics"]]
        if missing:
            raise ConfigError(f"{r['path']}: no metric {missing}; available: {sorted(r['metrics'])}")


def _diverged(record: dict) -> bool:
    return record["config"].get("stop_reason") == "diverged"


def _diverged_note(diverged: list[str]) -> str:
    if not diverged:
        return ""
    return (f" {len(diverged)} diverged run(s) excluded from mean ± std (non-finite or exploding loss): "
            + "; ".join(diverged) + ".")


def _row_stats(rs: list[dict], metrics: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Mean and sample std (ddof=1; NaN for a single run) of one row's runs, per metric (NaN for none)."""
    if not rs:
        return np.full(len(metrics), np.nan), np.full(len(metrics), np.nan)
    vals = np.array([[r["metrics"][m] for m in metrics] for r in rs], dtype=np.float64)
    std = vals.std(axis=0, ddof=1) if len(rs) > 1 else np.full(len(metrics), np.nan)
    return vals.mean(axis=0), std


def _best_mask(mean: np.ndarray, metrics: Sequence[str], digits: int) -> np.ndarray:
    """R x M: the best mean per column at the displayed precision (min for lower-is-better; ties all)."""
    best = np.zeros(mean.shape, dtype=bool)
    for j, m in enumerate(metrics):
        col = np.round(mean[:, j], digits)
        ok = np.isfinite(col)
        if ok.any():
            target = col[ok].min() if m in LOWER_IS_BETTER else col[ok].max()
            best[:, j] = ok & (col == target)
    return best


def _caption(title: str, backbone: str, dataset: str, split: str, rule_name: str, ns: list[int],
             metrics: Sequence[str]) -> str:
    nmin, nmax = min(ns), max(ns)
    nseeds = f"{nmin} seeds" if nmin == nmax else f"{nmin}-{nmax} seeds (n per row)"
    if nmin == nmax == 1:
        nseeds = "1 seed (no std)"
    lower = [DISPLAY_NAMES.get(m, m) for m in metrics if m in LOWER_IS_BETTER]
    return (
        f"{title}: {backbone} on {dataset}, {split} split, decision rule {rule_name}. "
        f"Mean ± sample std (ddof=1) over {nseeds}; metrics in percent"
        + ("" if "coverage_error" not in metrics else " (coverage_error in labels)")
        + "; best mean per column in bold"
        + (f" (lowest for {', '.join(lower)})" if lower else "")
        + "."
    )


def heatmap_grid(
    records: Sequence[dict[str, Any]],
    metric: str,
    x: str = "beta",
    y: str = "eta",
    split: str = "test",
    rule: Any = None,
    loss: str | None = None,
    dataset: str | None = None,
    backbone: str | None = None,
) -> dict[str, Any]:
    """The data behind :func:`plot_heatmap`: records with both ``x`` and ``y`` (config or
    loss_options) of one loss/rule/dataset/backbone, mean over seeds per cell.

    Returns ``{"xs", "ys" (sorted values), "mean", "n" (arrays len(ys) x len(xs), NaN/0 for empty
    cells), "loss", "rule", "dataset", "backbone"}``. Raises ValueError when no record has both keys,
    when several losses have them and ``loss`` is None, or as :func:`select`.
    """
    grid = [r for r in records if config_value(r["config"], x) is not None
            and config_value(r["config"], y) is not None]
    if not grid:
        raise ConfigError(f"no evaluated run has both {x!r} and {y!r} in its config/loss_options")
    losses = _distinct(grid, lambda r: r["config"].get("loss"))
    if loss is not None:
        grid = [r for r in grid if r["config"].get("loss") == loss]
        if not grid:
            raise ConfigError(f"no {x} x {y} grid runs with loss {loss!r}; losses found: {losses}")
    elif len(losses) > 1:
        raise ConfigError(f"{x} x {y} runs mix losses {losses}; pass loss= to choose one")
    chosen = select(grid, split=split, rule=rule, dataset=dataset, backbone=backbone)
    for r in chosen:
        if metric not in r["metrics"]:
            raise ConfigError(f"{r['path']}: no metric {metric!r}; available: {sorted(r['metrics'])}")
    groups = _group(chosen, [x, y])
    xs = sorted({k[0] for k, _ in groups}, key=lambda v: _sort_part(x, v))
    ys = sorted({k[1] for k, _ in groups}, key=lambda v: _sort_part(y, v))
    mean = np.full((len(ys), len(xs)), np.nan)
    n = np.zeros((len(ys), len(xs)), dtype=int)
    for (vx, vy), rs in groups:
        i, j = ys.index(vy), xs.index(vx)
        mean[i, j] = np.mean([r["metrics"][metric] for r in rs])
        n[i, j] = len(rs)
    first = chosen[0]
    return {"xs": xs, "ys": ys, "mean": mean, "n": n, "loss": first["config"].get("loss"),
            "rule": first["rule_name"], "dataset": first["config"].get("dataset"),
            "backbone": first["config"].get("backbone")}


def load_history(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a run's history.csv into column -> float64 array (empty cells NaN). Raises RunError
    (naming the file) if it lacks epoch/train_loss/val_loss or has a non-numeric cell."""
    path = Path(path)
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        cols = reader.fieldnames or []
        missing = [c for c in ("epoch", "train_loss", "val_loss") if c not in cols]
        if missing:
            raise RunError(f"{path}: history lacks columns {missing}; has {cols}")
        data: dict[str, list[float]] = {c: [] for c in cols}
        for lineno, row in enumerate(reader, start=2):
            for c in cols:
                v = (row.get(c) or "").strip()
                try:
                    data[c].append(float(v) if v else math.nan)
                except ValueError as exc:
                    raise RunError(f"{path}:{lineno}: column {c!r} value {v!r} is not a number") from exc
    return {c: np.asarray(v, dtype=np.float64) for c, v in data.items()}
