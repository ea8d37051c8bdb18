"""Markdown tables of the issue-17 weight decay x early stopping sweeps (docs/results.md section 10).

Reads ``<root>/<dataset>-full`` (100 epochs) and ``<root>/<dataset>-p10`` (``--patience 10``) sweep run
folders: per (loss, weight decay, protocol) the test weighted/micro/macro F1 under softmax>=0.05 (mean ±
std over seeds, from ``eval/test__softmax-ge-0.05.json``), each seed's best and stop epoch, the fit's
``train_seconds`` and in how many runs both protocols select the same epoch.

Run:  python tools/controls_table.py ROOT [--datasets movieposters,reuters]
"""

from __future__ import annotations

import argparse
import json
import statistics as st
from pathlib import Path

RULE_FILE = "test__softmax-ge-0.05.json"


def collect(root: Path, ds: str) -> tuple[dict, dict]:
    """(rows by (loss, weight decay, mode), fit seconds by mode) of one dataset's two sweeps."""
    rows, secs = {}, {}
    for mode in ("full", "p10"):
        for cfg_path in sorted((root / f"{ds}-{mode}").glob("*/config.json")):
            c = json.loads(cfg_path.read_text())
            met = json.loads((cfg_path.parent / "eval" / RULE_FILE).read_text())["metrics"]
            rows.setdefault((c["loss"], c["weight_decay"], mode), []).append(
                (c["seed"], met, c["best_epoch"], c["stopped_epoch"]))
            secs[mode] = c["train_seconds"]
    return rows, secs


def table(rows: dict, secs: dict) -> list[str]:
    out = ["| loss | weight decay | protocol | test weighted F1 | micro F1 | macro F1 | best epochs (seeds 0,1,2) "
           "| stopped at |", "|---|---:|---|---:|---:|---:|---|---|"]
    for key in sorted(rows):
        r = sorted(rows[key], key=lambda x: x[0])

        def f(k, r=r):
            vals = [x[1][k] for x in r]
            return f"{st.mean(vals):.2f} ± {st.stdev(vals) if len(vals) > 1 else 0:.2f}"
        out.append(f"| {key[0]} | {key[1]:g} | {'patience 10' if key[2] == 'p10' else '100 epochs'} | "
                   f"{f('weighted_f1')} | {f('micro_f1')} | {f('macro_f1')} | {', '.join(str(x[2]) for x in r)} | "
                   f"{', '.join(str(x[3]) for x in r)} |")
    pairs = [(a, b) for k in rows if k[2] == "full" and (k[0], k[1], "p10") in rows
             for a, b in zip(sorted(rows[k]), sorted(rows[(k[0], k[1], "p10")]))]
    same = sum(a[2] == b[2] for a, b in pairs)
    out.append(f"\nfit seconds (all runs of the sweep, stacked): 100 epochs {secs.get('full', 0):.0f} s, "
               f"patience 10 {secs.get('p10', 0):.0f} s; same best epoch in {same}/{len(pairs)} runs")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root", type=Path)
    ap.add_argument("--datasets", default="movieposters,reuters")
    args = ap.parse_args(argv)
    for ds in args.datasets.split(","):
        rows, secs = collect(args.root, ds)
        print(f"\n### {ds}\n")
        print("\n".join(table(rows, secs)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
