"""Peer side by side (issue #19.5): LibMultiLabel's linear methods and an mlhead head on the same features.

Methods, each trained on the same train rows and scored on the same test rows:

* ``lml-1vsrest`` -- ``libmultilabel.linear.train_1vsrest`` (one LIBLINEAR binary problem per label);
  decision rule: decision value > 0 (LibMultiLabel's own F1 rule).
* ``lml-tree`` -- ``libmultilabel.linear.train_tree`` (Bonsai-style label tree, K=100, dmax=10),
  predicted with beam width 10; scores are its probability estimates (0 for labels outside the beam);
  decision rule: probability > 0.5 (LibMultiLabel's own F1 code thresholds tree scores at 0, which
  predicts every label of the beam).
* ``mlhead`` -- ``mlhead.train.fit`` on a temporary cache written with ``mlhead.cache.write_cache``:
  a grid of ``--losses`` x ``--lrs`` (default BCE and ZLPR x 1e-3, 1e-2) stacked in one fit, each run's
  best epoch by val loss, and the run with the best val P@1 kept (val is the cache's val split, which
  LibMultiLabel does not use; the test split never chooses); decision rule: logit >= 0 (sigmoid >= 0.5
  for BCE, ZLPR's own threshold).

Metrics: P@1/3/5, nDCG@5 and PSP@5 from :mod:`mlhead.ranking` (top-k per row block, no dense N x C);
micro/macro F1 from scikit-learn on sparse 0/1 predictions, with mlhead.metrics' policy (macro over
the classes that have a positive in the test split, zero_division=0). Times: fit = training only;
predict = scoring the test split plus top-k and decisions; wall seconds, plus the process CPU seconds
of the fit (all threads: on a shared machine wall time includes waiting for a core). Scores are produced in row blocks so the
20,000-label problem never holds a dense N x C matrix.

Problems: MULAN bibtex (159 labels) and corel5k (374) from ``--data-dir`` via mlhead's ``mulan``
loader (the source's train/test files, val = a seeded 20 % of train), and a seeded synthetic problem
with 20,000 labels (power-law label frequencies, sparse bag-of-words features; see
:func:`make_synthetic`).

Run:  python bench/bench_libmultilabel.py [--problems bibtex,corel5k,synthetic] [--quick]
Writes bench/out/libmultilabel.json (git-ignored) and prints a rich table.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mlhead.cache import write_cache  # noqa: E402
from mlhead.datasets import get_loader  # noqa: E402
from mlhead.heads import MLPHead  # noqa: E402
from mlhead.ranking import label_counts, ranking_metrics, topk_indices  # noqa: E402
from mlhead.rules import DecisionRule  # noqa: E402
from mlhead.train import FitConfig, RunSpec, fit  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
KS = (1, 3, 5)
BLOCK = 512  # test rows scored at a time


@dataclass
class Problem:
    """Features (CSR float32) and labels (CSR, 0/1) per split; ``note`` says where they come from."""

    name: str
    X: dict
    Y: dict
    note: str

    @property
    def n_classes(self) -> int:
        return self.Y["train"].shape[1]


@dataclass
class Row:
    problem: str
    method: str
    rule: str
    scores: dict
    fit_s: float
    predict_s: float
    options: str
    fit_cpu_s: float = 0.0


# ------------------------------------------------------------------------------------- problems


def load_mulan(name: str, data_dir: Path, seed: int = 44) -> Problem:
    """A MULAN dataset through mlhead's ``mulan`` loader (train/test files, val = 20 % of train)."""
    data = get_loader("mulan").load(data_dir, split_seed=seed, name=name)
    X = {s: sp.csr_matrix(x, dtype=np.float32) for s, (x, _, _) in data.features.items()}
    Y = {s: sp.csr_matrix(y, dtype=np.float32) for s, (_, y, _) in data.features.items()}
    d = X["train"].shape[1]
    return Problem(name, X, Y, f"MULAN {name}: {d} features, {Y['train'].shape[1]} labels, "
                               f"train/val/test {X['train'].shape[0]}/{X['val'].shape[0]}/{X['test'].shape[0]}")


def _power_law_labels(rng, n: int, n_labels: int, exponent: float, mean_extra: float) -> sp.csr_matrix:
    """n rows; 1 + Poisson(mean_extra) distinct labels each, drawn with P(rank r) proportional to r^-exponent."""
    p = np.arange(1, n_labels + 1, dtype=np.float64) ** -exponent
    p /= p.sum()
    sizes = 1 + rng.poisson(mean_extra, n)
    rows = [np.unique(rng.choice(n_labels, size=m, p=p)) for m in sizes]
    indptr = np.concatenate([[0], np.cumsum([len(r) for r in rows])])
    return sp.csr_matrix((np.ones(indptr[-1], np.float32), np.concatenate(rows), indptr), shape=(n, n_labels))


def make_synthetic(n_labels=20_000, sizes=(8000, 2000, 2000), vocab=5000, words_per_label=5, keep=0.8,
                   noise_words=10, exponent=1.1, seed=0) -> Problem:
    """Seeded extreme-classification problem: power-law label frequencies, sparse binary bag of words.

    Label l owns ``words_per_label`` random words of a ``vocab``-word vocabulary. A row draws 1 +
    Poisson(2) labels by Zipf rank (P proportional to rank^-exponent), contains each word of each of its
    labels with probability ``keep`` plus ``noise_words`` uniform random words; features are the 0/1
    word indicators scaled to unit L2 norm per row.
    """
    rng = np.random.default_rng(seed)
    signature = rng.integers(0, vocab, size=(n_labels, words_per_label))
    X, Y = {}, {}
    for split, n in zip(("train", "val", "test"), sizes):
        y = _power_law_labels(rng, n, n_labels, exponent, 2.0)
        rows = []
        for i in range(n):
            words = signature[y.indices[y.indptr[i]:y.indptr[i + 1]]].ravel()
            words = words[rng.random(words.size) < keep]
            rows.append(np.unique(np.concatenate([words, rng.integers(0, vocab, noise_words)])))
        indptr = np.concatenate([[0], np.cumsum([len(r) for r in rows])])
        vals = np.repeat(1 / np.sqrt(np.diff(indptr)), np.diff(indptr)).astype(np.float32)
        X[split] = sp.csr_matrix((vals, np.concatenate(rows), indptr), shape=(n, vocab))
        Y[split] = y
    counts = np.asarray(Y["train"].sum(0)).ravel()
    return Problem("synthetic-20k", X, Y,
                   f"synthetic: {n_labels} labels (Zipf {exponent}; {int((counts > 0).sum())} seen in train, max "
                   f"{int(counts.max())}), {vocab} sparse features, train/val/test {'/'.join(map(str, sizes))}, "
                   f"seed {seed}")


# ------------------------------------------------------------------------------------- scoring


def score_blocks(blocks, problem: Problem, decide) -> dict:
    """Consume score blocks of the test split: top-5 per row and sparse 0/1 decisions, then metrics."""
    from sklearn.metrics import f1_score

    tops, preds = [], []
    for block in blocks:
        tops.append(topk_indices(block, max(KS)))
        preds.append(sp.csr_matrix(decide(block)))
    y = problem.Y["test"]
    m = ranking_metrics(np.concatenate(tops), y, KS, label_counts(problem.Y["train"]),
                        n_train=problem.Y["train"].shape[0])
    pred = sp.vstack(preds).tocsr().astype(np.int8)
    truth = y.astype(np.int8)
    present = np.flatnonzero(np.asarray(y.sum(0)).ravel() > 0)
    m["micro_f1"] = 100 * f1_score(truth, pred, average="micro", zero_division=0)
    m["macro_f1"] = 100 * f1_score(truth, pred, average="macro", labels=present, zero_division=0)
    m["predicted_per_row"] = pred.nnz / pred.shape[0]
    return m


def _row_blocks(X: sp.csr_matrix):
    for start in range(0, X.shape[0], BLOCK):
        yield X[start:start + BLOCK]


def run_lml(problem: Problem, technique: str, options: str) -> Row:
    """Train LibMultiLabel's ``1vsrest`` or ``tree`` on the train split; score the test split by blocks."""
    import libmultilabel.linear as linear

    x, y = problem.X["train"], problem.Y["train"].astype(np.float64).tocsr()
    t0, c0 = time.perf_counter(), time.process_time()
    with contextlib.redirect_stdout(io.StringIO()):  # train_tree prints its size estimate
        if technique == "1vsrest":
            model = linear.train_1vsrest(y, x, options=options, verbose=False)
        else:
            model = linear.train_tree(y, x, options=options, verbose=False)
    fit_s, fit_cpu = time.perf_counter() - t0, time.process_time() - c0
    t0 = time.perf_counter()
    threshold, rule = (0.0, "decision value > 0") if technique == "1vsrest" else (0.5, "tree probability > 0.5")
    blocks = (np.asarray(linear.predict_values(model, xb)) for xb in _row_blocks(problem.X["test"]))
    scores = score_blocks(blocks, problem, lambda s: s > threshold)
    return Row(problem.name, f"lml-{technique}", rule, scores, fit_s, time.perf_counter() - t0,
               f"options={options!r}" + (", K=100, dmax=10, beam_width=10" if technique == "tree" else ""), fit_cpu)


def _head_blocks(rec, problem: Problem, hidden: int, split: str):
    """Logit blocks of ``split`` from a fitted run's head (row blocks, no dense N x C)."""
    head = MLPHead(problem.X["train"].shape[1], hidden, problem.n_classes)
    head.load_state_dict(rec.state)
    with torch.inference_mode():
        for xb in _row_blocks(problem.X[split]):
            yield head(torch.from_numpy(xb.toarray()))


def _val_p1(rec, problem: Problem, hidden: int) -> float:
    """P@1 (%) of a fitted run on the val split: how the grid's run is chosen (never on test)."""
    top = np.concatenate([topk_indices(b, 1) for b in _head_blocks(rec, problem, hidden, "val")])
    return ranking_metrics(top, problem.Y["val"], (1,))["p@1"]


def run_mlhead(problem: Problem, hidden: int, epochs: int, grid: list[tuple[str, float]], workdir: Path,
               val_every: int = 5) -> Row:
    """Write a cache from the arrays, fit the (loss, lr) ``grid`` as stacked heads in one
    ``mlhead.train.fit`` (each run's best epoch by val loss), keep the run with the best val P@1 and score
    the test split with it. fit s covers the whole grid."""
    splits = {s: (problem.X[s].toarray(), problem.Y[s].toarray().astype(np.uint8),
                  [f"{s}{i}" for i in range(problem.X[s].shape[0])]) for s in ("train", "val", "test")}
    cache = write_cache(workdir / f"{problem.name}.h5", splits, [f"l{j}" for j in range(problem.n_classes)],
                        attrs={"dataset": problem.name, "backbone": "none"})
    del splits
    cfg = FitConfig(epochs=epochs, batch_size=256, hidden=hidden, select="val_loss", val_every=val_every,
                    val_rule=DecisionRule(activation="sigmoid", threshold=0.5))
    t0, c0 = time.perf_counter(), time.process_time()
    recs = fit(cache, [RunSpec(loss, (), 0, lr) for loss, lr in grid], cfg, write=False)
    fit_s, fit_cpu = time.perf_counter() - t0, time.process_time() - c0
    val_p1 = [_val_p1(rec, problem, hidden) for rec in recs]
    best = int(np.argmax(val_p1))
    t0 = time.perf_counter()
    scores = score_blocks(_head_blocks(recs[best], problem, hidden, "test"), problem, lambda z: (z >= 0).numpy())
    loss, lr = grid[best]
    tried = ", ".join(f"{lo} lr {r:g}: {p:.2f}" for (lo, r), p in zip(grid, val_p1))
    opts = (f"grid of {len(grid)} stacked runs, val P@1 {tried}; chosen loss={loss}, lr {lr:g}, hidden={hidden}, "
            f"epochs={epochs} (best {recs[best].config['best_epoch']} by val loss, checked every {val_every}), "
            f"batch 256, Adam, precision {recs[best].config['precision']}")
    method = f"mlhead ({loss}, lr {lr:g}, {hidden or 'linear'} wide, {epochs} ep.)"
    return Row(problem.name, method, "logit >= 0", scores, fit_s, time.perf_counter() - t0, opts, fit_cpu)


# ---------------------------------------------------------------------------------------- report


def cpu_info() -> dict:
    """CPU model (lscpu), whether it has AMX, core count and torch threads."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    except OSError:
        out = ""
    fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    flags = fields.get("Flags", "").split()
    return {"model": fields.get("Model name", platform.processor()).strip(), "amx": "amx_bf16" in flags,
            "cpus": fields.get("CPU(s)", "?").strip(), "torch_threads": torch.get_num_threads()}


COLUMNS = [("P@1", "p@1"), ("P@3", "p@3"), ("P@5", "p@5"), ("nDCG@5", "ndcg@5"), ("PSP@5", "psp@5"),
           ("micro F1", "micro_f1"), ("macro F1", "macro_f1")]


def print_table(rows: list[Row], cpu: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"LibMultiLabel vs mlhead (test split, %; {cpu['model']}, AMX {'yes' if cpu['amx'] else 'no'})")
    for name in ("problem", "method", "decision rule", *(c for c, _ in COLUMNS), "fit s", "fit CPU s", "predict s"):
        table.add_column(name, justify="left" if name in ("problem", "method", "decision rule") else "right")
    for r in rows:
        table.add_row(r.problem, r.method, r.rule, *(f"{r.scores[k]:.2f}" for _, k in COLUMNS),
                      f"{r.fit_s:.1f}", f"{r.fit_cpu_s:.1f}", f"{r.predict_s:.1f}")
    Console(width=max(Console().width, 200)).print(table)


def markdown_table(rows: list[Row]) -> str:
    head = ["problem", "method", "decision rule", *(c for c, _ in COLUMNS), "fit s", "fit CPU s", "predict s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * 3 + "---:|" * (len(head) - 3)]
    for r in rows:
        lines.append("| " + " | ".join([r.problem, r.method, r.rule, *(f"{r.scores[k]:.2f}" for _, k in COLUMNS),
                                        f"{r.fit_s:.1f}", f"{r.fit_cpu_s:.1f}", f"{r.predict_s:.1f}"]) + " |")
    return "\n".join(lines)


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--problems", default="bibtex,corel5k,synthetic")
    shared = Path(os.environ.get("MLHEAD_SHARED_DIR") or REPO.parent / "shared")
    ap.add_argument("--data-dir", type=Path, default=shared / "data" / "mulan",
                    help="MULAN folder (default: $MLHEAD_SHARED_DIR or ../shared, then data/mulan)")
    ap.add_argument("--methods", default="1vsrest,tree,mlhead")
    ap.add_argument("--liblinear-options", default="", help="LIBLINEAR options for both LibMultiLabel methods "
                    "(default '': LibMultiLabel's API default, which it turns into '-s 1', no bias)")
    ap.add_argument("--hidden", type=int, default=1024, help="mlhead head width on MULAN (0 = linear)")
    ap.add_argument("--synthetic-hidden", type=int, default=256, help="mlhead head width on the synthetic problem")
    ap.add_argument("--epochs", type=int, default=30, help="mlhead epochs on MULAN")
    ap.add_argument("--synthetic-epochs", type=int, default=20, help="mlhead epochs on the synthetic problem")
    ap.add_argument("--val-every", type=int, default=5, help="mlhead: epochs between val-loss checks")
    ap.add_argument("--losses", default="crossentropy,zlpr",
                    help="mlhead: losses of the grid (stacked in one fit; the run with the best val P@1 is kept)")
    ap.add_argument("--lrs", default="1e-3,1e-2", help="mlhead: learning rates of the grid")
    ap.add_argument("--synthetic-labels", type=int, default=20_000)
    ap.add_argument("--synthetic-sizes", default="8000,2000,2000", help="train,val,test rows")
    ap.add_argument("--quick", action="store_true", help="tiny synthetic problem only, 2 epochs (smoke test)")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "out" / "libmultilabel.json")
    return ap.parse_args(argv)


def build_problem(name: str, args) -> tuple[Problem, int, int]:
    """The problem, and mlhead's head width and epochs for it."""
    if name == "synthetic":
        sizes = tuple(int(s) for s in args.synthetic_sizes.split(","))
        return make_synthetic(args.synthetic_labels, sizes), args.synthetic_hidden, args.synthetic_epochs
    return load_mulan(name, args.data_dir), args.hidden, args.epochs


def main(argv=None) -> list[Row]:
    args = parse_args(argv)
    if args.quick:
        args.problems, args.synthetic_labels, args.synthetic_sizes = "synthetic", 300, "300,100,100"
        args.synthetic_epochs, args.val_every = 2, 1
    cpu, rows, notes = cpu_info(), [], []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.problems.split(","):
            problem, hidden, epochs = build_problem(name, args)
            notes.append(problem.note)
            for method in args.methods.split(","):
                if method == "mlhead":
                    grid = [(loss, float(lr)) for loss in args.losses.split(",") for lr in args.lrs.split(",")]
                    rows.append(run_mlhead(problem, hidden, epochs, grid, Path(tmp), args.val_every))
                else:
                    rows.append(run_lml(problem, method, args.liblinear_options))
                print(f"{problem.name} {rows[-1].method}: fit {rows[-1].fit_s:.1f} s "
                      f"(CPU {rows[-1].fit_cpu_s:.1f} s), P@1 {rows[-1].scores['p@1']:.2f}", file=sys.stderr)
                write_json(args.out, argv, cpu, notes, rows)  # after every row: a long run keeps what it did
    print_table(rows, cpu)
    print(f"wrote {args.out}", file=sys.stderr)
    return rows


def write_json(out: Path, argv, cpu: dict, notes: list[str], rows: list[Row]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    doc = {"command": "python bench/bench_libmultilabel.py " + " ".join(sys.argv[1:] if argv is None else argv),
           "cpu": cpu, "problems": notes, "rows": [asdict(r) for r in rows], "markdown": markdown_table(rows),
           "versions": _versions()}
    tmp = out.with_suffix(".partial")
    tmp.write_text(json.dumps(doc, indent=2, default=float))
    tmp.replace(out)


def _versions() -> dict:
    from importlib.metadata import version

    return {p: version(p) for p in ("libmultilabel", "liblinear-official", "torch", "scikit-learn", "numpy")
            if _has(p)}


def _has(package: str) -> bool:
    from importlib.metadata import PackageNotFoundError, version

    try:
        version(package)
        return True
    except PackageNotFoundError:
        return False


if __name__ == "__main__":
    main()
