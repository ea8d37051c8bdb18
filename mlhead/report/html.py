"""One self-contained HTML report page of evaluated runs (``mlhead report RUNS... --html FILE``).

The page only renders what :mod:`.aggregate` (Table-2 tables) and :mod:`.plots` (figures) produce:
the tables with their captions (decision rule named), the beta x eta heatmap when the runs hold a
grid, per-class F1 bars and precision-recall curves of one run, learning curves, the run list with
relative links to the run directories and a provenance block (command line, machine, versions,
date). Nothing is fetched from the network: figures are base64 PNG data URIs and the CSS is inline.
Every string that comes from runs or the user is escaped with :func:`html.escape`.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import os
import platform
import shlex
import sys
import tempfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

from ..errors import MlheadError, RunError
from ..fileio import atomic_write_text, read_json, storage_errors
from .aggregate import TABLE2_METRICS, collect, table2
from .plots import plot_heatmap, plot_learning_curves, plot_per_class_f1, plot_pr_curves
from .render import Table2

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0 auto;max-width:1100px;
padding:0 12px 40px;color:#1b1b1b;line-height:1.45}
h1{font-size:1.5em}h2{font-size:1.2em;border-bottom:1px solid #ddd;padding-bottom:4px;margin-top:1.8em}
.scroll{overflow-x:auto;-webkit-overflow-scrolling:touch;max-width:100%}
table{border-collapse:collapse;font-size:.9em;margin:6px 0}
th,td{border-bottom:1px solid #e3e3e3;padding:4px 8px;text-align:right;white-space:nowrap}
th:first-child,td:first-child{text-align:left}
p.caption{font-size:.9em;color:#444;margin:12px 0 2px}table.runs td{text-align:left}
td.best{font-weight:700}.sd{color:#777}
img{max-width:100%;height:auto;display:block;margin:8px 0}
.note{color:#666;font-style:italic}code,pre{font-size:.85em;white-space:pre-wrap;word-break:break-all}
dl{display:grid;grid-template-columns:max-content 1fr;gap:2px 12px}dt{font-weight:600}dd{margin:0}
"""

_e = html.escape


# --------------------------------------------------------------------------------------------------
# public entry point


def render_html(
    runs: str | os.PathLike | Iterable[str | os.PathLike],
    path: str | os.PathLike,
    *,
    split: str = "test",
    rule: Any = None,
    group_by: str = "loss",
    metrics: Sequence[str] = TABLE2_METRICS,
    dataset: str | None = None,
    backbone: str | None = None,
    heatmap_metric: str = "weighted_f1",
    heatmap_loss: str | None = "sigmoidf1",
    per_class_run: str | os.PathLike | None = None,
    command: Sequence[str] | None = None,
    title: str = "mlhead report",
) -> Path:
    """Write one self-contained HTML report of the evaluated runs in or under ``runs``.

    Args:
        runs: run directories or roots (as :func:`.aggregate.collect`).
        path: the HTML file to write (atomically; parent folders are created).
        split, rule, group_by, metrics, dataset, backbone: as :func:`.aggregate.table2`. With
            ``rule=None`` and runs evaluated under several rules, one table per rule is rendered.
        heatmap_metric, heatmap_loss: the beta x eta heatmap (drawn only when the runs hold a grid).
        per_class_run: the run whose per-class F1 bars and PR curves are drawn (its latest
            evaluation, predicted from its cache); None picks the first run of the best row of the
            first table and leaves a note instead of the figures when its head or cache is missing.
        command: the command line shown in the provenance block (default ``sys.argv``).
        title: the page title.

    Returns:
        The path written.

    Raises:
        RunError: no run directory or evaluation found, or runs that cannot be aggregated (the
            message names the files and what to pass, e.g. ``--rule`` or ``--group-by``).
    """
    out = Path(path)
    try:
        records = collect(runs)
        tables = _tables(records, split, rule, group_by, metrics, dataset, backbone)
    except (ValueError, FileNotFoundError) as exc:
        if isinstance(exc, MlheadError):
            raise
        raise RunError(f"mlhead report --html: {exc}") from exc
    sel = {r for t in tables for rs in t.runs for r in rs}
    chosen = [r for r in records if r["run_dir"] in sel]
    with tempfile.TemporaryDirectory(prefix="mlhead-html-") as tmp:
        figs = _Figures(Path(tmp))
        sections = [
            _section("Results", "".join(_table_html(t) for t in tables)),
            _section("beta x eta heatmap", figs.heatmap(records, heatmap_metric, tables[0], heatmap_loss,
                                                        dataset, backbone)),
            _section("Per-class F1 and precision-recall curves",
                     figs.per_class(per_class_run, per_class_run or _best_run(tables[0]))),
            _section("Learning curves", figs.learning_curves(chosen)),
            _section("Runs", _run_list(chosen, out.parent)),
            _section("Provenance", _provenance(command)),
        ]
    page = _page(title, tables[0], "".join(sections))
    with storage_errors(out.parent):
        out.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_text(out, page)


# --------------------------------------------------------------------------------------------------
# tables


def _tables(records, split, rule, group_by, metrics, dataset, backbone) -> list[Table2]:
    """One Table 2 per decision rule (only the given one when ``rule`` is set)."""
    if not records:
        raise RunError("no evaluated runs found: run `mlhead eval` on them first")
    rules = [rule] if rule is not None else sorted(
        {r["rule_name"] for r in records if r["split"] == split}) or [None]
    return [table2(records, metrics=list(metrics), split=split, rule=r, group_by=group_by,
                   dataset=dataset, backbone=backbone) for r in rules]


def _table_html(t: Table2) -> str:
    """A Table2 as an HTML table with its caption; best means in bold, std in grey."""
    head = "".join(f"<th>{_e(h)}</th>" for h in [t._row_header(), "n"] + [t._header(m) for m in t.metrics])
    body = []
    for i, row in enumerate(t.rows):
        cells = [f"<td>{_e(row)}</td>", f"<td>{t.n[i]}</td>"]
        for j in range(len(t.metrics)):
            m, s = t._parts(i, j)
            sd = f' <span class="sd">± {_e(s)}</span>' if s else ""
            cls = ' class="best"' if t.best[i, j] else ""
            cells.append(f"<td{cls}>{_e(m)}{sd}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (f'<p class="caption">{_e(t.caption)}</p><div class="scroll"><table><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table></div>")


def _best_run(t: Table2) -> str | None:
    """The first run of the row with the best mean in the first column."""
    rows = [i for i in range(len(t.rows)) if t.best[i, 0]]
    return t.runs[rows[0]][0] if rows and t.runs and t.runs[rows[0]] else None


# --------------------------------------------------------------------------------------------------
# figures (drawn by .plots into a temporary folder, embedded as data URIs)


def _img(png: Path, alt: str) -> str:
    data = base64.b64encode(png.read_bytes()).decode("ascii")
    return f'<img alt="{_e(alt)}" src="data:image/png;base64,{data}">'


def _note(text: str) -> str:
    return f'<p class="note">{_e(text)}</p>'


class _Figures:
    """Draws each figure with :mod:`.plots` into ``tmp`` and returns its HTML."""

    def __init__(self, tmp: Path):
        self.tmp = tmp

    def _draw(self, name: str, alt: str, fn: Callable[[Path], list[Path]]) -> str:
        return _img(fn(self.tmp / name)[0], alt)

    def heatmap(self, records, metric, table: Table2, loss, dataset, backbone) -> str:
        """The beta x eta heatmap, or a note saying why there is none."""
        try:
            return self._draw("heatmap", f"beta x eta heatmap of {metric}", lambda p: plot_heatmap(
                records, metric, p, split=table.split, rule=table.rule, loss=loss, dataset=dataset,
                backbone=backbone))
        except ValueError as exc:
            return _note(f"no heatmap: {exc}")

    def per_class(self, explicit, run) -> str:
        """Per-class F1 bars and PR curves of ``run`` (errors raise only for an explicit run)."""
        if run is None:
            return _note("no run to draw per-class figures of")
        try:
            rows, probs, targets, classes = per_class_data(run)
        except (MlheadError, OSError, ValueError, KeyError) as exc:
            if explicit is not None:
                raise RunError(f"--per-class {run}: {exc}") from exc
            return _note(f"no per-class figures for {run}: {exc} (pass --per-class RUN)")
        return (f"<p>Run <code>{_e(Path(run).name)}</code>.</p>"
                + self._draw("per_class_f1", "per-class F1", lambda p: plot_per_class_f1(rows, p))
                + self._draw("pr_curves", "precision-recall curves",
                             lambda p: plot_pr_curves(probs, targets, classes, p)))

    def learning_curves(self, records) -> str:
        """Train/val loss and val micro-F1 per epoch of every run with a history.csv."""
        runs = {Path(r["run_dir"]): r["config"] for r in records if (Path(r["run_dir"]) / "history.csv").exists()}
        if not runs:
            return _note("no run has a history.csv")
        labels = [_run_label(c) for c in runs.values()]
        try:
            return self._draw("learning_curves", "learning curves", lambda p: plot_learning_curves(
                [d / "history.csv" for d in runs], p, labels=labels))
        except ValueError as exc:
            return _note(f"no learning curves: {exc}")


def per_class_data(run: str | os.PathLike):
    """Per-class rows (:func:`mlhead.metrics.per_class`), scores, targets and class names of a run's
    latest evaluation (its ``metrics.json``), predicted from the run's cache: the data behind
    :func:`.plots.plot_per_class_f1` and :func:`.plots.plot_pr_curves`. Raises RunError when the run has
    no evaluation yet."""
    run = Path(run)

    from ..metrics import DecisionRule, per_class, scores
    from ..runs import predict

    if not (run / "metrics.json").is_file():
        raise RunError(f"--per-class {run}: no evaluation yet (no metrics.json); run `mlhead eval --run {run}` first")
    doc = read_json(run / "metrics.json", RunError, f"; rerun `mlhead eval --run {run}`")
    logits, targets, _, cfg = predict(run, doc["split"])
    rows = per_class(logits, targets, DecisionRule.from_dict(doc["rule"]), cfg["classes"])
    return rows, scores(logits, doc["rule"]["activation"]), targets, cfg["classes"]


def _run_label(config: dict) -> str:
    opts = config.get("loss_options") or {}
    extra = " ".join(f"{k}={v}" for k, v in sorted(opts.items()))
    return " ".join(x for x in (str(config.get("loss")), extra, f"s{config.get('seed')}") if x)


# --------------------------------------------------------------------------------------------------
# run list, provenance, page


def _run_list(records, base: Path) -> str:
    """A table of the runs: a relative link to each run directory, loss, options, seed, rules."""
    runs: dict[str, dict] = {}
    for r in records:
        d = runs.setdefault(r["run_dir"], {"config": r["config"], "rules": set()})
        d["rules"].add(f"{r['split']}: {r['rule_name']}")
    rows = []
    for run_dir, d in sorted(runs.items()):
        c = d["config"]
        rel = os.path.relpath(run_dir, base.resolve())
        opts = ", ".join(f"{k}={v}" for k, v in sorted((c.get("loss_options") or {}).items()))
        rows.append(f'<tr><td><a href="{_e(quote(Path(rel).as_posix()) + "/")}">{_e(Path(run_dir).name)}</a></td>'
                    f"<td>{_e(str(c.get('loss')))}</td><td>{_e(opts)}</td><td>{_e(str(c.get('seed')))}</td>"
                    f"<td>{_e('; '.join(sorted(d['rules'])))}</td></tr>")
    head = "".join(f"<th>{h}</th>" for h in ("run", "loss", "options", "seed", "evaluations"))
    return (f'<div class="scroll"><table class="runs"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table></div>')


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _version(module: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(module)
    except PackageNotFoundError:
        return "not installed"


def provenance(command: Sequence[str] | None = None) -> dict[str, str]:
    """Command line, machine (CPU model, OS, Python), torch/mlhead/scikit-learn versions and date."""
    argv = list(command) if command is not None else [Path(sys.argv[0]).name, *sys.argv[1:]]
    return {
        "command": shlex.join(argv),
        "cpu": f"{_cpu_model()} ({os.cpu_count()} logical CPUs)",
        "platform": f"{platform.system()} {platform.release()}, Python {platform.python_version()}",
        "versions": ", ".join(f"{m} {_version(m)}" for m in ("mlhead", "torch", "scikit-learn")),
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
    }


def _provenance(command) -> str:
    items = "".join(f"<dt>{_e(k)}</dt><dd><code>{_e(v)}</code></dd>" for k, v in provenance(command).items())
    return f"<dl>{items}</dl>"


def _section(title: str, body: str) -> str:
    return f"<section><h2>{_e(title)}</h2>{body}</section>\n"


def _page(title: str, first: Table2, body: str) -> str:
    sub = f"{first.backbone} on {first.dataset}, {first.split} split"
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title><style>{_CSS}</style></head>\n<body>"
        f"<h1>{_e(title)}</h1><p>{_e(sub)}</p>\n{body}</body></html>\n"
    )


__all__ = ["per_class_data", "provenance", "render_html"]
