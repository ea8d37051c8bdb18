"""Scale bench (issue #19): streaming fit vs in-memory, sparse vs dense labels, in-memory overhead.

Every fit runs in a fresh subprocess (``python bench/bench_scale.py --child SPEC``) that reports its
own peak RSS (``resource.getrusage(RUSAGE_SELF).ru_maxrss``, the kernel's high-water mark), its RSS
after importing torch/mlhead and before reading data (the torch baseline), and the fit's wall seconds
(``RunConfig.train_seconds``: the epoch loop, validation included; 1 epoch by default, val kept small
so the epoch dominates). Caches are synthetic, written with mlhead's own streaming
:class:`~mlhead.cache.CacheWriter` (float16 embeddings, chunks of 1024 rows; labels dense or CSR).

(a) stream: a ``--stream-rows`` x ``--dim`` cache, 28 classes (default 4,000,000 x 768 = 5.7 GiB float16) fitted
    once in memory and once with ``--memory-budget`` (default 1G). Targets: epoch time ratio
    in-memory / streamed >= 0.8, streamed peak RSS <= 1.6 GiB.
(b) labels: ``--label-rows`` x ``--dim`` with ``--labels`` classes (default 100,000 x 768, 20,000
    classes, 5 positives a row) stored CSR vs dense: fit epoch time, eval time (``evaluate_run`` on a
    ``--test-rows`` test split, top-5 rule, ranking metrics included) and peak RSS of each.
(c) overhead: an in-memory fit of ``--overhead-rows`` x ``--dim`` (default 200,000 x 768, 28 classes):
    (peak RSS - peak RSS of the same fit on a 1,024-row cache) / data bytes (embeddings float16 + labels
    uint8), i.e. the memory the data costs beyond the fixed cost of torch, the libraries, the heads and
    the val split (the same 1,000-row val in both). Target <= 1.3.
    ``--baseline-src DIR`` also runs (c) with the mlhead source tree at DIR (e.g. a checkout of main) for
    a before/after ratio.
(d) eval: metrics of a ``--eval-rows`` x ``--eval-classes`` problem (default 400 x 5,000) by scikit-learn
    (as before issue #19) and by the many-class path (:mod:`mlhead.countmetrics`), same process. Then
    ``evaluate_run`` (top-5 rule, per-class rows and ranking metrics included) of one fitted run on a
    ``--eval-run-rows`` x ``--dim`` test split with ``--eval-run-classes`` classes (default 100,000 x 768,
    20,000 classes, 5 positives a row, CSR; the head fitted 1 epoch on 1,000 train rows) by the blocked
    path (:mod:`mlhead.blockeval`, row blocks of ``--eval-block-cells`` scores, default its 2**22) and by
    the dense in-memory path (``predict``: the whole N x C logits, as before), each in a fresh process:
    eval seconds, peak RSS, and the largest relative difference between their metrics. The dense path
    holds N x C float32 logits plus float64 copies (~45 GiB at the default size; ``--eval-paths blocked``
    skips it).

Run:  python bench/bench_scale.py [--parts a,b,c] [--json OUT] [--keep DIR]
Smoke test (seconds): python bench/bench_scale.py --stream-rows 20000 --label-rows 3000 --labels 2000
    --overhead-rows 20000 --test-rows 500 --memory-budget 8M --hidden 64 --eval-run-rows 2000
    --eval-run-classes 2000 --eval-block-cells 200000
The big cache of (a) needs ~2 x its size of free disk while written (journal + final file).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
GIB = float(1 << 30)


# ------------------------------------------------------------------------------------------ caches


def make_cache(path: Path, rows: int, dim: int, n_classes: int, layout: str, positives: int = 3,
               val_rows: int = 2000, test_rows: int = 0, seed: int = 0) -> Path:
    """A synthetic cache (train ``rows``, val, optional test) written chunk by chunk (bounded memory):
    float16 N(0, 1) embeddings, ``positives`` labels a row drawn from a few dims' signs (learnable)."""
    sys.path.insert(0, str(REPO))
    import scipy.sparse as sp

    from mlhead.cache import CacheLock, CacheWriter

    if path.is_file():
        return path
    rng = np.random.default_rng(seed)
    chunk = min(16384, max(1024, (64 << 20) // n_classes))  # the writer takes dense label chunks: <= 64 MiB
    proj = rng.normal(size=(dim, n_classes)).astype(np.float32)
    splits = {"train": rows, "val": val_rows, **({"test": test_rows} if test_rows else {})}
    with CacheLock(path):
        w = CacheWriter(path, [f"c{j}" for j in range(n_classes)], dim, splits, attrs={"dataset": "synthetic"},
                        fingerprint={"bench": "scale", "rows": rows, "dim": dim, "classes": n_classes, "seed": seed},
                        force=True, resume=False)
        for split, n in splits.items():
            for a in range(0, n, chunk):
                m = min(chunk, n - a)
                X = rng.standard_normal((m, dim), dtype=np.float32)
                top = np.argpartition(-(X[:, :64] @ proj[:64]), positives, axis=1)[:, :positives]
                Y = sp.csr_matrix((np.ones(top.size, np.uint8), top.ravel(), np.arange(0, top.size + 1, positives)),
                                  shape=(m, n_classes))
                w.append(split, X, Y.toarray(), [f"{split}{a + i}" for i in range(m)])
        return w.finish(layout)


# ------------------------------------------------------------------------------------------ child


def child(spec: dict) -> dict:
    """One fit (and optionally one eval) in this fresh process; returns its measurements."""
    import psutil
    import torch

    sys.path.insert(0, spec.get("src") or str(REPO))
    from mlhead.train import FitConfig, RunSpec, fit

    torch.set_num_threads(spec.get("threads") or torch.get_num_threads())
    base = psutil.Process().memory_info().rss
    budget = {"memory_budget": spec["budget"]} if "memory_budget" in FitConfig.__dataclass_fields__ else {}
    cfg = FitConfig(epochs=spec["epochs"], batch_size=spec["batch_size"], hidden=spec["hidden"], precision="fp32",
                    checkpoint_every=0, **budget)
    notes: list[str] = []
    kw = {"notify": notes.append} if "notify" in fit.__code__.co_varnames else {}
    t0 = time.perf_counter()
    write = bool(spec.get("eval") or spec.get("write"))
    rec = fit(spec["cache"], [RunSpec("crossentropy")], cfg, runs_dir=spec["runs"], write=write, **kw)[0]
    out = {"fit_s": time.perf_counter() - t0, "train_s": rec.config["train_seconds"], "notes": notes,
           "baseline_rss": base, **({"run": str(rec.path)} if write else {})}
    if spec.get("eval"):
        from mlhead.rules import DecisionRule
        from mlhead.runs import evaluate_run

        t0 = time.perf_counter()
        evaluate_run(rec.path, "test", DecisionRule("softmax", None, 5))
        out["eval_s"] = time.perf_counter() - t0
    out["peak_rss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return out


def eval_child(spec: dict) -> dict:
    """One ``evaluate_run`` of ``spec["run"]`` in this fresh process by the ``spec["path"]`` path ("blocked"
    or "dense"); returns eval seconds, peak and baseline RSS, and the metrics."""
    import psutil
    import torch

    sys.path.insert(0, str(REPO))
    from mlhead import blockeval, runs
    from mlhead.rules import DecisionRule

    torch.set_num_threads(spec.get("threads") or torch.get_num_threads())
    if spec.get("block_cells"):
        blockeval.BLOCK_CELLS = spec["block_cells"]
    if spec["path"] == "dense":  # the path every eval took before the blocks: predict() -> N x C logits
        runs._evaluate_blocked = runs._evaluate_in_memory
    base = psutil.Process().memory_info().rss
    t0 = time.perf_counter()
    doc = runs.evaluate_run(spec["run"], "test", DecisionRule("softmax", None, 5))
    return {"eval_s": time.perf_counter() - t0, "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            "baseline_rss": base, "metrics": doc["metrics"]}


def run_child(spec: dict) -> dict:
    """:func:`child` in a fresh interpreter (its peak RSS is its own)."""
    env = {**os.environ, "PYTHONPATH": spec.get("src") or str(REPO)}
    res = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True, text=True,
                         env=env, check=False)
    if res.returncode:
        raise SystemExit(f"child failed ({spec}):\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------------ parts


def _spec(args, cache: Path, work: Path, **kw) -> dict:
    return {"cache": str(cache), "runs": str(work / "runs"), "epochs": args.epochs, "batch_size": args.batch_size,
            "hidden": args.hidden, "threads": args.threads, **kw}


def part_stream(args, work: Path) -> dict:
    from mlhead.datasource import parse_size

    cache = make_cache(work / f"stream-{args.stream_rows}x{args.dim}.h5", args.stream_rows, args.dim, 28, "dense")
    mem = run_child(_spec(args, cache, work, budget=1 << 50))
    budget = parse_size(args.memory_budget)
    streamed = run_child(_spec(args, cache, work, budget=budget))
    return {"rows": args.stream_rows, "dim": args.dim, "cache_bytes": cache.stat().st_size, "budget": budget,
            "in_memory": mem, "streamed": streamed, "epoch_ratio": mem["train_s"] / streamed["train_s"],
            "streamed_peak_gib": streamed["peak_rss"] / GIB}


def part_labels(args, work: Path) -> dict:
    out = {"rows": args.label_rows, "classes": args.labels}
    for layout in ("csr", "dense"):
        cache = make_cache(work / f"labels-{layout}-{args.label_rows}x{args.labels}.h5", args.label_rows, args.dim,
                           args.labels, layout, positives=5, test_rows=args.test_rows)
        out[layout] = run_child(_spec(args, cache, work, eval=True, budget=1 << 50))
    out["epoch_ratio_dense_over_csr"] = out["dense"]["train_s"] / out["csr"]["train_s"]
    out["eval_ratio_dense_over_csr"] = out["dense"]["eval_s"] / out["csr"]["eval_s"]
    out["rss_ratio_dense_over_csr"] = out["dense"]["peak_rss"] / out["csr"]["peak_rss"]
    return out


def part_overhead(args, work: Path) -> dict:
    n_classes = 28
    cache = make_cache(work / f"overhead-{args.overhead_rows}x{args.dim}.h5", args.overhead_rows, args.dim,
                       n_classes, "dense", val_rows=1000)
    tiny = make_cache(work / f"overhead-tiny-{args.dim}.h5", 1024, args.dim, n_classes, "dense", val_rows=1000)
    data = args.overhead_rows * (args.dim * 2 + n_classes)
    out = {"rows": args.overhead_rows, "data_bytes": data}
    for name, src in (("this", None), ("baseline_src", args.baseline_src)):
        if name == "baseline_src" and not src:
            continue
        spec = _spec(args, cache, work, src=str(src) if src else None, budget=1 << 50)
        r = run_child(spec)
        r["fixed_peak_rss"] = run_child({**spec, "cache": str(tiny)})["peak_rss"]
        r["overhead_ratio"] = (r["peak_rss"] - r["fixed_peak_rss"]) / data
        out[name] = r
    return out


def part_eval(args, work: Path) -> dict:
    """``evaluate_rule`` + ``per_class`` on ``--eval-rows`` x ``--eval-classes`` (default 400 x 5,000), the
    many-class path (counts, column-block AP) against scikit-learn's path (``MANY_CLASSES`` raised: what
    eval did before), same data, same process, top-5 and sigmoid>=0.5 rules."""
    import mlhead.metrics as M
    from mlhead.rules import DecisionRule

    rng = np.random.default_rng(0)
    z = rng.normal(size=(args.eval_rows, args.eval_classes)).astype(np.float32)
    y = (rng.random(z.shape) < 5 / args.eval_classes).astype(np.uint8)
    out = {"rows": args.eval_rows, "classes": args.eval_classes}
    for name, limit in (("sklearn", 1 << 62), ("counts", M.MANY_CLASSES)):
        saved, M.MANY_CLASSES = M.MANY_CLASSES, limit
        t0 = time.perf_counter()
        for rule in (DecisionRule("softmax", None, 5), DecisionRule("sigmoid", 0.5)):
            M.evaluate_rule(z, y, rule)
            M.per_class(z, y, rule)
        out[f"{name}_s"] = (time.perf_counter() - t0) / 2
        M.MANY_CLASSES = saved
    out["speedup"] = out["sklearn_s"] / out["counts_s"]
    if args.eval_paths:
        out["run"] = part_eval_run(args, work)
    return out


def _max_rel_diff(a: dict, b: dict) -> float:
    """Largest |a - b| / max(|b|, 1e-300) over the metrics both have (NaN in both counts as equal)."""
    diffs = [abs(a[k] - b[k]) / max(abs(b[k]), 1e-300) for k in a.keys() & b.keys()
             if not (np.isnan(a[k]) and np.isnan(b[k]))]
    return float(max(diffs, default=0.0))


def part_eval_run(args, work: Path) -> dict:
    """``evaluate_run`` of one run by the blocked and the dense in-memory path (see (d) in the docstring)."""
    rows, classes = args.eval_run_rows, args.eval_run_classes
    cache = make_cache(work / f"evalrun-{rows}x{args.dim}x{classes}.h5", 1000, args.dim, classes, "csr",
                       positives=5, val_rows=200, test_rows=rows)
    fitted = run_child(_spec(args, cache, work, budget=1 << 50, write=True))
    out = {"rows": rows, "classes": classes, "dim": args.dim, "block_cells": args.eval_block_cells,
           "logits_bytes": rows * classes * 4}
    for path in args.eval_paths.split(","):
        out[path] = run_child({"run": fitted["run"], "path": path, "threads": args.threads,
                               "block_cells": args.eval_block_cells})
    if "blocked" in out and "dense" in out:
        out["time_ratio_dense_over_blocked"] = out["dense"]["eval_s"] / out["blocked"]["eval_s"]
        out["rss_ratio_dense_over_blocked"] = out["dense"]["peak_rss"] / out["blocked"]["peak_rss"]
        out["max_rel_diff"] = _max_rel_diff(out["blocked"]["metrics"], out["dense"]["metrics"])
    return out


def _eval_run_rows(e: dict) -> list[tuple[str, str, str]]:
    size = f"{e['rows']:,} x {e['classes']:,}"
    rows = [(f"(d) evaluate_run {size} [{p}] peak RSS (GiB)", f"{e[p]['peak_rss'] / GIB:.2f}",
             f"{e[p]['eval_s']:.1f} s; after imports {e[p]['baseline_rss'] / GIB:.2f} GiB; "
             f"N x C float32 {e['logits_bytes'] / GIB:.2f} GiB") for p in ("blocked", "dense") if p in e]
    if "time_ratio_dense_over_blocked" in e:
        rows += [(f"(d) evaluate_run {size} time dense / blocked", f"{e['time_ratio_dense_over_blocked']:.2f}",
                  f"{e['dense']['eval_s']:.1f} s / {e['blocked']['eval_s']:.1f} s"),
                 (f"(d) evaluate_run {size} peak RSS dense / blocked", f"{e['rss_ratio_dense_over_blocked']:.2f}",
                  f"metrics max rel diff {e['max_rel_diff']:.1e}")]
    return rows


def _table(results: dict) -> list[tuple[str, str, str]]:
    rows = []
    if "stream" in results:
        s = results["stream"]
        rows += [("(a) epoch time in-memory / streamed", f"{s['epoch_ratio']:.2f}", ">= 0.8"),
                 ("(a) streamed peak RSS (GiB)", f"{s['streamed_peak_gib']:.2f}",
                  f"<= 1.6 (budget {s['budget'] / GIB:.2f} GiB)"),
                 ("(a) in-memory peak RSS (GiB)", f"{s['in_memory']['peak_rss'] / GIB:.2f}",
                  f"cache {s['cache_bytes'] / GIB:.2f} GiB")]
    if "labels" in results:
        lab = results["labels"]
        rows += [("(b) fit epoch dense / CSR labels", f"{lab['epoch_ratio_dense_over_csr']:.2f}",
                  f"{lab['csr']['train_s']:.1f} s CSR"),
                 ("(b) eval dense / CSR labels", f"{lab['eval_ratio_dense_over_csr']:.2f}", f"{lab['csr']['eval_s']:.1f} s CSR"),
                 ("(b) peak RSS dense / CSR labels", f"{lab['rss_ratio_dense_over_csr']:.2f}",
                  f"{lab['csr']['peak_rss'] / GIB:.2f} GiB CSR")]
    if "eval" in results:
        e = results["eval"]
        rows.append((f"(d) eval {e['rows']} x {e['classes']}: sklearn / counts", f"{e['speedup']:.1f}",
                     f"{e['sklearn_s']:.2f} s -> {e['counts_s']:.2f} s per rule"))
        if "run" in e:
            rows += _eval_run_rows(e["run"])
    if "overhead" in results:
        o = results["overhead"]
        for name in ("this", "baseline_src"):
            if name in o:
                rows.append((f"(c) in-memory (peak - fixed) / data [{name}]", f"{o[name]['overhead_ratio']:.2f}",
                             f"<= 1.3; data {o['data_bytes'] / GIB:.2f} GiB, peak {o[name]['peak_rss'] / GIB:.2f}, "
                             f"fixed {o[name]['fixed_peak_rss'] / GIB:.2f}, torch {o[name]['baseline_rss'] / GIB:.2f} GiB"))
    return rows


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--parts", default="stream,labels,overhead,eval",
                    help="comma list of stream, labels, overhead, eval")
    ap.add_argument("--stream-rows", type=int, default=4_000_000)
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--memory-budget", default="1G")
    ap.add_argument("--label-rows", type=int, default=100_000)
    ap.add_argument("--labels", type=int, default=20_000)
    ap.add_argument("--test-rows", type=int, default=2000)
    ap.add_argument("--overhead-rows", type=int, default=200_000)
    ap.add_argument("--eval-rows", type=int, default=400)
    ap.add_argument("--eval-classes", type=int, default=5000)
    ap.add_argument("--eval-run-rows", type=int, default=100_000)
    ap.add_argument("--eval-run-classes", type=int, default=20_000)
    ap.add_argument("--eval-block-cells", type=int, default=None,
                    help="scores per row block of the blocked eval [mlhead.blockeval.BLOCK_CELLS]")
    ap.add_argument("--eval-paths", default="blocked,dense",
                    help="evaluate_run paths measured in (d): blocked, dense ('' skips the run-level eval)")
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--threads", type=int, default=None, help="torch threads in each fit [torch's default]")
    ap.add_argument("--baseline-src", type=Path, default=None, help="also run (c) with this mlhead source tree")
    ap.add_argument("--keep", type=Path, default=None, help="keep the caches in this folder (reused when present)")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = ap.parse_args(argv)
    if args.child:
        spec = json.loads(args.child)
        print(json.dumps((eval_child if "path" in spec else child)(spec)))
        return {}
    sys.path.insert(0, str(REPO))
    parts = {"stream": part_stream, "labels": part_labels, "overhead": part_overhead, "eval": part_eval}
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        from bench.bench_libmultilabel import cpu_info

        results = {"cpu": cpu_info(), "cores": os.cpu_count(), "load_avg": os.getloadavg()[0],
                   "args": {k: str(v) for k, v in vars(args).items()}}
        for name in args.parts.split(","):
            results[name] = parts[name](args, work)
    rows = _table(results)
    width = max(len(r[0]) for r in rows)
    print(f"bench_scale on {results['cpu']['model']} ({results['cores']} cores, load {results['load_avg']:.1f})")
    for name, value, note in rows:
        print(f"{name:<{width}}  {value:>6}  {note}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2, default=str))
    return results


if __name__ == "__main__":
    main()
