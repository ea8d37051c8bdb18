"""Aggregate evaluated runs into Table-2-shaped tables and plots (sigmoidF1 paper Table 2, Figure 3).

* :mod:`.aggregate`: :func:`collect` loads every evaluation found under run directories or roots;
  :func:`select` keeps one split, decision rule, dataset and backbone; :func:`table2` aggregates
  them: rows = losses (or any ``+``-joined config keys), columns = metrics, mean +- sample std
  (ddof=1) over seeds, best mean per column in bold, with a caption naming dataset, backbone, split
  and decision rule; :func:`heatmap_grid` and :func:`load_history` give the data behind two plots.
* :mod:`.render`: :class:`Table2` exports Markdown, LaTeX (booktabs), CSV and a rich table.
* :mod:`.plots` (each written as PNG and PDF; the paths are returned): :func:`plot_heatmap`
  (Figure 3: metric over a beta x eta grid), :func:`plot_per_class_f1`, :func:`plot_pr_curves`,
  :func:`plot_learning_curves`; for ``mlhead report``: :func:`plot_learning_curves_of` (runs of
  collected records) and :func:`plot_run_per_class` (a run's latest evaluation); :func:`write_table2`
  writes the Markdown/LaTeX/CSV files.
* :mod:`.html`: :func:`render_html` writes one self-contained HTML page of the tables and figures.
"""

from __future__ import annotations

from .aggregate import (
    LOSS_ORDER,
    TABLE2_METRICS,
    collect,
    config_value,
    heatmap_grid,
    load_history,
    select,
    table2,
)
from .html import per_class_data, render_html
from .plots import (plot_heatmap, plot_learning_curves, plot_learning_curves_of, plot_per_class_f1, plot_pr_curves,
                    plot_run_per_class)
from .render import DISPLAY_NAMES, Table2, write_table2

__all__ = ["DISPLAY_NAMES", "LOSS_ORDER", "TABLE2_METRICS", "Table2", "collect", "config_value", "heatmap_grid",
           "load_history", "per_class_data", "plot_heatmap", "plot_learning_curves", "plot_learning_curves_of",
           "plot_per_class_f1", "plot_pr_curves", "plot_run_per_class", "render_html", "select", "table2",
           "write_table2"]
