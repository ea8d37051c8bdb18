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
