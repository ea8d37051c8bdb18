"""Input normalization of embeddings, fitted on train and stored with the head (``--normalize``).

* ``none`` -- the embeddings as cached.
* ``l2`` -- each embedding divided by its L2 norm, as CLIP_benchmark's ``--normalize`` (and CLIP's
  zero-shot/linear-probe code): ``torch.nn.functional.normalize(x, dim=-1)``, i.e.
  ``x / max(||x||_2, 1e-12)``. Needs no statistics.
* ``standardize`` -- z-score each feature with the train split's mean and (unbiased) std; a feature
  constant on train (std <= 1e-6) is only centred. The statistics are stored with the head as
  ``input_mean``/``input_std`` (D, float32). ``fit --standardize`` is an alias.

:func:`fit_stats` computes what a mode needs from the train split; :func:`apply` is the one function
that transforms inputs, used by training, by :class:`~mlhead.heads.MLPHead` (so eval and predict
apply exactly what fit applied) and by :func:`mlhead.runs.input_transform`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .errors import ConfigError

NORMALIZE_CHOICES = ("none", "l2", "standardize")

#: Keys of the statistics a mode stores with the head.
STAT_KEYS = {"none": (), "l2": (), "standardize": ("input_mean", "input_std")}


def check(mode: str) -> str:
    """``mode`` if it is one of :data:`NORMALIZE_CHOICES`, else ConfigError naming ``--normalize``."""
    if mode not in NORMALIZE_CHOICES:
        raise ConfigError(f"--normalize {mode!r} invalid; valid: {', '.join(NORMALIZE_CHOICES)}")
    return mode


def fit_stats(X: torch.Tensor, mode: str) -> dict[str, torch.Tensor]:
    """Statistics of ``mode`` from the train embeddings ``X`` (N x D, float32): for ``standardize``
    ``input_mean`` and ``input_std`` (D, contiguous; std 1 where a column is constant), else ``{}``."""
    if check(mode) != "standardize":
        return {}
    mean, std = X.mean(0), X.std(0)
    std = torch.where(std > 1e-6, std, torch.ones_like(std))  # constant train columns: centre only
    return {"input_mean": mean.contiguous(), "input_std": std.contiguous()}


def apply(X: torch.Tensor, mode: str, stats: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
    """``X`` (... x D float) normalized by ``mode`` with ``stats`` from :func:`fit_stats`; same shape."""
    if mode == "none":
        return X
    if mode == "l2":
        return F.normalize(X, dim=-1)
    if mode == "standardize":
        return (X - stats["input_mean"]) / stats["input_std"]
    raise ConfigError(f"--normalize {mode!r} invalid; valid: {', '.join(NORMALIZE_CHOICES)}")
