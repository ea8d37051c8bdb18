"""The sigmoidF1 paper's Table-2 protocol and a ZLPR-paper style comparison, as one call each.

Table 2 (sigmoidF1 paper 4.2-4.3): losses crossentropy, focal, asl, unboundedf1, sigmoidf1; 5 seeds;
100 epochs (60 for VOC); batch 256; the dataset's threshold (0.05 MoviePosters/arXiv, 0.5 VOC);
sigmoidf1's beta/eta chosen by a grid on val (beta in [1, 30], eta in [0, 2]). Two protocols:

* ``paper-text``: what the paper's text says: softmax then threshold, ``map`` on the scores,
  seeded-permutation split, sigmoidF1 per Eq. 5-6;
* ``paper-code``: what the released code did: sigmoid then threshold, ``map_binarized`` (AP of 0/1
  predictions) for MoviePosters/arXiv, contiguous head/middle/tail split, ``presigmoid`` sigmoidF1.

The split is a property of the cache (``mlhead embed --split-mode``), so the caller passes the
cache made with the protocol's split; :data:`PROTOCOLS` names it.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from . import report as R
from .cache import open_cache
from .errors import CacheError, ConfigError
from .fileio import atomic_write_text, storage_errors
from .rules import DecisionRule
from .sweep import sweep
from .train import FitConfig, expand_grid

TABLE2_LOSSES = ("crossentropy", "focal", "asl", "unboundedf1", "sigmoidf1")
ZLPR_LOSSES = ("crossentropy", "focal", "dice1", "dice2", "zlpr")
ZLPR_METRICS = ("subset_accuracy", "example_f1", "micro_f1", "macro_f1", "lrap", "ranking_loss")
GRID_BETAS = (1.0, 10.0, 30.0)
GRID_ETAS = (0.0, 1.0, 2.0)


@dataclass(frozen=True)
class Protocol:
    """How the paper's numbers are computed: decision activation, map key, split, sigmoidF1 variant."""

    name: str
    activation: str
    map_key: str
    split_mode: str
    presigmoid: bool


PROTOCOLS = {
    "paper-text": Protocol("paper-text", "softmax", "map", "random", False),
    "paper-code": Protocol("paper-code", "sigmoid", "map_binarized", "paper-contiguous", True),
}

#: dataset -> (threshold, epochs) of the paper
PAPER_SETTINGS = {"movieposters": (0.05, 100), "arxiv2020": (0.05, 100), "voc2007": (0.5, 60)}

#: the paper's Table 2 (mean over 5 seeds): weightedF1, microF1, macroF1, Precision, mAP
PAPER_TABLE2 = {
    "voc2007": ("TResNet-M-21k, Pascal-VOC @0.5", {
        "crossentropy": (87.516, 85.847, 87.756, 90.750, 91.539), "focal": (72.540, 59.240, 76.823, 84.704, 76.186),
        "asl": (77.850, 76.525, 75.977, 65.362, 93.110), "unboundedf1": (77.236, 74.844, 75.312, 75.529, 79.359),
        "sigmoidf1": (88.198, 87.697, 87.869, 85.357, 92.362)}),
    "arxiv2020": ("DistilBERT, arXiv2020 @0.05", {
        "crossentropy": (20.593, 18.192, 18.418, 10.145, 10.500), "focal": (18.847, 16.592, 18.013, 10.103, 10.429),
        "asl": (19.146, 16.902, 18.164, 10.322, 10.531), "unboundedf1": (15.232, 13.743, 14.500, 10.274, 10.487),
        "sigmoidf1": (20.602, 18.204, 18.425, 10.147, 10.503)}),
    "movieposters": ("MobileNetV2, moviePosters @0.05", {
        "crossentropy": (13.785, 9.471, 12.939, 5.513, 5.777), "focal": (0.0, 0.0, 0.0, 0.0, 5.804),
        "asl": (0.0, 0.0, 0.0, 0.0, 5.804), "unboundedf1": (13.971, 9.841, 10.108, 5.586, 5.892),
        "sigmoidf1": (14.805, 10.328, 10.565, 5.577, 5.805)}),
}


def paper_table_markdown(dataset: str) -> str:
    """The paper's Table-2 block for ``dataset`` as Markdown ("" when the paper has none)."""
    if dataset not in PAPER_TABLE2:
        return ""
    title, rows = PAPER_TABLE2[dataset]
    head = "| loss | weighted_f1 | micro_f1 | macro_f1 | macro_precision | map |\n|---|---|---|---|---|---|\n"
    body = "".join(f"| {k} | " + " | ".join(f"{v:.2f}" for v in vals) + " |\n" for k, vals in rows.items())
    return f"Paper, Table 2 ({title}):\n\n{head}{body}"


def _best_cell(records: list[dict], metric: str) -> tuple[float, float]:
    best = max(records, key=lambda r: r["metrics"].get(metric, float("-inf")))
    opts = best["config"]["loss_options"]
    return float(opts["beta"]), float(opts["eta"])


def table2_protocol(cache, protocol: str = "paper-text", runs_dir="runs", seeds: int = 5,
                    epochs: int | None = None, threshold: float | None = None, betas: Sequence[float] = GRID_BETAS,
                    etas: Sequence[float] = GRID_ETAS, select_metric: str = "weighted_f1", precision: str = "auto",
                    progress: Callable[[str], None] | None = None) -> dict:
    """Run the Table-2 protocol on a cache; returns {table, grid_table, beta, eta, seconds, ...}.

    1. grid: sigmoidf1 over betas x etas (seed 0), evaluated on **val** under the protocol's rule;
       the best (beta, eta) by ``select_metric`` is kept;
    2. main: the five losses x ``seeds`` seeds (sigmoidf1 with the chosen beta/eta), evaluated on test.
    Raises ValueError for an unknown protocol.
    """
    if protocol not in PROTOCOLS:
        raise ConfigError(f"unknown protocol {protocol!r}; valid: {', '.join(PROTOCOLS)}")
    p = PROTOCOLS[protocol]
    c = open_cache(cache)
    dataset = c.attrs.get("dataset", "")
    if c.attrs.get("split_mode", p.split_mode) not in (p.split_mode, "official", "modapte", "column"):
        raise CacheError(f"{c.path}: split mode {c.attrs.get('split_mode')!r}, but protocol {protocol} needs "
                         f"`mlhead embed --split-mode {p.split_mode}`")
    t_default, e_default = PAPER_SETTINGS.get(dataset, (0.05, 100))
    threshold = t_default if threshold is None else threshold
    epochs = e_default if epochs is None else epochs
    rule = DecisionRule(p.activation, threshold)
    cfg = FitConfig(epochs=epochs, precision=precision)
    root = Path(runs_dir) / f"{dataset}-{protocol}"
    sig_opts = {"presigmoid": [True]} if p.presigmoid else {}
    t0 = time.perf_counter()
    if progress:
        progress(f"grid: sigmoidf1 beta {list(betas)} x eta {list(etas)} on val")
    grid = expand_grid(["sigmoidf1"], [0], options={"beta": list(betas), "eta": list(etas), **sig_opts})
    grid_res = sweep(c.path, grid, cfg, root / "grid", [rule], split="val")
    grid_records = R.collect(sorted({r["run_dir"] for r in grid_res}))
    beta, eta = _best_cell(grid_records, select_metric)
    t_grid = time.perf_counter() - t0
    if progress:
        progress(f"chosen beta={beta:g} eta={eta:g}; main: {len(TABLE2_LOSSES)} losses x {seeds} seeds")
    specs = [s for s in expand_grid(TABLE2_LOSSES, list(range(seeds)), options={"beta": [beta], "eta": [eta], **sig_opts})]
    main_res = sweep(c.path, specs, cfg, root / "main", [rule], split="test")
    records = R.collect(sorted({r["run_dir"] for r in main_res}))
    metrics = ("weighted_f1", "micro_f1", "macro_f1", "macro_precision", p.map_key)
    table = R.table2(records, metrics=metrics, split="test", title=f"Table 2 protocol '{protocol}'")
    grid_table = R.table2(grid_records, metrics=metrics, split="val", group_by="loss+beta+eta",
                          title=f"sigmoidF1 beta x eta grid on val ('{protocol}')")
    return {"dataset": dataset, "backbone": c.attrs.get("backbone", ""), "protocol": protocol, "rule": rule,
            "beta": beta, "eta": eta, "epochs": epochs, "threshold": threshold, "table": table,
            "grid_table": grid_table, "grid_records": grid_records, "records": records,
            "seconds": time.perf_counter() - t0, "grid_seconds": t_grid, "runs_dir": root}


def zlpr_comparison(cache, runs_dir="runs", seeds: int = 5, epochs: int = 100, precision: str = "auto",
                    hidden: int = 1024, standardize: bool = False) -> dict:
    """ZLPR-paper style comparison (BCE, focal, dice1, dice2, ZLPR) under sigmoid >= 0.5, which for
    ZLPR is its own rule logit >= 0; metrics SubACC, MLC-F1, micro/macro F1, AvgPrec (LRAP), RankLoss."""
    c = open_cache(cache)
    t0 = time.perf_counter()
    specs = expand_grid(ZLPR_LOSSES, list(range(seeds)))
    root = Path(runs_dir) / f"{c.path.parent.name}-zlpr"
    res = sweep(c.path, specs, FitConfig(epochs=epochs, precision=precision, hidden=hidden, standardize=standardize), root,
                [DecisionRule("sigmoid", 0.5)], split="test")
    records = R.collect(sorted({r["run_dir"] for r in res}))
    table = R.table2(records, metrics=ZLPR_METRICS, split="test", title="ZLPR-style comparison")
    return {"table": table, "records": records, "seconds": time.perf_counter() - t0, "runs_dir": root}


def _csv(values: Sequence[float]) -> str:
    return ",".join(f"{v:g}" for v in values)


def table2_command(cache, protocol: str, seeds: int, epochs: int | None, threshold: float | None,
                   betas: Sequence[float], etas: Sequence[float]) -> str:
    """The ``mlhead reproduce table2`` command line that reruns a protocol (as written into its report)."""
    return (f"mlhead reproduce table2 --cache {cache} --protocol {protocol} --seeds {seeds}"
            + (f" --epochs {epochs}" if epochs is not None else "")
            + (f" --threshold {threshold:g}" if threshold is not None else "")
            + f" --beta {_csv(betas)} --eta {_csv(etas)}")


def zlpr_command(cache, seeds: int, epochs: int, hidden: int = 1024, standardize: bool = False) -> str:
    """The ``mlhead reproduce zlpr`` command line that reruns a comparison (as written into its report)."""
    return (f"mlhead reproduce zlpr --cache {cache} --seeds {seeds} --epochs {epochs}"
            + (f" --hidden {hidden}" if hidden != 1024 else "") + (" --standardize" if standardize else ""))


def write_table2_report(res: dict, out_dir: str | os.PathLike, command: str) -> list[Path]:
    """Write the report of a :func:`table2_protocol` result ``res`` into ``out_dir``.

    Files: ``<dataset>-<protocol>.md`` (the command, settings, wall time, the measured table, the
    paper's table, the beta x eta grid and its heatmap), ``.csv`` (the table) and the heatmap
    ``-heatmap.png/.pdf``. Returns the paths written. Raises StorageError when a file cannot be written.
    """
    out = Path(out_dir)
    stem = f"{res['dataset']}-{res['protocol']}"
    files = R.plot_heatmap(res["grid_records"], "weighted_f1", out / f"{stem}-heatmap", split="val",
                           loss="sigmoidf1")
    table = res["table"]
    md = (f"### {res['dataset']} ({res['backbone']}), protocol `{res['protocol']}`\n\n"
          f"Command: `{command}`; {res['epochs']} epochs, rule `{table.rule}`, sigmoidF1 beta={res['beta']:g} "
          f"eta={res['eta']:g} (best val weighted_f1 of the grid); wall time {res['seconds'] / 60:.1f} min "
          f"(grid {res['grid_seconds'] / 60:.1f} min).\n\n{table.to_markdown()}\n\n"
          f"{paper_table_markdown(res['dataset'])}\n{res['grid_table'].to_markdown()}\n\n"
          f"![beta x eta heatmap]({files[0].name})\n")
    with storage_errors(out):
        out.mkdir(parents=True, exist_ok=True)
    files.append(atomic_write_text(out / f"{stem}.md", md))
    files.append(table.to_csv(out / f"{stem}.csv"))
    return files


def write_zlpr_report(res: dict, cache, out_dir: str | os.PathLike, command: str) -> list[Path]:
    """Write ``<cache folder>-zlpr.md`` (command, wall time, table) of a :func:`zlpr_comparison` result
    into ``out_dir``; returns the paths written. Raises StorageError when it cannot be written."""
    out = Path(out_dir)
    name = Path(cache).parent.name
    md = (f"### {name}: ZLPR-style comparison\n\nCommand: `{command}`; wall time {res['seconds'] / 60:.1f} min.\n\n"
          f"{res['table'].to_markdown()}\n")
    with storage_errors(out):
        out.mkdir(parents=True, exist_ok=True)
    return [atomic_write_text(out / f"{name}-zlpr.md", md)]
