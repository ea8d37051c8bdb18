"""Grids of runs: fit many heads at once, evaluate each under one or more decision rules.

A *cell* is a set of runs fitted together as stacked heads (one :func:`mlhead.train.fit` call). A
local sweep is a single cell; ``mlhead.distributed`` spreads cells over a Ray cluster. Either way
every run gets its own run directory and evaluation files, so ``mlhead report`` reads them alike.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, Sequence

from .errors import ConfigError
from .rules import DecisionRule
from .runs import evaluate_run, write_evaluation
from .train import FitConfig, RunSpec, expand_grid, fit


def run_cell(cache, specs: Sequence[RunSpec], cfg: FitConfig, runs_dir,
             rules: Sequence[DecisionRule] = (DecisionRule(),),
             split: str = "test", progress: Callable[[int, int], None] | None = None) -> list[dict]:
    """Fit ``specs`` as one stacked cell, then evaluate every run under every rule.

    ``rules``: :class:`~mlhead.rules.DecisionRule` objects; a ``--tune-thresholds`` recipe
    (``tuned_on="val"``) is tuned per run. A diverged run whose head gives non-finite logits gets
    NaN metrics (its record says ``stop_reason: diverged``; ``mlhead report`` lists it apart). Returns
    one dict per (run, rule): {run_dir, spec, rule (its name), metrics, stop_reason}. Killed at any
    point (training, writing runs, evaluating) and rerun, it resumes from the fit's checkpoint and ends
    with the same run directories and evaluations (see :func:`mlhead.train.fit`). Errors as in
    fit/evaluate_run.
    """
    out: list[dict] = []

    def evaluate_all(records) -> None:  # inside fit: killed here, a rerun evaluates again, without refitting
        for rec in records:
            for r in rules:
                doc = _evaluate(rec, split, r)
                out.append({"run_dir": str(rec.path), "spec": rec.config.loss, "rule": doc["rule"]["name"],
                            "metrics": doc["metrics"], "stop_reason": rec.config.stop_reason})

    fit(cache, list(specs), cfg, runs_dir, progress=progress, then=evaluate_all)
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


def build_grid(losses: Sequence[str], seeds: Sequence[int] = (0,), lrs: Sequence[float] = (1e-3,),
               beta: Sequence[float] | None = None, eta: Sequence[float] | None = None, presigmoid: bool = False,
               loss_options: dict[str, Sequence[str]] | None = None,
               weight_decays: Sequence[float] = (0.0,)) -> list[RunSpec]:
    """The run specs of ``mlhead fit`` / ``mlhead sweep``: every loss x option values x seed x lr x weight
    decay (``--weight-decay`` list).

    ``beta``/``eta`` (``--beta``/``--eta`` lists) and ``presigmoid`` go to the losses that accept them;
    ``loss_options`` (``-O KEY=V1,V2``) maps other option names to lists of values (strings are
    converted by each loss's option type). Raises :class:`~mlhead.errors.ConfigError` when ``-O``
    repeats ``--beta``/``--eta``/``--presigmoid``, and as :func:`mlhead.train.expand_grid` does (unknown
    loss, an option no listed loss accepts, an out-of-range value).
    """
    options: dict[str, list] = {}
    if beta:
        options["beta"] = list(beta)
    if eta:
        options["eta"] = list(eta)
    if presigmoid:
        options["presigmoid"] = [True]
    for key, values in (loss_options or {}).items():
        if key in options:
            raise ConfigError(f"-O {key}=... repeats --{key}; give the values once")
        options[key] = list(values)
    return expand_grid(list(losses), list(seeds), list(lrs), options, list(weight_decays))


def default_group_by(specs: Sequence[RunSpec]) -> str:
    """Report rows for a grid: ``loss`` plus every loss option, ``lr`` and ``weight_decay`` that takes
    more than one value in ``specs`` (e.g. ``loss+beta+eta`` for a beta x eta grid), joined with ``+``."""
    values: dict[str, set] = {}
    for s in specs:
        for k, v in (*s.loss_options, ("lr", s.lr), ("weight_decay", s.weight_decay)):
            values.setdefault(k, set()).add(v)
    return "+".join(["loss", *(k for k, v in values.items() if len(v) > 1)])


def result_tables(results: Sequence[dict], split: str = "test", group_by: str | None = None) -> list:
    """One Table-2 (:class:`mlhead.report.Table2`) per decision rule of sweep ``results`` (the dicts
    :func:`sweep` returns), rows grouped by ``group_by`` (default ``loss``). Errors as
    :func:`mlhead.report.collect` and :func:`mlhead.report.table2`."""
    from . import report as R

    records = R.collect(sorted({r["run_dir"] for r in results}))
    rules = dict.fromkeys(r["rule_name"] for r in records)
    return [R.table2(records, split=split, rule=rule, group_by=group_by or "loss") for rule in rules]
