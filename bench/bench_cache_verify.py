"""What verifying a cache's checksums costs, at MoviePosters size (issue #16).

Writes a cache with :func:`mlhead.cache.write_cache` from seeded random data of the real MoviePosters
shape (22,579 rows x 1280 float16, 28 classes, density 0.1; 60/20/20 train/val/test), then times
``Cache.load(split, verify=False)`` against ``verify=True`` over all splits (the minimum of
``--repeat`` runs, page cache warm), and one full ``verify_cache`` (every invariant plus every
checksum, read in 4096-row chunks). Wall clock (``time.perf_counter``), one process.

Run:  python bench/bench_cache_verify.py [--rows 22579] [--dim 1280] [--classes 28] [--repeat 3]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from mlhead.cache import open_cache, verify_cache, write_cache


def build(path: Path, n: int, dim: int, n_classes: int) -> Path:
    """A cache of seeded random rows, split 60/20/20 (train/val/test)."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((n, dim)).astype(np.float32)
    Y = (rng.random((n, n_classes)) < 0.1).astype(np.uint8)
    ids = np.array([f"r{i}" for i in range(n)])
    parts = np.split(np.arange(n), [int(0.6 * n), int(0.8 * n)])
    splits = {s: (X[p], Y[p], ids[p].tolist()) for s, p in zip(("train", "val", "test"), parts)}
    return write_cache(path, splits, [f"c{i}" for i in range(n_classes)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=22579)
    ap.add_argument("--dim", type=int, default=1280)
    ap.add_argument("--classes", type=int, default=28)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        path = build(Path(d) / "c.h5", args.rows, args.dim, args.classes)
        c = open_cache(path)
        best = {}
        for verify in [False, True] * args.repeat:
            t = time.perf_counter()
            for s in c.splits:
                c.load(s, verify=verify)
            best[verify] = min(best.get(verify, float("inf")), time.perf_counter() - t)
        t = time.perf_counter()
        assert verify_cache(path) == []
        full = time.perf_counter() - t
        print(f"{args.rows} x {args.dim} float16 ({path.stat().st_size / 1e6:.1f} MB): load all splits "
              f"{best[False]:.3f} s unverified, {best[True]:.3f} s verified (+{best[True] - best[False]:.3f} s); "
              f"cache verify {full:.2f} s")


if __name__ == "__main__":
    main()
