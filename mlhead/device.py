"""Device and precision selection shared by stage one (embed) and stage two (fit)."""

from __future__ import annotations

import contextlib

import torch

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


def resolve_precision(precision: str, device: torch.device) -> str:
    """Map ``auto`` to fp16 on CUDA, bf16 on CPUs with AMX/AVX512-BF16, else fp32.

    Raises ValueError for an unknown name or fp16 on CPU.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"--precision {precision!r} invalid; valid: {', '.join(PRECISIONS)}")
    if precision == "auto":
        if device.type == "cuda":
            return "fp16"
        return "bf16" if cpu_has_fast_bf16() else "fp32"
    if precision == "fp16" and device.type == "cpu":
        raise ValueError("--precision fp16 needs a CUDA device; use bf16 or fp32 on CPU")
    return precision


def autocast(device: torch.device, precision: str):
    """Autocast context for a resolved precision ("fp32" -> no autocast)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=_DTYPES[precision])


def dtype_of(precision: str) -> torch.dtype:
    """torch dtype of a resolved precision name."""
    return _DTYPES[precision]
