"""Grids of runs: fit many heads at once, evaluate each under one or more decision rules.

A *cell* is a set of runs fitted together as stacked heads (one :func:`mlhead.train.fit` call). A
local sweep is a single cell; ``mlhead.distributed`` spreads cells over a Ray cluster. Either way
every run gets its own run directory and evaluation files, so ``mlhead report`` reads them alike.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, Sequence

from .rules import DecisionRule
from .runs import evaluate_run, write_evaluation
from .train import FitConfig, RunSpec, fit


def run_cell(cache, specs: Sequence[RunSpec], cfg: FitConfig, runs_dir,
             rules: Sequence[DecisionRule] = (DecisionRule(),),
             split: str = "test", progress: Callable[[int, int], None] | None = None) -> list[dict]:
    """Fit ``specs`` as one stacked cell, then evaluate every run under every rule.

    ``rules``: :class:`~mlhead.rules.DecisionRule` objects; a ``--tune-thresholds`` recipe
    (``tuned_on="val"``) is tuned per run. A diverged run whose head gives non-finite logits gets
    NaN metrics (its record says ``stop_reason: diverged``; ``mlhead report`` lists it apart). Returns
    one dict per (run, rule): {run_dir, spec, rule (its name), metrics, stop_reason}. Errors as in
    fit/evaluate_run.
    """
    out = []
    for rec in fit(cache, list(specs), cfg, runs_dir, progress=progress):
        for r in rules:
            doc = _evaluate(rec, split, r)
            out.append({"run_dir": str(rec.path), "spec": rec.config.loss, "rule": doc["rule"]["name"],
                        "metrics": doc["metrics"], "stop_reason": rec.config.stop_reason})
    return out


def _evaluate(rec, split: str, rule: DecisionRule) -> dict:
    """evaluate_run, or NaN metrics for a diverged run whose logits are not finite."""
    from .metrics import METRIC_DOCS

    try:
        return evaluate_run(rec.path, split, rule)
    except ValueError:
        if not rec.config.diverged:
            raise
        rule_doc = {**rule.to_dict(), "slug": rule.slug}
        metrics = {k: math.nan for k in METRIC_DOCS}
        write_evaluation(rec.path, split, rule_doc, metrics)
        return {"rule": rule_doc, "metrics": metrics}


def cells(specs: Sequence[RunSpec], max_runs_per_cell: int | None = None) -> list[list[RunSpec]]:
    """Split a grid into cells: runs sharing a seed stay together (they share one wide GEMM);
    ``max_runs_per_cell`` caps a cell's size (bounding memory and balancing a cluster)."""
    by_seed: dict[int, list[RunSpec]] = {}
    for s in specs:
        by_seed.setdefault(s.seed, []).append(s)
    out = []
    for group in by_seed.values():
        step = max_runs_per_cell or len(group)
        out += [group[i:i + step] for i in range(0, len(group), step)]
    return out


def sweep(cache, specs: Sequence[RunSpec], cfg: FitConfig, runs_dir,
          rules: Sequence[DecisionRule] = (DecisionRule(),),
          split: str = "test", progress: Callable[[int, int], None] | None = None) -> list[dict]:
    """Run a whole grid locally as a single stacked cell (fastest on one machine)."""
    return run_cell(cache, specs, cfg, Path(runs_dir), rules, split, progress)
