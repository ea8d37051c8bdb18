"""Stage-two speed, measured side by side in one run, as ratios against this machine's own limits.

Problems (paper sizes, head 1024 wide, batch 256, AdamW): MoviePosters 22,579 x 1280 x 28; arXiv
15,935 x 768 x 155; VOC 5,011 x 2048 x 20. Parts (``--parts``, all by default):

* ``baselines``: (a) seconds per epoch: mlhead (auto precision) vs a plain PyTorch DataLoader loop (fp32)
  vs scikit-learn's MLPClassifier; (b) achieved GFLOP/s vs a plain bf16/fp32 matmul; (d) cached head vs
  running the frozen MobileNetV2 every epoch; peak RSS of ``mlhead fit``.
* ``grid`` (issue 18 items 1-3): single-head epoch and a K=25 grid (the five Table-2 losses x five
  seeds) stacked in one fit vs the same 25 runs as 25 fits; the roofline lower bound of a single-head
  and a K-head epoch (:mod:`bench.roofline`: GEMM rate measured at the step's exact shapes + AdamW and
  cast bytes at the measured bandwidth) and mlhead's train time as a fraction of it (targets: >= 50%
  single, >= 60% K=25); stacked/sequential speedup (target >= 2x); validation as % of the K=25 epoch
  (target <= 10%; measured inside the same fit).
* ``losses`` (item 4): training step time of every registered loss at MoviePosters size, ratio to
  crossentropy (target <= 1.3x; the pairwise losses' cost stated).
* ``early`` (item 5): the 25-run Table-2 grid for 100 epochs vs with ``--patience 10``: time ratio
  (target >= 3x) and the selected epoch of every run (target: equal in >= 23 of 25). ``--early-cache``
  runs it on a real cache (e.g. the MoviePosters mobilenetv2_100.h5); default the synthetic problem.

Run:  python bench/bench_train.py [--quick] [--sizes movieposters,arxiv,voc] [--grid-k 25] [--parts ...]
      [--early-cache PATH] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mlhead.cache import write_cache  # noqa: E402
from bench import roofline  # noqa: E402
from mlhead.device import dtype_of, resolve_device, resolve_precision  # noqa: E402
from mlhead import train as T  # noqa: E402
from mlhead.reproduce import TABLE2_LOSSES  # noqa: E402
from mlhead.train import FitConfig, RunSpec, fit  # noqa: E402

SIZES = {"movieposters": (22579, 1280, 28), "arxiv": (15935, 768, 155), "voc": (5011, 2048, 20)}
HIDDEN, BATCH = 1024, 256


def make_problem(n, d, c, path: Path, seed=0) -> Path:
    """A synthetic cache of paper size (train n, val n//3, test 64) with a learnable signal."""
    rng = np.random.default_rng(seed)
    W = rng.normal(size=(d, c)).astype(np.float32) / np.sqrt(d)
    splits = {}
    for name, m in (("train", n), ("val", n // 3), ("test", 64)):
        X = rng.normal(size=(m, d)).astype(np.float32)
        Y = (X @ W > 1.0).astype(np.uint8)
        splits[name] = (X, Y, [f"{name}{i}" for i in range(m)])
    return write_cache(path, splits, [f"c{j}" for j in range(c)], attrs={"dataset": "bench", "backbone": "none"})


def epoch_flops(n, d, c, k=1) -> float:
    """Training flop per epoch: first layer 4*B*D*H per row (forward + weight grad; no input grad),
    second layer 6*H*C per row (forward, weight grad, input grad)."""
    return float(n) * k * (4 * d * HIDDEN + 6 * HIDDEN * c)


class _ValidationTimer:
    """Seconds spent in :func:`mlhead.train._validate` while active (bench instrumentation only)."""

    def __enter__(self):
        self.seconds, self._orig = 0.0, T._validate

        def timed(*a, **kw):
            t = time.perf_counter()
            try:
                return self._orig(*a, **kw)
            finally:
                self.seconds += time.perf_counter() - t

        T._validate = timed
        return self

    def __exit__(self, *exc):
        T._validate = self._orig


def grid_specs(k: int, losses=("sigmoidf1",)) -> list[RunSpec]:
    """K runs: the losses cycled, a new data-order seed after each round of them (K=25 with the five
    Table-2 losses = 5 losses x 5 seeds, i.e. 5 groups of 5 stacked heads)."""
    return [RunSpec(losses[i % len(losses)], (), i // len(losses), 1e-3) for i in range(k)]


def time_fit(cache: Path, specs: list[RunSpec], epochs: int, precision: str, val: bool = True) -> dict:
    """One warm-up epoch, then ``epochs`` timed: ``{"epoch_s", "train_s", "val_s"}`` per epoch (epoch =
    train + validation, as ``fit`` reports it; validation measured inside the same fit)."""
    fit(cache, specs, FitConfig(epochs=1, batch_size=BATCH, hidden=HIDDEN, precision=precision), write=False)
    cfg = FitConfig(epochs=epochs, batch_size=BATCH, hidden=HIDDEN, precision=precision,
                    val_every=1 if val else 10**9)
    with _ValidationTimer() as vt:
        total = fit(cache, specs, cfg, write=False)[0].config["train_seconds"]
    return {"epoch_s": total / epochs, "train_s": (total - vt.seconds) / epochs, "val_s": vt.seconds / epochs}


def time_mlhead(cache: Path, k: int, epochs: int, precision: str, val: bool, losses=("sigmoidf1",)) -> float:
    """Seconds per epoch of one fit of ``k`` stacked runs (see :func:`time_fit`)."""
    return time_fit(cache, grid_specs(k, losses), epochs, precision, val)["epoch_s"]


def time_sequential(cache: Path, k: int, epochs: int, precision: str, losses) -> float:
    """Seconds per epoch of the same ``k`` runs as ``k`` separate fits (each validated every epoch)."""
    total = 0.0
    for spec in grid_specs(k, losses):
        cfg = FitConfig(epochs=epochs, batch_size=BATCH, hidden=HIDDEN, precision=precision)
        total += fit(cache, [spec], cfg, write=False)[0].config["train_seconds"] / epochs
    return total


def time_plain_torch(X, Y, epochs=1) -> float:
    """What a user writes: TensorDataset + DataLoader(shuffle) + nn.Sequential + Adam + BCE, fp32."""
    from torch.utils.data import DataLoader, TensorDataset

    ds = TensorDataset(torch.from_numpy(X), torch.from_numpy(Y).float())
    dl = DataLoader(ds, batch_size=BATCH, shuffle=True)
    model = torch.nn.Sequential(torch.nn.Linear(X.shape[1], HIDDEN), torch.nn.ReLU(), torch.nn.Linear(HIDDEN, Y.shape[1]))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    lossf = torch.nn.BCEWithLogitsLoss()
    t = time.perf_counter()
    for _ in range(epochs):
        for xb, yb in dl:
            opt.zero_grad()
            lossf(model(xb), yb).backward()
            opt.step()
    return (time.perf_counter() - t) / epochs


def time_sklearn_subprocess(cache: Path) -> float:
    """sklearn in a fresh process: OpenBLAS threads keep spinning after a call and would slow every
    torch measurement taken after it in the same process."""
    code = ("import sys; sys.path.insert(0, %r); from bench.bench_train import time_sklearn; "
            "from mlhead.cache import open_cache; X, Y, _ = open_cache(%r).load('train'); "
            "print(time_sklearn(X.numpy(), Y.numpy()))") % (str(Path(__file__).resolve().parents[1]), str(cache))
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return float(out.stdout.strip().splitlines()[-1])


def time_sklearn(X, Y) -> float:
    from sklearn.neural_network import MLPClassifier

    import warnings

    from sklearn.exceptions import ConvergenceWarning

    clf = MLPClassifier(hidden_layer_sizes=(HIDDEN,), solver="adam", batch_size=BATCH, learning_rate_init=1e-3,
                        max_iter=1, random_state=0)  # one epoch (fit includes a negligible init)
    t = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(X, Y)
    return time.perf_counter() - t


def matmul_rate(dtype, m=BATCH, k=1280, n=HIDDEN, reps=30) -> float:
    a, b = torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)
    for _ in range(5):
        a @ b
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * m * k * n * reps / (time.perf_counter() - t) / 1e9


def backbone_seconds_per_image(precision: str, batches=3) -> float | None:
    """Real MobileNetV2 (staged TF weights when present, else random init) forward per image."""
    from mlhead.encoders import create_encoder
    from mlhead.device import autocast

    w = Path(__file__).resolve().parents[2] / "shared" / "weights" / "mobilenetv2_100"
    bb = create_encoder("mobilenetv2_100", weights=w if w.exists() else None, random_init=not w.exists())
    dev = torch.device("cpu")
    x = torch.randn(64, 3, 224, 224)
    with autocast(dev, precision):
        bb.encode(x)
        t = time.perf_counter()
        for _ in range(batches):
            bb.encode(x)
    return (time.perf_counter() - t) / (batches * 64)


def peak_rss_fit(cache: Path, epochs: int) -> float:
    """Peak RSS (GiB) of `mlhead fit` on the cache in a fresh process."""
    with tempfile.TemporaryDirectory() as runs:
        cmd = [sys.executable, "-m", "mlhead", "fit", "--cache", str(cache), "--loss", "sigmoidf1",
               "--epochs", str(epochs), "--runs-dir", runs]
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        subprocess.run(cmd, check=True, capture_output=True)
        after = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(before, after) / 2**20


# ---------------------------------------------------------------------------- issue 18: roofline, grids


def roofline_bounds(n: int, d: int, c: int, k: int, precision: str, bw: float) -> dict:
    """Epoch lower bounds (s) of a single head and of K stacked heads on this machine
    (:func:`bench.roofline.step_bound`: GEMMs at their measured rate for the exact step shapes + AdamW
    and cast bytes at the measured bandwidth; flop scale with the rows, bytes are paid per step)."""
    dtype = roofline.DTYPES.get(precision, torch.float32)
    out = {}
    for key, kk in (("single", 1), ("grid", k)):
        b = roofline.step_bound(BATCH, d, HIDDEN, c, kk, dtype, bw=bw)
        out[f"bound_{key}_s_per_epoch"] = b["gemm_s"] * n / BATCH + b["bytes_s"] * math.ceil(n / BATCH)
        out[f"bound_{key}_gemm_share"] = b["gemm_s"] / b["bound_s"]
    return out


def grid_measurements(cache: Path, k: int, epochs: int, prec: str, losses) -> dict:
    """Issue 18 items 1-3 for one problem: single head and K stacked (train and validation split out),
    K sequential fits, and the speedup, validation share and roofline fractions derived from them."""
    single, stacked = time_fit(cache, grid_specs(1), epochs, prec), time_fit(cache, grid_specs(k, losses), epochs, prec)
    r = {"grid_k": k, "single_epoch_s": single["epoch_s"], "single_train_s": single["train_s"],
         "stacked_epoch_s": stacked["epoch_s"], "stacked_train_s": stacked["train_s"],
         "stacked_val_s": stacked["val_s"], "sequential_epoch_s": time_sequential(cache, k, epochs, prec, losses)}
    r["stacked_speedup"] = r["sequential_epoch_s"] / r["stacked_epoch_s"]
    r["val_pct_of_epoch"] = 100 * r["stacked_val_s"] / r["stacked_epoch_s"]
    return r


def _fractions(r: dict) -> None:
    """Fractions of the roofline bound (train-only epochs; 1.0 = at the machine's limit)."""
    r["single_fraction_of_bound"] = r["bound_single_s_per_epoch"] / r["single_train_s"]
    r["grid_fraction_of_bound"] = r["bound_grid_s_per_epoch"] / r["stacked_train_s"]
    # the most stacking could gain on this machine: the K sequential fits against a stacked epoch that
    # trains exactly at its roofline bound (plus its validation as measured)
    r["stacked_speedup_ceiling"] = r["sequential_epoch_s"] / (r["bound_grid_s_per_epoch"] + r["stacked_val_s"])


def _loss_step_fn(name: str, x, y, d: int, c: int, dev, prec):
    """A zero-argument function doing one mlhead training step (forward under autocast, the loss on
    the stacked logits, backward, fused AdamW) of a single head trained with loss ``name``."""
    from mlhead.device import autocast

    g = T._make_groups([RunSpec(name)], d, HIDDEN, c, dev)[0]

    def step():
        g.opt.zero_grad(set_to_none=True)
        with autocast(dev, prec):
            logits = g.heads(x)
        T._group_loss(g, logits, y).sum().backward()
        g.opt.step()

    return step


#: What the pairwise losses cost beyond the head (C classes, batch B).
PAIRWISE_COST = {"ranking": "B*C*P hinge terms (P: most positives of an example)",
                 "warp": "B*C*P hinge terms + WARP rank on them (cached B*C^2 key order)",
                 "bpmll": "O(B*C): two masked logsumexp per example", "lsep": "O(B*C): two masked logsumexp"}


def loss_step_times(d: int, c: int, prec: str, steps: int, rounds: int = 3) -> dict:
    """Seconds per training step of a single head per registered loss (batch 256, D -> 1024 -> C),
    rounds interleaved over the losses (best round kept), and the ratio to crossentropy's step."""
    from mlhead.losses import LOSSES

    dev = torch.device("cpu")
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(BATCH, d, generator=gen).to(dtype_of(prec) if prec != "fp32" else torch.float32)
    y = (torch.rand(BATCH, c, generator=gen) < 0.1).float()
    fns = {name: _loss_step_fn(name, x, y, d, c, dev, prec) for name in LOSSES}
    best = {name: roofline._best_time(lambda f=f: [f() for _ in range(steps)], 1, warmup=1) for name, f in fns.items()}
    for _ in range(rounds - 1):
        for name, f in fns.items():
            best[name] = min(best[name], roofline._best_time(lambda f=f: [f() for _ in range(steps)], 1, warmup=0))
    ce = best["crossentropy"]
    return {name: {"step_s": t / steps, "ratio_to_crossentropy": t / ce} for name, t in best.items()}


def early_stop_grid(cache: Path, epochs: int, patience: int, prec: str, seeds: int = 5,
                    select: str = "val_loss") -> dict:
    """Issue 18 item 5: the Table-2 grid (five losses x ``seeds`` seeds) for ``epochs`` epochs vs the
    same grid with ``--patience``: time ratio and, per run, the selected (best) epoch of both, the best
    epoch chosen by ``select`` (``--select``) in both fits."""
    specs = T.expand_grid(TABLE2_LOSSES, list(range(seeds)))
    base = {"epochs": epochs, "batch_size": BATCH, "hidden": HIDDEN, "precision": prec, "select": select}
    full = fit(cache, specs, FitConfig(**base), write=False)
    early = fit(cache, specs, FitConfig(**base, patience=patience), write=False)
    runs = [{"run": s.label, "best_full": a.config["best_epoch"], "best_early": b.config["best_epoch"],
             "value_full": a.config["best_value"], "value_early": b.config["best_value"],
             "stopped_epoch": b.config["stopped_epoch"]} for s, a, b in zip(specs, full, early)]
    full_s, early_s = full[0].config["train_seconds"], early[0].config["train_seconds"]
    return {"cache": str(cache), "select": select, "epochs": epochs, "patience": patience, "full_s": full_s,
            "early_s": early_s,
            "speedup": full_s / early_s, "same_best_epoch": sum(r["best_full"] == r["best_early"] for r in runs),
            "n_runs": len(runs), "runs": runs}


# ---------------------------------------------------------------------------------------------- main


PARTS = ("baselines", "grid", "losses", "early")


def _args():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="movieposters,arxiv,voc")
    ap.add_argument("--epochs", type=int, default=3, help="epochs timed per measurement")
    ap.add_argument("--grid-k", type=int, default=25)
    ap.add_argument("--parts", default=",".join(PARTS), help=f"comma list of {', '.join(PARTS)}")
    ap.add_argument("--loss-steps", type=int, default=20, help="steps timed per loss and round")
    ap.add_argument("--early-cache", type=Path, default=None,
                    help="cache for the early-stopped grid (e.g. the real MoviePosters mobilenetv2_100.h5); "
                         "default: the synthetic MoviePosters-size problem")
    ap.add_argument("--early-epochs", type=int, default=100)
    ap.add_argument("--patience", type=int, default=10)
    ap.add_argument("--early-select", default="val_loss",
                    help="comma list of --select criteria; the early part runs once per criterion")
    ap.add_argument("--quick", action="store_true", help="smoke run: tiny sizes, 1 epoch, K=5")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = ap.parse_args()
    args.parts = set(args.parts.split(","))
    if args.parts - set(PARTS):
        ap.error(f"--parts: unknown {sorted(args.parts - set(PARTS))}; valid: {', '.join(PARTS)}")
    if args.quick:
        args.sizes, args.epochs, args.grid_k, args.loss_steps = "movieposters", 1, 5, 2
        args.early_epochs, args.patience = 6, 2
    return args


def _problem_results(name: str, cache: Path, args, prec: str, bw: float, per_image) -> dict:
    n, d, c = _sizes(args)[name]
    r = {}
    if "baselines" in args.parts:
        r.update(_baselines(cache, n, d, c, args, prec, per_image))
    if "grid" in args.parts:
        r.update(grid_measurements(cache, args.grid_k, args.epochs, prec, TABLE2_LOSSES))
        r.update(roofline_bounds(n, d, c, args.grid_k, prec, bw))
        _fractions(r)
    return r


def _baselines(cache: Path, n, d, c, args, prec, per_image) -> dict:
    """The earlier (a)-(d) measurements: mlhead vs plain torch and sklearn, GFLOP/s, backbone, RSS."""
    from mlhead.cache import open_cache

    X, Y, _ = open_cache(cache).load("train")
    r = {"matmul_bf16_gflops": matmul_rate(torch.bfloat16, k=d), "matmul_fp32_gflops": matmul_rate(torch.float32, k=d),
         "mlhead_s_per_epoch": time_mlhead(cache, 1, args.epochs, prec, val=False),
         "mlhead_with_val_s_per_epoch": time_mlhead(cache, 1, args.epochs, prec, val=True),
         "mlhead_fp32_s_per_epoch": time_mlhead(cache, 1, args.epochs, "fp32", val=False),
         "plain_torch_fp32_s_per_epoch": time_plain_torch(X.numpy(), Y.numpy()),
         "sklearn_s_per_epoch": time_sklearn_subprocess(cache)}
    r["mlhead_gflops"] = epoch_flops(n, d, c) / r["mlhead_s_per_epoch"] / 1e9
    r["backbone_every_epoch_s"] = per_image * n
    r["peak_rss_gib"] = peak_rss_fit(cache, 2)
    return r


QUICK_SIZES = {"movieposters": (2048, 256, 28)}


def _sizes(args) -> dict:
    return QUICK_SIZES if args.quick else SIZES


def main():
    args = _args()
    prec = resolve_precision("auto", resolve_device(None), training=True)
    results = {"cpu": _cpu_name(), "threads": torch.get_num_threads(), "precision": prec, "torch": torch.__version__,
               "bandwidth_gbs": None, "sizes": {}}
    print(f"{results['cpu']}; torch {torch.__version__}, {torch.get_num_threads()} threads, precision auto -> {prec}")
    bw = roofline.bandwidth()
    results["bandwidth_gbs"] = bw / 1e9
    per_image = backbone_seconds_per_image(prec) if "baselines" in args.parts else None
    with tempfile.TemporaryDirectory() as tmp:
        caches = {}
        for name in args.sizes.split(",") if args.parts & {"baselines", "grid"} else ():
            n, d, c = _sizes(args)[name]
            caches[name] = make_problem(n, d, c, Path(tmp) / f"{name}.h5")
            results["sizes"][name] = r = _problem_results(name, caches[name], args, prec, bw, per_image)
            _print(name, n, d, c, r)
        _print_grid_table(results["sizes"], args.grid_k)
        if "losses" in args.parts:
            n, d, c = _sizes(args)["movieposters"]
            results["loss_steps"] = loss_step_times(d, c, prec, args.loss_steps)
            _print_losses(results["loss_steps"], d, c)
        if "early" in args.parts:
            cache = args.early_cache or caches.get("movieposters") or make_problem(
                *_sizes(args)["movieposters"], Path(tmp) / "movieposters.h5")
            results["early_stop"] = []
            for select in args.early_select.split(","):
                results["early_stop"].append(early_stop_grid(cache, args.early_epochs, args.patience, prec,
                                                             select=select))
                _print_early(results["early_stop"][-1])
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


def _cpu_name() -> str:
    """CPU model and whether it has AMX (from /proc/cpuinfo; 'unknown' elsewhere)."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown CPU"
    model = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "?")
    return f"{model} ({'AMX' if 'amx_bf16' in info else 'no AMX'})"


def _print(name, n, d, c, r):
    print(f"\n== {name}: {n} x {d} -> {HIDDEN} -> {c}, batch {BATCH}")
    if "mlhead_s_per_epoch" not in r:
        return
    m = r["mlhead_s_per_epoch"]
    print(f"(a) s/epoch: mlhead {m:.3f} (with val {r['mlhead_with_val_s_per_epoch']:.3f}; fp32 "
          f"{r['mlhead_fp32_s_per_epoch']:.3f}) | plain torch fp32 {r['plain_torch_fp32_s_per_epoch']:.3f} "
          f"({r['plain_torch_fp32_s_per_epoch'] / m:.1f}x) | sklearn MLP {r['sklearn_s_per_epoch']:.3f} "
          f"({r['sklearn_s_per_epoch'] / m:.1f}x)")
    print(f"(b) GFLOP/s: mlhead {r['mlhead_gflops']:.0f} | bf16 matmul {r['matmul_bf16_gflops']:.0f} "
          f"({100 * r['mlhead_gflops'] / r['matmul_bf16_gflops']:.0f}% of it) | fp32 matmul {r['matmul_fp32_gflops']:.0f}")
    print(f"(d) per epoch: cached head {m:.3f} s | backbone every epoch {r['backbone_every_epoch_s']:.0f} s "
          f"({r['backbone_every_epoch_s'] / m:.0f}x)")
    print(f"    peak RSS of `mlhead fit`: {r['peak_rss_gib']:.2f} GiB")


def _mark(ok: bool) -> str:
    return "ok" if ok else "MISS"


def _print_grid_table(sizes: dict, k: int) -> None:
    rows = {name: r for name, r in sizes.items() if "stacked_epoch_s" in r}
    if not rows:
        return
    print(f"\n== issue 18, items 1-3 (s/epoch; train = epoch without validation; K={k} = Table-2 losses x seeds)")
    print(f"{'problem':<13}{'single':>8}{'bound':>8}{'of bound':>10}{'K stacked':>11}{'bound':>8}{'of bound':>10}"
          f"{'K sequential':>14}{'speedup':>9}{'ceiling':>9}{'val % epoch':>13}")
    for name, r in rows.items():
        print(f"{name:<13}{r['single_train_s']:>8.3f}{r['bound_single_s_per_epoch']:>8.3f}"
              f"{100 * r['single_fraction_of_bound']:>6.0f}% {_mark(r['single_fraction_of_bound'] >= 0.5):<4}"
              f"{r['stacked_train_s']:>10.2f}{r['bound_grid_s_per_epoch']:>8.2f}"
              f"{100 * r['grid_fraction_of_bound']:>6.0f}% {_mark(r['grid_fraction_of_bound'] >= 0.6):<4}"
              f"{r['sequential_epoch_s']:>13.2f}{r['stacked_speedup']:>6.2f}x {_mark(r['stacked_speedup'] >= 2):<4}"
              f"{r['stacked_speedup_ceiling']:>7.2f}x "
              f"{r['val_pct_of_epoch']:>6.1f}% {_mark(r['val_pct_of_epoch'] <= 10)}")
    print("targets: single >= 50% of bound, K stacked >= 60%, stacked >= 2x sequential (epoch incl. validation), "
          "validation <= 10% of the K-stacked epoch; ceiling = K sequential / (K stacked bound + its validation): "
          "the speedup stacking would reach at 100% of its bound")


def _print_losses(steps: dict, d: int, c: int) -> None:
    print(f"\n== issue 18, item 4: training step per loss, single head {BATCH} x {d} -> {HIDDEN} -> {c}")
    for name, v in steps.items():
        note = PAIRWISE_COST.get(name, "")
        print(f"{name:<26}{1e3 * v['step_s']:>8.2f} ms {v['ratio_to_crossentropy']:>6.2f}x "
              f"{_mark(v['ratio_to_crossentropy'] <= 1.3):<5}{note}")
    print("target: every loss <= 1.3x the crossentropy step")


def _print_early(e: dict) -> None:
    print(f"\n== issue 18, item 5: Table-2 grid ({e['n_runs']} runs, best epoch by {e['select']}) on {e['cache']}: "
          f"{e['epochs']} epochs "
          f"{e['full_s']:.1f} s vs --patience {e['patience']} {e['early_s']:.1f} s = {e['speedup']:.2f}x "
          f"{_mark(e['speedup'] >= 3)}; same selected epoch in {e['same_best_epoch']}/{e['n_runs']} runs "
          f"{_mark(e['same_best_epoch'] >= e['n_runs'] - 2)}")
    for r in e["runs"]:
        print(f"   {r['run']:<32} best {r['best_full']:>4} ({e['select']} {r['value_full']:.4f}) | with patience: "
              f"best {r['best_early']:>4} ({r['value_early']:.4f}), stopped {r['stopped_epoch']:>4}")


if __name__ == "__main__":
    main()
