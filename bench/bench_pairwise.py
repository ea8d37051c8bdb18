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


def measure(d: int, c: int, prec: str, steps: int, rounds: int) -> dict:
    """Best seconds per training step and per loss forward+backward, old and new, rounds interleaved."""
    from bench import roofline
    from bench.bench_train import BATCH, _loss_step_fn
    from mlhead.device import dtype_of

    dev = torch.device("cpu")
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(BATCH, d, generator=gen).to(dtype_of(prec) if prec != "fp32" else torch.float32)
    y = (torch.rand(BATCH, c, generator=gen) < 0.1).float()
    z = torch.randn(BATCH, c, generator=gen).requires_grad_()
    fns = {name: (_loss_step_fn(name, x, y, d, c, dev, prec), _loss_fn(name, z, y)) for name in LOSSES}
    best = {v: {n: [float("inf"), float("inf")] for n in LOSSES} for v in ("old", "new")}
    for r in range(rounds):
        for variant in ("old", "new") if r % 2 == 0 else ("new", "old"):
            with old_code() if variant == "old" else _nothing():
                for name, (step, lossf) in fns.items():
                    b = best[variant][name]
                    b[0] = min(b[0], roofline._best_time(lambda: [step() for _ in range(steps)], 1, warmup=1) / steps)
                    b[1] = min(b[1], roofline._best_time(lambda: [lossf() for _ in range(steps)], 1, warmup=1) / steps)
    return _ratios(best)


@contextmanager
def _nothing():
    yield


def _ratios(best: dict) -> dict:
    ce = min(best["old"]["crossentropy"][0], best["new"]["crossentropy"][0])  # same code in both variants
    out = {}
    for name in LOSSES:
        (o_step, o_loss), (n_step, n_loss) = best["old"][name], best["new"][name]
        out[name] = {"old_step_s": o_step, "new_step_s": n_step, "old_ratio_to_crossentropy": o_step / ce,
                     "new_ratio_to_crossentropy": n_step / ce, "new_over_old_step": n_step / o_step,
                     "old_loss_fwd_bwd_s": o_loss, "new_loss_fwd_bwd_s": n_loss, "new_over_old_loss": n_loss / o_loss}
    return out


def _print(res: dict, d: int, c: int) -> None:
    from bench.bench_train import BATCH, HIDDEN

    print(f"\n== pairwise losses, training step of a single head {BATCH} x {d} -> {HIDDEN} -> {c} "
          f"(ratios to the crossentropy step of this run)")
    print(f"{'loss':<14}{'old ms':>8}{'old x':>7}{'new ms':>8}{'new x':>7}{'new/old':>9}"
          f"{'loss fwd+bwd old ms':>21}{'new ms':>8}{'new/old':>9}")
    for name, v in res.items():
        print(f"{name:<14}{1e3 * v['old_step_s']:>8.2f}{v['old_ratio_to_crossentropy']:>7.2f}"
              f"{1e3 * v['new_step_s']:>8.2f}{v['new_ratio_to_crossentropy']:>7.2f}{v['new_over_old_step']:>9.2f}"
              f"{1e3 * v['old_loss_fwd_bwd_s']:>21.3f}{1e3 * v['new_loss_fwd_bwd_s']:>8.3f}{v['new_over_old_loss']:>9.2f}")
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
