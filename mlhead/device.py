"""Device and precision selection shared by stage one (embed) and stage two (fit)."""

from __future__ import annotations

import contextlib

import torch

from .errors import ConfigError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def cpu_has_fast_bf16() -> bool:
    """True when the CPU has AMX tiles or AVX512-BF16 (bf16 matmuls far faster than fp32)."""
    cpu = torch.cpu
    try:
        if hasattr(cpu, "_init_amx"):
            cpu._init_amx()
        return bool(cpu._is_amx_tile_supported() or cpu._is_avx512_bf16_supported())
    except AttributeError:  # older torch
        return False


def resolve_device(device: str | None = None) -> torch.device:
    """``None``/"auto" -> cuda if available else cpu; otherwise ``torch.device(device)``."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def cuda_has_bf16() -> bool:
    """True when the current CUDA device supports bf16 (``torch.cuda.is_bf16_supported``; Ampere+)."""
    return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())


def resolve_precision(precision: str, device: torch.device, training: bool = False) -> str:
    """Map ``auto`` to a concrete precision: on CUDA fp16 (embedding), or for ``training`` bf16 where
    the GPU supports it (:func:`cuda_has_bf16`) and fp16 otherwise (trained with a
    ``torch.amp.GradScaler``, see :func:`grad_scaler`); on CPU bf16 with AMX/AVX512-BF16, else fp32.

    Raises ConfigError (a ValueError) for an unknown name or fp16 on CPU.
    """
    if precision not in PRECISIONS:
        raise ConfigError(f"--precision {precision!r} invalid; valid: {', '.join(PRECISIONS)}")
    if precision == "auto":
        if device.type == "cuda":
            return "bf16" if training and cuda_has_bf16() else "fp16"
        return "bf16" if cpu_has_fast_bf16() else "fp32"
    if precision == "fp16" and device.type == "cpu":
        raise ConfigError("--precision fp16 needs a CUDA device; use bf16 or fp32 on CPU")
    return precision


def autocast(device: torch.device, precision: str):
    """Autocast context for a resolved precision ("fp32" -> no autocast)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=_DTYPES[precision])


def dtype_of(precision: str) -> torch.dtype:
    """torch dtype of a resolved precision name."""
    return _DTYPES[precision]


def grad_scaler(device: torch.device, precision: str) -> torch.amp.GradScaler:
    """``torch.amp.GradScaler`` for training: enabled for fp16 on CUDA (loss scaling against fp16
    gradient underflow), a pass-through (``enabled=False``) otherwise."""
    return torch.amp.GradScaler(device.type, enabled=precision == "fp16" and device.type == "cuda")


#: glibc mallopt parameters (malloc.h): M_TRIM_THRESHOLD, M_MMAP_THRESHOLD.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
#: Allocations up to this size come from the heap and freed memory is kept for reuse (bytes).
REUSE_LIMIT = 1 << 30


def reuse_freed_memory() -> bool:
    """Keep freed CPU tensors' memory in the process for the next step instead of returning it to the OS.

    glibc serves allocations above its mmap threshold (at most 32 MiB by default) with a fresh
    ``mmap`` and unmaps them on free, so every training step of a wide stacked head (its fp32 weight
    gradient, the bf16 weight copy of autocast and its bf16 gradient: 26-131 MiB each for K=5-25 heads
    1280 x 1024) touched fresh pages: measured 20,000-64,000 minor page faults per step (the kernel
    zeroing each page) where a single head had none. Raising the mmap and trim thresholds to
    :data:`REUSE_LIMIT` via ``mallopt`` (glibc's documented tunables, the same as the environment
    variables ``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_``) makes those buffers reuse heap
    memory: 0 faults per step for a K=25 grid of five 5-head groups. Cost: the process keeps its peak
    heap (RSS does not shrink after a fit). Process-wide; called by :func:`mlhead.train.fit` on CPU.
    Set ``MLHEAD_MALLOC_TUNING=0`` to leave malloc alone. Returns True when applied (glibc Linux),
    False otherwise (other C libraries: nothing to do). Raises nothing.
    """
    import ctypes
    import os
    import sys

    if os.environ.get("MLHEAD_MALLOC_TUNING", "1") == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others have no mallopt
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, REUSE_LIMIT)) and bool(mallopt(_M_TRIM_THRESHOLD, REUSE_LIMIT))
