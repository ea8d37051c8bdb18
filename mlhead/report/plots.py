"""Plots of evaluated runs, each written as PNG and PDF (the paths are returned): Figure 3's
beta x eta heatmap, per-class F1 bars, precision-recall curves and learning curves.

Matplotlib is used through its object API with the Agg canvas (no pyplot state, no display needed);
files are written atomically.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError
from ..fileio import atomic_write_bytes, storage_errors
from ..rules import as_logits as _as_logits, as_targets as _as_targets
from .aggregate import _fmt_value, heatmap_grid, load_history
from .render import DISPLAY_NAMES

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
    with storage_errors(base.parent):
        base.parent.mkdir(parents=True, exist_ok=True)
    out = [base.with_name(base.name + ".png"), base.with_name(base.name + ".pdf")]
    for path, kw in zip(out, ({"dpi": 150}, {})):
        buf = io.BytesIO()
        fig.savefig(buf, format=path.suffix[1:], **kw)
        atomic_write_bytes(path, buf.getvalue())
    return out


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
                raise ConfigError(f"{paths[k]}: no column {c!r}; has {sorted(h)}")
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


def plot_learning_curves_of(records: list[dict], path: str | os.PathLike) -> list[Path]:
    """Learning curves (val micro-F1) of every run in ``records`` (from :func:`~.aggregate.collect`) that
    has a ``history.csv``, each labelled ``<loss> <options> s<seed>``; PNG and PDF at ``path``. Raises
    ValueError when no run has a history."""
    from .html import _run_label

    runs = {Path(r["run_dir"]): r["config"] for r in records if (Path(r["run_dir"]) / "history.csv").exists()}
    return plot_learning_curves([d / "history.csv" for d in runs], path, metrics=["micro_f1"],
                                labels=[_run_label(c) for c in runs.values()])


def plot_run_per_class(run_dir: str | os.PathLike, out_dir: str | os.PathLike) -> list[Path]:
    """Per-class F1 bars and PR curves of a run's latest evaluation (see :func:`~.html.per_class_data`),
    as ``per_class_f1`` and ``pr_curves`` PNG/PDF in ``out_dir``. Raises RunError when the run has no
    evaluation yet, and the errors of :func:`mlhead.runs.predict`."""
    from .html import per_class_data

    rows, probs, targets, classes = per_class_data(run_dir)
    out = Path(out_dir)
    return plot_per_class_f1(rows, out / "per_class_f1") + plot_pr_curves(probs, targets, classes, out / "pr_curves")
