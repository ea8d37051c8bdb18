"""Issue 18 item 4, the pairwise hinge losses: ``ranking`` and ``warp`` before and after their
hand-written backward (``mlhead.losses._PairHinge``), measured in one process.

The training step is bench_train's (``_loss_step_fn``: single head ``256 x D -> 1024 -> C`` under the
auto precision, the loss, backward, fused AdamW). The "old" variant swaps the loss classes' ``_loss``
for the formulas below (the code before the change: autograd through B x C x C where/relu
temporaries); "new" is the library. Rounds alternate old and new, best round kept per (variant, loss).
Printed side by side: step ms, ratio to the crossentropy step (same run), new/old, and the loss's own
forward+backward on the B x C logits.

Run:  python bench/bench_pairwise.py [--rounds 5] [--steps 10] [--classes 28] [--json OUT] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mlhead.losses import RankingLoss, WARPLoss  # noqa: E402

LOSSES = ("crossentropy", "ranking", "warp")


# ------------------------------------------------------------------------------- the code before


def old_pairs(z, y, margin=0.0):
    """Pairwise ``margin + z_j - z_i`` and the (positive i, negative j) mask, ``(..., B, C, C)``."""
    pos = y > 0.5
    diff = margin + z.unsqueeze(-2) - z.unsqueeze(-1)
    pair = pos.unsqueeze(-1) & (~pos).unsqueeze(-2)
    return diff, pair


def old_ranking(z, y, margin=1.0):
    """The ranking loss (ZLPR Eq. 22) as computed before: autograd through where/relu, ``z.shape[:-2]``."""
    diff, pair = old_pairs(z, y, margin)
    return torch.where(pair, F.relu(diff), 0).sum((-2, -1)).mean(-1)


def old_warp(z, y, keys, margin=1.0):
    """The WARP loss (ZLPR Eq. 23, sampled rank) as computed before, with the ``B x C x C`` keys."""
    diff, pair = old_pairs(z, y, margin)
    with torch.no_grad():
        neg = y <= 0.5
        violates = pair & (diff > 0)
        inf = torch.tensor(float("inf"), device=z.device)
        first = torch.where(violates, keys, inf).amin(-1)  # key of the first violator
        draws = ((keys <= first.unsqueeze(-1)) & neg.unsqueeze(-2)).sum(-1).clamp(min=1)
        n_neg = neg.sum(-1, keepdim=True)
        rank = torch.where(torch.isfinite(first), torch.div(n_neg, draws, rounding_mode="floor"), 0)
    hinge = torch.where(pair, F.relu(diff), 0)
    return (rank.to(z.dtype) * hinge.sum(-1)).sum(-1).mean(-1)


def _old_ranking_loss(self, z, y):
    return old_ranking(z, y, self.margin)


def old_keys(B, C, seed, device=None):
    """The warp sampling keys as drawn before, ``(B, C, C)`` (``[b, i, j]``: key of negative j for
    positive i), kept per shape and seed like the old code's cache."""
    key = (B, C, seed, str(device))
    if key not in _OLD_KEYS:
        gen = torch.Generator(device=device or "cpu").manual_seed(seed)
        _OLD_KEYS[key] = torch.rand((B, C, C), generator=gen, device=device, dtype=torch.float32)
    return _OLD_KEYS[key]


_OLD_KEYS: dict = {}


def _old_warp_loss(self, z, y):
    return old_warp(z, y, old_keys(*z.shape[-2:], self.seed, z.device), self.margin)


@contextmanager
def old_code():
    """Inside: ``ranking`` and ``warp`` compute with the formulas before the change."""
    saved = RankingLoss._loss, WARPLoss._loss
    RankingLoss._loss, WARPLoss._loss = _old_ranking_loss, _old_warp_loss
    try:
        yield
    finally:
        RankingLoss._loss, WARPLoss._loss = saved


# ------------------------------------------------------------------------------- measurement


def _loss_fn(name: str, z, y):
    """One forward+backward of loss ``name`` alone on ``z`` (B x C, requires grad)."""
    from mlhead.losses import build

    loss = build(name)

    def run():
        z.grad = None
        loss(z, y).backward()

    return run


def _per_step(fn, steps: int) -> tuple[float, float]:
    """(wall, process CPU) seconds per call of ``fn`` over ``steps`` calls after one warm-up call. On a
    loaded machine the CPU clock (time this single-threaded process ran) is the steadier of the two."""
    fn()
    w, c = time.perf_counter(), time.process_time()
    for _ in range(steps):
        fn()
    return (time.perf_counter() - w) / steps, (time.process_time() - c) / steps


KINDS = ("step_wall", "step_cpu", "loss_wall", "loss_cpu")


def measure(d: int, c: int, prec: str, steps: int, rounds: int) -> dict:
    """Best seconds per training step and per loss forward+backward (wall and CPU clock), old and new
    code, rounds alternating the order of the two variants."""
    from bench.bench_train import BATCH, _loss_step_fn
    from mlhead.device import dtype_of

    dev = torch.device("cpu")
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(BATCH, d, generator=gen).to(dtype_of(prec) if prec != "fp32" else torch.float32)
    y = (torch.rand(BATCH, c, generator=gen) < 0.1).float()
    z = torch.randn(BATCH, c, generator=gen).requires_grad_()
    fns = {name: (_loss_step_fn(name, x, y, d, c, dev, prec), _loss_fn(name, z, y)) for name in LOSSES}
    best = {v: {n: dict.fromkeys(KINDS, float("inf")) for n in LOSSES} for v in ("old", "new")}
    for r in range(rounds):
        for variant in ("old", "new") if r % 2 == 0 else ("new", "old"):
            with old_code() if variant == "old" else _nothing():
                for name, (step, lossf) in fns.items():
                    times = _per_step(step, steps) + _per_step(lossf, steps)
                    best[variant][name] = {k: min(best[variant][name][k], t) for k, t in zip(KINDS, times)}
    return _ratios(best)


@contextmanager
def _nothing():
    yield


def _ratios(best: dict) -> dict:
    """Per loss and clock: old and new seconds, ratio to the crossentropy step (the same code in both
    variants, so its best over both), and new/old."""
    out = {}
    for name in LOSSES:
        out[name] = r = {}
        for kind in KINDS:
            o, n = best["old"][name][kind], best["new"][name][kind]
            r[f"old_{kind}_s"], r[f"new_{kind}_s"], r[f"{kind}_new_over_old"] = o, n, n / o
            if kind.startswith("step"):
                ce = min(best["old"]["crossentropy"][kind], best["new"]["crossentropy"][kind])
                r[f"old_{kind}_ratio_to_crossentropy"], r[f"new_{kind}_ratio_to_crossentropy"] = o / ce, n / ce
    return out


def _print(res: dict, d: int, c: int) -> None:
    from bench.bench_train import BATCH, HIDDEN

    print(f"\n== pairwise losses: training step of a single head {BATCH} x {d} -> {HIDDEN} -> {c} (x: ratio to the "
          f"crossentropy step of this run), and the loss's own forward+backward on {BATCH} x {c} logits")
    for clock in ("wall", "cpu"):
        print(f"-- {clock} clock")
        print(f"{'loss':<14}{'old ms':>8}{'old x':>7}{'new ms':>8}{'new x':>7}{'new/old':>9}"
              f"{'loss old ms':>13}{'new ms':>8}{'new/old':>9}")
        for name, v in res.items():
            s, lo = f"step_{clock}", f"loss_{clock}"
            print(f"{name:<14}{1e3 * v[f'old_{s}_s']:>8.2f}{v[f'old_{s}_ratio_to_crossentropy']:>7.2f}"
                  f"{1e3 * v[f'new_{s}_s']:>8.2f}{v[f'new_{s}_ratio_to_crossentropy']:>7.2f}{v[f'{s}_new_over_old']:>9.2f}"
                  f"{1e3 * v[f'old_{lo}_s']:>13.3f}{1e3 * v[f'new_{lo}_s']:>8.3f}{v[f'{lo}_new_over_old']:>9.2f}")
    print("target: every loss <= 1.3x the crossentropy step")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=6, help="alternating rounds (best kept)")
    ap.add_argument("--steps", type=int, default=10, help="steps timed per loss and round")
    ap.add_argument("--dim", type=int, default=1280, help="input dimension D (MoviePosters: 1280)")
    ap.add_argument("--classes", type=int, default=28, help="classes C (MoviePosters: 28)")
    ap.add_argument("--quick", action="store_true", help="smoke run: D = 64, 2 rounds of 2 steps")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = ap.parse_args()
    from bench.bench_train import _cpu_name
    from mlhead.device import resolve_device, resolve_precision

    if args.quick:
        args.dim, args.rounds, args.steps = 64, 2, 2
    prec = resolve_precision("auto", resolve_device(None), training=True)
    load = os.getloadavg()[0]
    print(f"{_cpu_name()}; torch {torch.__version__}, {torch.get_num_threads()} threads, precision {prec}; "
          f"load average {load:.2f}")
    res = measure(args.dim, args.classes, prec, args.steps, args.rounds)
    _print(res, args.dim, args.classes)
    if args.json:
        args.json.write_text(json.dumps({"cpu": _cpu_name(), "threads": torch.get_num_threads(), "precision": prec,
                                         "load_average": load, "dim": args.dim, "classes": args.classes,
                                         "losses": res}, indent=2))


if __name__ == "__main__":
    main()
