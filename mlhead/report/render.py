"""Render a :class:`Table2` aggregate: rich table, GitHub Markdown, LaTeX (booktabs) and CSV.

Every export carries the caption (dataset, backbone, split, decision rule, seeds) and marks the best
mean per column (max, or min for lower-is-better metrics).
"""

from __future__ import annotations

import csv
import io
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..fileio import atomic_write_text, storage_errors
from ..metrics import LOWER_IS_BETTER


#: Column headers (the papers' names where they have one).
DISPLAY_NAMES = {
    **{f"{m}@{k}": f"{name}@{k}" for m, name in (("p", "P"), ("r", "R"), ("ndcg", "nDCG"), ("psp", "PSP"))
       for k in (1, 3, 5)},
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
        with storage_errors(path.parent):
            path.parent.mkdir(parents=True, exist_ok=True)
        with io.StringIO(newline="") as fh:
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
            return atomic_write_text(path, fh.getvalue())

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


def write_table2(table: Table2, out_dir: str | os.PathLike) -> list[Path]:
    """Write ``table`` as ``table2.md``, ``table2.tex`` and ``table2.csv`` into ``out_dir`` (created).
    Returns the three paths. Raises StorageError (naming the file) when one cannot be written."""
    out = Path(out_dir)
    with storage_errors(out):
        out.mkdir(parents=True, exist_ok=True)
    return [atomic_write_text(out / "table2.md", table.to_markdown()),
            atomic_write_text(out / "table2.tex", table.to_latex()), table.to_csv(out / "table2.csv")]
