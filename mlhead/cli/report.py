"""``mlhead report``: aggregate evaluated runs into Table-2 tables, files and plots."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ._ui import console
from .types import CommaList


@click.command()
@click.argument("runs", nargs=-1, type=click.Path(path_type=Path))
@click.option("--split", default="test", show_default=True)
@click.option("--rule", default=None, help="decision rule name, e.g. 'softmax>=0.05' [required if runs mix rules]")
@click.option("--group-by", default="loss", show_default=True, help="row key(s), e.g. loss or loss+beta+eta")
@click.option("--metrics", "metric_list", type=CommaList(str), default=None,
              help="columns [weighted_f1,micro_f1,macro_f1,macro_precision,map]; any eval metric, e.g. p@1,p@5,ndcg@5,psp@5")
@click.option("--dataset", default=None, help="keep only runs of this dataset")
@click.option("--backbone", default=None, help="keep only runs of this backbone")
@click.option("--out-dir", type=click.Path(path_type=Path), default=None,
              help="write table2.md, table2.tex, table2.csv (and plots) here")
@click.option("--heatmap", "heatmap_metric", default=None, help="Figure-3 beta x eta heatmap of this metric")
@click.option("--heatmap-loss", default="sigmoidf1", show_default=True)
@click.option("--learning-curves", is_flag=True, help="plot learning curves from history.csv")
@click.option("--per-class", "per_class_run", type=click.Path(path_type=Path), default=None,
              help="per-class F1 bars and PR curves of this run (its latest evaluation)")
@click.option("--html", "html_path", type=click.Path(path_type=Path), default=None,
              help="also write one self-contained HTML page (tables, figures, run links, provenance)")
def report(runs, split, rule, group_by, metric_list, dataset, backbone, out_dir, heatmap_metric, heatmap_loss,
           learning_curves, per_class_run, html_path):
    """Aggregate evaluated runs into a Table-2-shaped table (mean +- std over seeds, best in bold)."""
    from .. import report as R

    records = R.collect(list(runs) or [Path("runs")])
    kw = {"metrics": metric_list} if metric_list else {}
    table = R.table2(records, split=split, rule=rule, group_by=group_by, dataset=dataset, backbone=backbone, **kw)
    console.print(table.to_rich())
    written = R.write_table2(table, out_dir) if out_dir else []
    plots = out_dir or Path(".")
    if heatmap_metric:
        written += R.plot_heatmap(records, heatmap_metric, plots / f"heatmap_{heatmap_metric}", split=split,
                                  rule=rule or table.rule, loss=heatmap_loss, dataset=dataset, backbone=backbone)
    if learning_curves:
        written += R.plot_learning_curves_of(records, plots / "learning_curves")
    if per_class_run:
        written += R.plot_run_per_class(per_class_run, plots)
    if html_path:
        written.append(R.render_html(list(runs) or [Path("runs")], html_path, split=split, rule=rule,
                                     group_by=group_by, dataset=dataset, backbone=backbone,
                                     heatmap_metric=heatmap_metric or "weighted_f1", heatmap_loss=heatmap_loss,
                                     per_class_run=per_class_run, command=["mlhead", *sys.argv[1:]], **kw))
    for p in written:
        console.print(f"wrote {p}")


COMMANDS = [report]
