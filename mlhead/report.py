"""Aggregate evaluated runs into Table-2-shaped tables and plots (sigmoidF1 paper Table 2, Figure 3).

A run directory (written by ``mlhead fit``/``mlhead eval``) holds ``config.json`` (loss, loss_options,
seed, dataset, backbone, ...), ``history.csv`` (epoch, train_loss, val_loss, val_<metric>...) and, per
evaluation, ``eval/<split>__<rule-slug>.json`` = ``{"split", "rule": DecisionRule.to_dict(),
"metrics": {key: float}, "run": {...}}``; ``metrics.json`` is a copy of the latest one.

* :func:`collect` loads every evaluation found under run directories or roots.
* :func:`table2` aggregates them: rows = losses (or any ``+``-joined config keys), columns =
  metrics, mean +- sample std (ddof=1) over seeds, best mean per column in bold, with a caption
  naming dataset, backbone, split and decision rule. Records of different datasets, backbones or
  decision rules are never mixed silently: filter them or get a ValueError listing what was found.
* :class:`Table2` exports Markdown, LaTeX (booktabs), CSV and a rich table.
* Plots (each written as PNG and PDF; the paths are returned): :func:`plot_heatmap` (Figure 3:
  metric over a beta x eta grid), :func:`plot_per_class_f1`, :func:`plot_pr_curves`,
  :func:`plot_learning_curves`. Matplotlib is used through its object API with the Agg canvas
  (no pyplot state, no display needed).
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .metrics import LOWER_IS_BETTER, DecisionRule, _as_logits, _as_targets
from .metrics import upgrade_metric_keys

TABLE2_METRICS = ("weighted_f1", "micro_f1", "macro_f1", "macro_precision", "map")

#: Column headers (the papers' names where they have one).
DISPLAY_NAMES = {
    "weighted_f1": "weightedF1",
    "micro_f1": "microF1",
    "macro_f1": "macroF1",
    "macro_precision": "macroPrecision",
    "macro_recall": "macroRecall",
    "micro_precision": "microPrecision",
    "micro_recall": "microRecall",
    "map": "mAP",
    "map_binarized": "mAP(0/1)",
    "subset_accuracy": "SubACC",
    "example_f1": "exampleF1",
    "lrap": "LRAP",
    "ranking_loss": "RankLoss",
    "hamming_loss": "HammingLoss",
    "coverage_error": "CoverageError",
}

#: Order of the paper's Table 2 rows; other losses follow alphabetically.
LOSS_ORDER = ("crossentropy", "focal", "asl", "unboundedf1", "sigmoidf1", "zlpr")

#: Config keys that legitimately differ between seeds of one row.
_PER_RUN_KEYS = {"seed", "best_epoch", "run_dir", "run_name", "name", "created", "time", "timestamp",
                 "duration_s", "git", "git_commit", "host", "fingerprint", "cache_fingerprint"}


# --------------------------------------------------------------------------------------------------
# loading


def _read_json(path: Path) -> Any:
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from exc


def _find_run_dirs(root: Path) -> list[Path]:
    if (root / "config.json").is_file():
        return [root]
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        if "config.json" in filenames:
            found.append(Path(dirpath))
            dirnames[:] = []  # a run directory is a leaf
    return found


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
        FileNotFoundError: a path does not exist.
        ValueError: no run directory under a path, or a malformed config/evaluation file (named).
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    run_dirs: list[Path] = []
    for p in paths:
        p = Path(p)
        if not p.exists():
            raise FileNotFoundError(f"{p}: no such run directory or root")
        if not p.is_dir():
            raise ValueError(f"{p}: expected a run directory or a directory of runs")
        found = _find_run_dirs(p)
        if not found:
            raise ValueError(f"{p}: no run directories (directories with config.json) found")
        run_dirs.extend(found)
    records = []
    for run in sorted({d.resolve() for d in run_dirs}):
        config = _read_json(run / "config.json")
        if not isinstance(config, dict):
            raise ValueError(f"{run / 'config.json'}: expected a JSON object")  # noqa: TRY004
        files = sorted((run / "eval").glob("*.json")) if (run / "eval").is_dir() else []
        if not files and (run / "metrics.json").is_file():
            files = [run / "metrics.json"]
        for f in files:
            ev = _read_json(f)
            if not isinstance(ev, dict) or not isinstance(ev.get("metrics"), dict) or "rule" not in ev:
                raise ValueError(f"{f}: expected an object with 'split', 'rule' and 'metrics'")
            rule = ev["rule"] if isinstance(ev["rule"], dict) else {"name": str(ev["rule"])}
            name = rule.get("name") or DecisionRule.from_dict(rule).name
            cfg = {**(ev.get("run") or {}), **config}
            records.append({
                "run_dir": str(run),
                "path": str(f),
                "split": ev.get("split", "test"),
                "rule": rule,
                "rule_name": name,
                "metrics": {k: float(v) if v is not None else math.nan
                            for k, v in upgrade_metric_keys(ev["metrics"]).items()},
                "config": cfg,
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
    ValueError, listing what was found, when nothing matches or when records would be mixed.
    """
    recs = list(records)
    if not recs:
        raise ValueError("no evaluated runs given (run `mlhead eval` first)")
    chosen = [r for r in recs if r["split"] == split]
    if not chosen:
        raise ValueError(f"no evaluations on split {split!r}; splits found: {_distinct(recs, lambda r: r['split'])}")
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
                raise ValueError(f"no {split} evaluations with {what} {wanted!r}; {what}s found: {found}")
        elif len(found) > 1:
            raise ValueError(
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
            raise ValueError(
                f"row {_row_label(keys, k)!r} has several runs with seed {', '.join(dup)} "
                f"({', '.join(r['run_dir'] for r in same)}); {how}"
            )
    return ordered


def _row_label(keys: list[str], values: tuple) -> str:
    first = _fmt_value(values[0]) if values[0] is not None else "-"
    rest = [f"{k}={_fmt_value(v)}" for k, v in zip(keys[1:], values[1:]) if v is not None]
    return f"{first} ({', '.join(rest)})" if rest else first


# --------------------------------------------------------------------------------------------------
# Table 2


@dataclass
class Table2:
    """A Table-2-shaped aggregate: rows x metrics of mean and sample std over seeds.

    ``mean``/``std`` are float64 arrays R x M (percent, as in the metrics; std NaN when n = 1),
    ``n`` the number of seeds per row, ``best`` a bool R x M mask of the best mean per column (max,
    or min for lower-is-better metrics, compared at the displayed precision; ties all bold).
    """

    rows: list[str]
    metrics: list[str]
    mean: np.ndarray
    std: np.ndarray
    n: list[int]
    seeds: list[list[Any]]
    best: np.ndarray
    caption: str
    dataset: str
    backbone: str
    split: str
    rule: str
    group_by: str
    digits: int = 2
    runs: list[list[str]] = field(default_factory=list, repr=False)

    # -- cells -------------------------------------------------------------------------------------
    def _header(self, m: str) -> str:
        name = DISPLAY_NAMES.get(m, m)
        return name + (" ↓" if m in LOWER_IS_BETTER else "")

    def _row_header(self) -> str:
        return "Loss" if self.group_by == "loss" else self.group_by

    def _parts(self, i: int, j: int) -> tuple[str, str]:
        mu, sd = self.mean[i, j], self.std[i, j]
        m = "n/a" if not math.isfinite(mu) else f"{mu:.{self.digits}f}"
        s = f"{sd:.{self.digits}f}" if math.isfinite(sd) else ""
        return m, s

    # -- exports -----------------------------------------------------------------------------------
    def to_markdown(self) -> str:
        """GitHub Markdown: caption line, then the table; best means in ``**bold**``."""
        head = [self._row_header(), "n"] + [self._header(m) for m in self.metrics]
        lines = [f"**{self.caption}**", "", "| " + " | ".join(head) + " |",
                 "|" + "|".join([":---", "---:"] + ["---:"] * len(self.metrics)) + "|"]
        for i, row in enumerate(self.rows):
            cells = [row.replace("|", "\\|"), str(self.n[i])]
            for j in range(len(self.metrics)):
                m, s = self._parts(i, j)
                m = f"**{m}**" if self.best[i, j] else m
                cells.append(f"{m} ± {s}" if s else m)
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines) + "\n"

    def to_latex(self, label: str = "tab:table2") -> str:
        r"""A LaTeX ``table`` with booktabs rules; best means as ``\textbf{..}``; needs \usepackage{booktabs}."""
        def head(m: str) -> str:
            name = _tex(DISPLAY_NAMES.get(m, m))
            return name + (r" $\downarrow$" if m in LOWER_IS_BETTER else "")

        cols = "l" + "r" + "r" * len(self.metrics)
        out = [r"\begin{table}[t]", r"\centering", rf"\caption{{{_tex(self.caption)}}}",
               rf"\label{{{label}}}", rf"\begin{{tabular}}{{{cols}}}", r"\toprule",
               " & ".join([_tex(self._row_header()), "$n$"] + [head(m) for m in self.metrics]) + r" \\",
               r"\midrule"]
        for i, row in enumerate(self.rows):
            cells = [_tex(row), str(self.n[i])]
            for j in range(len(self.metrics)):
                m, s = self._parts(i, j)
                m = rf"\textbf{{{m}}}" if self.best[i, j] else m
                cells.append(f"{m} $\\pm$ {s}" if s else m)
            out.append(" & ".join(cells) + r" \\")
        out += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
        return "\n".join(out) + "\n"

    def to_csv(self, path: str | os.PathLike) -> Path:
        """Machine-readable CSV (full precision): group, n, seeds, <metric>_mean/_std/_best, and the
        dataset, backbone, split and rule columns. Returns the path written."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow([self.group_by, "n", "seeds"]
                       + [f"{m}_{s}" for m in self.metrics for s in ("mean", "std", "best")]
                       + ["dataset", "backbone", "split", "rule"])
            for i, row in enumerate(self.rows):
                vals: list[Any] = []
                for j in range(len(self.metrics)):
                    mu, sd = self.mean[i, j], self.std[i, j]
                    vals += [repr(float(mu)) if math.isfinite(mu) else "",
                             repr(float(sd)) if math.isfinite(sd) else "", int(bool(self.best[i, j]))]
                w.writerow([row, self.n[i], ";".join(str(s) for s in self.seeds[i])] + vals
                           + [self.dataset, self.backbone, self.split, self.rule])
        return path

    def to_rich(self):
        """A ``rich.table.Table`` titled with the caption; best means in bold."""
        from rich.table import Table
        from rich.text import Text

        t = Table(title=self.caption, title_justify="left")
        t.add_column(self._row_header())
        t.add_column("n", justify="right")
        for m in self.metrics:
            t.add_column(self._header(m), justify="right")
        for i, row in enumerate(self.rows):
            cells: list[Any] = [row, str(self.n[i])]
            for j in range(len(self.metrics)):
                m, s = self._parts(i, j)
                txt = Text(m, style="bold" if self.best[i, j] else "")
                if s:
                    txt.append(f" ± {s}", style="dim")
                cells.append(txt)
            t.add_row(*cells)
        return t

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict with every field (NaN kept as float NaN)."""
        return {
            "caption": self.caption, "dataset": self.dataset, "backbone": self.backbone,
            "split": self.split, "rule": self.rule, "group_by": self.group_by,
            "metrics": list(self.metrics),
            "rows": [
                {"row": r, "n": self.n[i], "seeds": self.seeds[i], "runs": self.runs[i] if self.runs else [],
                 **{m: {"mean": float(self.mean[i, j]), "std": float(self.std[i, j]),
                        "best": bool(self.best[i, j])} for j, m in enumerate(self.metrics)}}
                for i, r in enumerate(self.rows)
            ],
        }

    def __str__(self) -> str:
        return self.to_markdown()


_TEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
        "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def _tex(s: str) -> str:
    out = "".join(_TEX.get(ch, ch) for ch in str(s))
    return out.replace("±", r"$\pm$").replace(">=", r"$\geq$").replace("↓", r"$\downarrow$")


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

    Each row: mean and sample std (ddof=1; NaN when n = 1) over the row's runs, one per seed.

    Raises:
        ValueError: no records; records mixing rules/datasets/backbones (listed) without a filter;
        a metric missing from a record (the file and available keys named); a row with two runs of
        the same seed (the differing config keys named).
    """
    chosen = select(records, split=split, rule=rule, dataset=dataset, backbone=backbone)
    metrics = list(metrics)
    if not metrics:
        raise ValueError("metrics must name at least one metric")
    for r in chosen:
        missing = [m for m in metrics if m not in r["metrics"]]
        if missing:
            raise ValueError(f"{r['path']}: no metric {missing}; available: {sorted(r['metrics'])}")
    keys = [k.strip() for k in group_by.split("+") if k.strip()]
    if not keys:
        raise ValueError("group_by must name a config key, e.g. 'loss' or 'loss+beta+eta'")
    groups = _group(chosen, keys)
    R, M = len(groups), len(metrics)
    mean = np.full((R, M), np.nan)
    std = np.full((R, M), np.nan)
    rows, ns, seeds, runs = [], [], [], []
    for i, (k, rs) in enumerate(groups):
        vals = np.array([[r["metrics"][m] for m in metrics] for r in rs], dtype=np.float64)
        mean[i] = vals.mean(axis=0)
        if len(rs) > 1:
            std[i] = vals.std(axis=0, ddof=1)
        rows.append(_row_label(keys, k))
        ns.append(len(rs))
        seeds.append(sorted((r["config"].get("seed") for r in rs), key=lambda v: _sort_part("seed", v)))
        runs.append([r["run_dir"] for r in rs])
    best = np.zeros((R, M), dtype=bool)
    for j, m in enumerate(metrics):
        col = np.round(mean[:, j], digits)
        ok = np.isfinite(col)
        if ok.any():
            target = col[ok].min() if m in LOWER_IS_BETTER else col[ok].max()
            best[:, j] = ok & (col == target)
    first = chosen[0]["config"]
    ds, bb = str(first.get("dataset", "unknown dataset")), str(first.get("backbone", "unknown backbone"))
    rule_name = chosen[0]["rule_name"]
    nmin, nmax = min(ns), max(ns)
    nseeds = f"{nmin} seeds" if nmin == nmax else f"{nmin}-{nmax} seeds (n per row)"
    if nmin == nmax == 1:
        nseeds = "1 seed (no std)"
    lower = [DISPLAY_NAMES.get(m, m) for m in metrics if m in LOWER_IS_BETTER]
    caption = (
        f"{title}: {bb} on {ds}, {split} split, decision rule {rule_name}. "
        f"Mean ± sample std (ddof=1) over {nseeds}; metrics in percent"
        + ("" if "coverage_error" not in metrics else " (coverage_error in labels)")
        + "; best mean per column in bold"
        + (f" (lowest for {', '.join(lower)})" if lower else "")
        + "."
    )
    return Table2(rows=rows, metrics=metrics, mean=mean, std=std, n=ns, seeds=seeds, best=best,
                  caption=caption, dataset=ds, backbone=bb, split=split, rule=rule_name,
                  group_by=group_by, digits=digits, runs=runs)


# --------------------------------------------------------------------------------------------------
# plots


def _figure(w: float, h: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(w, h), layout="constrained")


def _save(fig, path: str | os.PathLike) -> list[Path]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    base = Path(path)
    if base.suffix.lower() in (".png", ".pdf"):
        base = base.with_suffix("")
    base.parent.mkdir(parents=True, exist_ok=True)
    out = [base.with_name(base.name + ".png"), base.with_name(base.name + ".pdf")]
    fig.savefig(out[0], dpi=150)
    fig.savefig(out[1])
    return out


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
        raise ValueError(f"no evaluated run has both {x!r} and {y!r} in its config/loss_options")
    losses = _distinct(grid, lambda r: r["config"].get("loss"))
    if loss is not None:
        grid = [r for r in grid if r["config"].get("loss") == loss]
        if not grid:
            raise ValueError(f"no {x} x {y} grid runs with loss {loss!r}; losses found: {losses}")
    elif len(losses) > 1:
        raise ValueError(f"{x} x {y} runs mix losses {losses}; pass loss= to choose one")
    chosen = select(grid, split=split, rule=rule, dataset=dataset, backbone=backbone)
    for r in chosen:
        if metric not in r["metrics"]:
            raise ValueError(f"{r['path']}: no metric {metric!r}; available: {sorted(r['metrics'])}")
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


def plot_heatmap(
    records: Sequence[dict[str, Any]],
    metric: str,
    path: str | os.PathLike,
    *,
    x: str = "beta",
    y: str = "eta",
    split: str = "test",
    rule: Any = None,
    loss: str | None = None,
    dataset: str | None = None,
    backbone: str | None = None,
) -> list[Path]:
    """Figure 3 of the sigmoidF1 paper: ``metric`` (mean over seeds) per (x, y) cell, annotated.

    ``path``: output path without suffix (or ending .png/.pdf); writes ``<path>.png`` and
    ``<path>.pdf`` and returns both paths. Empty cells are blank. Filters/raises as
    :func:`heatmap_grid`.
    """
    g = heatmap_grid(records, metric, x=x, y=y, split=split, rule=rule, loss=loss,
                     dataset=dataset, backbone=backbone)
    mean, n = g["mean"], g["n"]
    fig = _figure(max(5.5, 2.0 + 0.9 * len(g["xs"])), max(3.5, 1.6 + 0.6 * len(g["ys"])))
    ax = fig.add_subplot()
    im = ax.imshow(np.ma.masked_invalid(mean), origin="lower", aspect="auto", cmap="viridis")
    fig.colorbar(im, ax=ax, label=f"{DISPLAY_NAMES.get(metric, metric)} (%)" if metric != "coverage_error" else metric)
    ax.set_xticks(range(len(g["xs"])), [_fmt_value(v) for v in g["xs"]])
    ax.set_yticks(range(len(g["ys"])), [_fmt_value(v) for v in g["ys"]])
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    finite = mean[np.isfinite(mean)]
    mid = (finite.min() + finite.max()) / 2 if finite.size else 0.0
    vary = len(set(n[n > 0].ravel().tolist())) > 1
    for i in range(mean.shape[0]):
        for j in range(mean.shape[1]):
            if n[i, j]:
                txt = f"{mean[i, j]:.2f}" + (f"\nn={n[i, j]}" if vary else "")
                ax.text(j, i, txt, ha="center", va="center", fontsize=8,
                        color="black" if mean[i, j] > mid else "white")
    nmax = int(n.max())
    ax.set_title(f"{g['loss']}: {DISPLAY_NAMES.get(metric, metric)}, {g['backbone']} on {g['dataset']}\n"
                 f"{split}, {g['rule']}, mean over {nmax if not vary else 'n'} seeds", fontsize=9)
    return _save(fig, path)


def plot_per_class_f1(
    per_class_rows: Sequence[dict[str, Any]],
    path: str | os.PathLike,
    *,
    title: str | None = None,
    sort_by: str | None = None,
) -> list[Path]:
    """Horizontal bars of per-class F1 (percent) from :func:`mlhead.metrics.per_class` rows, each
    labelled "name (support)". ``sort_by``: None keeps class order, else a row key ("f1",
    "support"), descending. Writes PNG and PDF, returns both paths. Raises ValueError on empty rows
    or rows without "class"/"f1"."""
    rows = list(per_class_rows)
    if not rows:
        raise ValueError("per_class_rows is empty")
    for r in rows:
        if "class" not in r or "f1" not in r:
            raise ValueError(f"per-class row {r!r} lacks 'class' or 'f1' (use mlhead.metrics.per_class)")
    if sort_by:
        rows.sort(key=lambda r: -float(r[sort_by]))
    labels = [f"{r['class']} ({r['support']})" if "support" in r else str(r["class"]) for r in rows]
    f1 = [float(r["f1"]) for r in rows]
    fig = _figure(6.0, 1.0 + 0.22 * len(rows))
    ax = fig.add_subplot()
    pos = np.arange(len(rows))
    ax.barh(pos, f1, color="tab:blue")
    ax.set_yticks(pos, labels, fontsize=7 if len(rows) > 30 else 9)
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    ax.set_xlabel("F1 (%)")
    for p, v in zip(pos, f1):
        ax.text(min(v, 100) + 1, p, f"{v:.1f}", va="center", fontsize=7)
    ax.set_title(title or "Per-class F1 (support in parentheses)", fontsize=10)
    return _save(fig, path)


def plot_pr_curves(
    scores: Any,
    targets: Any,
    class_names: Sequence[str] | None,
    path: str | os.PathLike,
    *,
    max_classes: int = 10,
    title: str | None = None,
) -> list[Path]:
    """Precision-recall curves (sklearn precision_recall_curve / average_precision_score).

    ``scores``: N x C numpy/torch (any monotone score: probabilities or logits); ``targets``: N x C
    0/1. Plots the ``max_classes`` classes with the largest support (classes without positives are
    skipped: no curve exists) with AP in the legend, and the micro-average curve over all cells.
    Writes PNG and PDF, returns both paths. Raises ValueError on shape/value errors.
    """
    from sklearn.metrics import average_precision_score, precision_recall_curve

    s = _as_logits(scores, "scores")
    y = _as_targets(targets, s.shape)
    c = s.shape[1]
    names = [f"class_{j}" for j in range(c)] if class_names is None else [str(v) for v in class_names]
    if len(names) != c:
        raise ValueError(f"class_names has {len(names)} names but scores have C={c} classes")
    support = y.sum(axis=0)
    order = [j for j in np.argsort(-support, kind="stable") if support[j] > 0][:max_classes]
    fig = _figure(6.5, 5.0)
    ax = fig.add_subplot()
    for j in order:
        p, r, _ = precision_recall_curve(y[:, j], s[:, j])
        ap = 100 * average_precision_score(y[:, j], s[:, j])
        ax.step(r, p, where="post", lw=1, label=f"{names[j]} (AP {ap:.1f})")
    if support.sum() > 0:
        p, r, _ = precision_recall_curve(y.ravel(), s.ravel())
        ap = 100 * average_precision_score(y.ravel(), s.ravel())
        ax.step(r, p, where="post", lw=2, color="black", ls="--", label=f"micro-average (AP {ap:.1f})")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.legend(fontsize=7, loc="upper right")
    skipped = c - len(order)
    ax.set_title(title or f"Precision-recall curves ({len(order)} of {c} classes"
                 + (", largest support" if skipped else "") + ")", fontsize=10)
    return _save(fig, path)


def load_history(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a run's history.csv into column -> float64 array (empty cells NaN). Raises ValueError
    (naming the file) if it lacks epoch/train_loss/val_loss or has a non-numeric cell."""
    path = Path(path)
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        cols = reader.fieldnames or []
        missing = [c for c in ("epoch", "train_loss", "val_loss") if c not in cols]
        if missing:
            raise ValueError(f"{path}: history lacks columns {missing}; has {cols}")
        data: dict[str, list[float]] = {c: [] for c in cols}
        for lineno, row in enumerate(reader, start=2):
            for c in cols:
                v = (row.get(c) or "").strip()
                try:
                    data[c].append(float(v) if v else math.nan)
                except ValueError as exc:
                    raise ValueError(f"{path}:{lineno}: column {c!r} value {v!r} is not a number") from exc
    return {c: np.asarray(v, dtype=np.float64) for c, v in data.items()}


def plot_learning_curves(
    history_csv_paths: str | os.PathLike | Sequence[str | os.PathLike],
    path: str | os.PathLike,
    *,
    metrics: Sequence[str] | None = None,
    labels: Sequence[str] | None = None,
) -> list[Path]:
    """Learning curves of one or more runs: left panel train (solid) and val (dashed) loss per epoch,
    right panel the val metrics (``metrics`` = names without the "val_" prefix; default every
    val_<metric> column). Each run is labelled with its directory name (or ``labels``). Writes PNG
    and PDF, returns both paths. Raises ValueError as :func:`load_history`."""
    if isinstance(history_csv_paths, (str, os.PathLike)):
        history_csv_paths = [history_csv_paths]
    paths = [Path(p) for p in history_csv_paths]
    if not paths:
        raise ValueError("no history.csv paths given")
    if labels is not None and len(labels) != len(paths):
        raise ValueError(f"labels has {len(labels)} entries for {len(paths)} histories")
    hists = [load_history(p) for p in paths]
    names = list(labels) if labels else [p.parent.name or str(p) for p in paths]
    fig = _figure(11.0, 4.2)
    ax_l, ax_m = fig.subplots(1, 2)
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    styles = ["-", "--", ":", "-."]
    for k, (h, name) in enumerate(zip(hists, names)):
        color = cmap(k % 10)
        ax_l.plot(h["epoch"], h["train_loss"], color=color, ls="-", label=f"{name} train")
        ax_l.plot(h["epoch"], h["val_loss"], color=color, ls="--", label=f"{name} val")
        cols = [f"val_{m}" for m in metrics] if metrics else [
            c for c in h if c.startswith("val_") and c != "val_loss"]
        for q, c in enumerate(cols):
            if c not in h:
                raise ValueError(f"{paths[k]}: no column {c!r}; has {sorted(h)}")
            ax_m.plot(h["epoch"], h[c], color=color, ls=styles[q % len(styles)], label=f"{name} {c[4:]}")
    from matplotlib.ticker import MaxNLocator

    for ax in (ax_l, ax_m):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_l.set_xlabel("epoch")
    ax_l.set_ylabel("loss")
    ax_l.set_title("train (solid) / val (dashed) loss", fontsize=10)
    ax_m.set_xlabel("epoch")
    ax_m.set_ylabel("validation metric")
    ax_m.set_title("validation metrics", fontsize=10)
    if len(hists) <= 4:
        ax_l.legend(fontsize=7)
        if ax_m.lines:
            ax_m.legend(fontsize=7)
    else:  # many runs: one legend entry per run (its colour), outside the axes
        from matplotlib.lines import Line2D

        handles = [Line2D([], [], color=cmap(k % 10), label=n) for k, n in enumerate(names)]
        ax_m.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    return _save(fig, path)
