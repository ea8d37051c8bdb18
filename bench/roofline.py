"""The machine's own limit for one head-training step: a roofline lower bound, measured in this process.

A training step of K stacked heads (batch B, embeddings D -> hidden H -> C classes; the embeddings need no
gradient) is made of these GEMMs, each run at the rate this machine reaches *at that exact shape*:

=========================  =================  ==============
GEMM                       shape (m x k x n)  flop
=========================  =================  ==============
layer 1 forward            B x D x K*H        2 B D K H
layer 1 weight gradient    D x B x K*H        2 B D K H
layer 2 forward (batched)  K x (B x H x C)    2 B H C K
layer 2 weight gradient    K x (H x B x C)    2 B H C K
layer 2 input gradient     K x (B x C x H)    2 B H C K
=========================  =================  ==============

plus the bytes that no GEMM hides: the fused Adam update reads parameter, gradient and both moments and
writes parameter and moments (7 x 4 bytes per fp32 parameter), and the low-precision autocast reads the
fp32 weights and writes their bf16/fp16 copy (4 + 2 bytes per parameter, once per step), at the measured
memory bandwidth of a large copy. The step's lower bound is

    t_min = sum_i flop_i / rate_i(shape_i)  +  bytes / bandwidth

and :func:`fraction_of_bound` reports a measured step time as ``t_min / t_measured`` (1.0 = at the
roofline). It is a lower bound, not a model of overlap: the elementwise work of the loss, the ReLU and its
mask, and the minibatch gather are left out, so a real step is above it.

Run: ``python bench/roofline.py [--k 25] [--dtype bf16]`` prints the bound per problem.
"""

from __future__ import annotations

import argparse
import time

import torch

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
ADAM_BYTES_PER_PARAM = 7 * 4
CAST_BYTES_PER_PARAM = {torch.bfloat16: 4 + 2, torch.float16: 4 + 2, torch.float32: 0}


def _best_time(fn, reps: int, warmup: int = 2) -> float:
    """Best wall time in seconds of ``fn()`` over ``reps`` calls (after ``warmup`` calls)."""
    for _ in range(warmup):
        fn()
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def gemm_rate(m: int, k: int, n: int, dtype: torch.dtype = torch.bfloat16, batch: int = 1,
              reps: int = 10) -> float:
    """Measured GEMM rate in flop/s of ``batch`` x (m x k) @ (k x n) in ``dtype`` on this CPU.

    ``batch`` > 1 times ``torch.bmm`` (the stacked heads' second layer). Best of ``reps`` timings,
    so transient load is filtered out. Raises nothing beyond torch's own errors."""
    a = torch.randn(batch, m, k).to(dtype)
    b = torch.randn(batch, k, n).to(dtype)
    if batch == 1:
        a, b = a[0], b[0]
        fn = lambda: torch.mm(a, b)  # noqa: E731
    else:
        fn = lambda: torch.bmm(a, b)  # noqa: E731
    return 2.0 * batch * m * k * n / _best_time(fn, reps)


def bandwidth(n_bytes: int = 256 * 2**20, reps: int = 5) -> float:
    """Measured memory bandwidth in bytes/s of a large fp32 copy (bytes read + bytes written)."""
    src = torch.empty(n_bytes // 4, dtype=torch.float32).uniform_()
    dst = torch.empty_like(src)
    return 2.0 * n_bytes / _best_time(lambda: dst.copy_(src), reps)


def step_gemms(b: int, d: int, h: int, c: int, k: int = 1) -> list[tuple[str, int, int, int, int]]:
    """The GEMMs of one step of K stacked heads: (name, batch, m, k, n), as in the module table."""
    if h == 0:  # linear probe: D -> C, one GEMM per direction
        return [("forward", 1, b, d, k * c), ("weight grad", 1, d, b, k * c)]
    return [("layer 1 forward", 1, b, d, k * h), ("layer 1 weight grad", 1, d, b, k * h),
            ("layer 2 forward", k, b, h, c), ("layer 2 weight grad", k, h, b, c),
            ("layer 2 input grad", k, b, c, h)]


def n_params(d: int, h: int, c: int, k: int = 1) -> int:
    """Trainable parameters of K heads D -> H -> C (weights and biases); H = 0 is a linear probe."""
    return k * ((d * c + c) if h == 0 else (d * h + h + h * c + c))


def step_bound(b: int, d: int, h: int, c: int, k: int = 1, dtype: torch.dtype = torch.bfloat16,
               bw: float | None = None, reps: int = 10) -> dict:
    """Roofline lower bound (seconds) of one training step, with its parts, measured on this machine.

    Returns ``{"gemm_s", "bytes_s", "bound_s", "flop", "bytes", "bandwidth", "rates": {name: flop/s}}``.
    ``bw``: a bandwidth already measured in bytes/s (measured here when None)."""
    bw = bandwidth() if bw is None else bw
    rates, gemm_s, flop = {}, 0.0, 0.0
    for name, batch, m, kk, n in step_gemms(b, d, h, c, k):
        rate = gemm_rate(m, kk, n, dtype, batch=batch, reps=reps)
        rates[name] = rate
        f = 2.0 * batch * m * kk * n
        flop += f
        gemm_s += f / rate
    n_bytes = n_params(d, h, c, k) * (ADAM_BYTES_PER_PARAM + CAST_BYTES_PER_PARAM[dtype])
    return {"gemm_s": gemm_s, "bytes_s": n_bytes / bw, "bound_s": gemm_s + n_bytes / bw, "flop": flop,
            "bytes": n_bytes, "bandwidth": bw, "rates": rates}


def fraction_of_bound(measured_step_s: float, bound: dict) -> float:
    """Roofline fraction ``bound_s / measured_step_s`` (1.0 = the step runs at the machine's limit)."""
    return bound["bound_s"] / measured_step_s


def main() -> None:
    from bench_train import BATCH, HIDDEN, SIZES  # same problems as the training bench

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--k", type=int, default=1)
    ap.add_argument("--dtype", choices=sorted(DTYPES), default="bf16")
    args = ap.parse_args()
    bw = bandwidth()
    print(f"bandwidth {bw / 1e9:.1f} GB/s, torch threads {torch.get_num_threads()}")
    for name, (n, d, c) in SIZES.items():
        r = step_bound(BATCH, d, HIDDEN, c, args.k, DTYPES[args.dtype], bw=bw)
        steps = -(-n // BATCH)
        print(f"{name}: K={args.k} step bound {r['bound_s'] * 1e3:.2f} ms (GEMM {r['gemm_s'] * 1e3:.2f} + "
              f"bytes {r['bytes_s'] * 1e3:.2f}); epoch bound {steps * r['bound_s']:.3f} s; "
              + ", ".join(f"{k} {v / 1e9:.0f}" for k, v in r["rates"].items()) + " GFLOP/s")


if __name__ == "__main__":
    main()
