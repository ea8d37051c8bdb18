"""Stage-two speed, measured side by side in one run (issue: a Table-2 grid in minutes on a 2-core CPU).

Prints, for each paper-size problem (MoviePosters 22,579 x 1280 x 28; arXiv 15,935 x 768 x 155;
VOC 5,011 x 2048 x 20; head 1024 wide, batch 256, Adam):

  (a) seconds per epoch: mlhead (auto precision) vs a plain PyTorch DataLoader loop over a
      TensorDataset (fp32, the usual user code) vs scikit-learn's MLPClassifier (same architecture,
      Adam, batch 256, one epoch via partial_fit);
  (b) achieved GFLOP/s of mlhead's epoch vs a plain bf16 and fp32 matmul of the same shapes (the
      machine's limit, measured in this process);
  (c) a K-run grid stacked in one fit vs the same K runs one after another (seconds per epoch);
  (d) cached head training per epoch vs running the frozen backbone every epoch as the paper's
      released code did (real MobileNetV2 forward on a few batches -> per-image cost x N);
  plus peak memory (RSS) of an mlhead fit in a fresh process.

Run:  python bench/bench_train.py [--quick] [--sizes movieposters,arxiv,voc] [--grid-k 25]
"""

from __future__ import annotations

import argparse
import json
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
from mlhead.device import resolve_device, resolve_precision  # noqa: E402
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


def time_mlhead(cache: Path, k: int, epochs: int, precision: str, val: bool, losses=("sigmoidf1",)) -> float:
    specs = [RunSpec(losses[i % len(losses)], (), i // len(losses), 1e-3) for i in range(k)]
    cfg = FitConfig(epochs=epochs, batch_size=BATCH, hidden=HIDDEN, precision=precision,
                    val_every=1 if val else 10**9)
    fit(cache, specs, FitConfig(epochs=1, batch_size=BATCH, hidden=HIDDEN, precision=precision), write=False)
    rec = fit(cache, specs, cfg, write=False)[0]
    return rec.config["train_seconds"] / epochs


def time_sequential(cache: Path, k: int, epochs: int, precision: str, losses) -> float:
    total = 0.0
    for i in range(k):
        spec = [RunSpec(losses[i % len(losses)], (), i // len(losses), 1e-3)]
        cfg = FitConfig(epochs=epochs, batch_size=BATCH, hidden=HIDDEN, precision=precision)
        total += fit(cache, spec, cfg, write=False)[0].config["train_seconds"] / epochs
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


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="movieposters,arxiv,voc")
    ap.add_argument("--epochs", type=int, default=3, help="epochs timed per measurement")
    ap.add_argument("--grid-k", type=int, default=25)
    ap.add_argument("--quick", action="store_true", help="1 epoch, K=5, MoviePosters only")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = ap.parse_args()
    if args.quick:
        args.sizes, args.epochs, args.grid_k = "movieposters", 1, 5
    prec = resolve_precision("auto", resolve_device(None))
    results = {"threads": torch.get_num_threads(), "precision": prec, "torch": torch.__version__, "sizes": {}}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, mlhead precision auto -> {prec}")
    losses = ("crossentropy", "focal", "asl", "unboundedf1", "sigmoidf1")
    per_image = backbone_seconds_per_image(prec)
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.sizes.split(","):
            n, d, c = SIZES[name]
            cache = make_problem(n, d, c, Path(tmp) / f"{name}.h5")
            from mlhead.cache import open_cache
            X, Y, _ = open_cache(cache).load("train")
            X, Y = X.numpy(), Y.numpy()
            r = {}
            r["matmul_bf16_gflops"] = matmul_rate(torch.bfloat16, k=d)
            r["matmul_fp32_gflops"] = matmul_rate(torch.float32, k=d)
            r["mlhead_s_per_epoch"] = time_mlhead(cache, 1, args.epochs, prec, val=False)
            r["mlhead_with_val_s_per_epoch"] = time_mlhead(cache, 1, args.epochs, prec, val=True)
            r["mlhead_fp32_s_per_epoch"] = time_mlhead(cache, 1, args.epochs, "fp32", val=False)
            r["plain_torch_fp32_s_per_epoch"] = time_plain_torch(X, Y)
            r["sklearn_s_per_epoch"] = time_sklearn_subprocess(cache)
            flops = epoch_flops(n, d, c)
            r["mlhead_gflops"] = flops / r["mlhead_s_per_epoch"] / 1e9
            r["grid_gflops_needed_5min"] = epoch_flops(n, d, c, args.grid_k) * 100 / 300 / 1e9
            k = args.grid_k
            r["grid_k"] = k
            r["stacked_s_per_epoch"] = time_mlhead(cache, k, args.epochs, prec, val=True, losses=losses)
            r["sequential_s_per_epoch"] = time_sequential(cache, min(k, 5), args.epochs, prec, losses) * k / min(k, 5)
            r["grid_100_epochs_minutes"] = r["stacked_s_per_epoch"] * 100 / 60
            r["backbone_every_epoch_s"] = per_image * n
            r["peak_rss_gib"] = peak_rss_fit(cache, 2)
            results["sizes"][name] = r
            _print(name, n, d, c, r)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


def _print(name, n, d, c, r):
    print(f"\n== {name}: {n} x {d} -> {HIDDEN} -> {c}, batch {BATCH}")
    m = r["mlhead_s_per_epoch"]
    print(f"(a) s/epoch: mlhead {m:.3f} (with val {r['mlhead_with_val_s_per_epoch']:.3f}; fp32 "
          f"{r['mlhead_fp32_s_per_epoch']:.3f}) | plain torch fp32 {r['plain_torch_fp32_s_per_epoch']:.3f} "
          f"({r['plain_torch_fp32_s_per_epoch'] / m:.1f}x) | sklearn MLP {r['sklearn_s_per_epoch']:.3f} "
          f"({r['sklearn_s_per_epoch'] / m:.1f}x)")
    print(f"(b) GFLOP/s: mlhead {r['mlhead_gflops']:.0f} | bf16 matmul {r['matmul_bf16_gflops']:.0f} "
          f"({100 * r['mlhead_gflops'] / r['matmul_bf16_gflops']:.0f}% of it) | fp32 matmul {r['matmul_fp32_gflops']:.0f}")
    print(f"(c) K={r['grid_k']} grid s/epoch: stacked {r['stacked_s_per_epoch']:.2f} | sequential "
          f"{r['sequential_s_per_epoch']:.2f} ({r['sequential_s_per_epoch'] / r['stacked_s_per_epoch']:.1f}x); "
          f"100 epochs stacked = {r['grid_100_epochs_minutes']:.1f} min (5 min would need "
          f"{r['grid_gflops_needed_5min']:.0f} GFLOP/s of training matmuls)")
    print(f"(d) per epoch: cached head {m:.3f} s | backbone every epoch {r['backbone_every_epoch_s']:.0f} s "
          f"({r['backbone_every_epoch_s'] / m:.0f}x)")
    print(f"    peak RSS of `mlhead fit`: {r['peak_rss_gib']:.2f} GiB")


if __name__ == "__main__":
    main()
