"""Every multilabel loss, registered by its CLI name.

Library contract (see ``DESIGN.md``)::

    LOSSES                      dict CLI name -> loss class (a torch.nn.Module subclass)
    ALIASES                     dict alias -> registered name ("bce" -> "crossentropy")
    build(name, pos_weight=None, **options)
                                -> configured loss module (options validated, strings converted;
                                   an alias builds its loss; ``pos_weight`` C tensor for the losses
                                   with ``POS_WEIGHT = True``)
    accepted_options(name, d)   -> the subset of ``d`` that loss ``name`` accepts
    describe()                  -> one dict per loss: name, source, reduction, options
    register(name)              class decorator adding a loss to LOSSES

Calling convention, identical for every loss::

    loss(logits, targets) -> tensor

* ``logits``: floating tensor ``B x C`` (any real value, any float dtype). float16 / bfloat16 /
  float32 inputs are computed in float32; float64 inputs stay float64 (so gradcheck works).
* ``targets``: ``B x C`` in {0, 1} (float, uint8, bool or integer dtype); losses with
  ``SOFT_TARGETS = True`` also accept soft targets in [0, 1].
* Returns a 0-d tensor (float32, or float64 for float64 logits).
* Stacked heads: ``logits`` of shape ``K x B x C`` (K independent runs) with targets ``B x C``
  (shared) or ``K x B x C`` returns a K-vector whose entry k equals the 2-D call on slice k.
* Wrong shapes, non-floating logits, mismatched devices or targets outside the allowed values
  raise ``ValueError`` naming the loss and the offending shapes/values.

Each loss class declares ``OPTIONS`` (name -> :class:`Option`), ``SOURCE`` (the equation or library
it implements) and ``REDUCTION`` (how per-element terms become one number).  Adding a loss is one
``@register("name")`` class with a ``_loss(z, y)`` method.

Policies (shared by all losses; also stated in each class):

* Reductions: per-example losses are averaged over the batch (``mean over batch``); the
  confusion-matrix losses (unboundedF1, sigmoidF1, smooth-*) and dice2 are batch-level, i.e. their
  tp/fp/fn are sums over the batch, exactly as in the papers.
* Pairwise losses (ranking, warp, bpmll, lsep): an example with no positive or no negative label
  has no (positive, negative) pair and contributes 0 (it still counts in the batch mean).
* Confusion-matrix losses: a class with no positive in the batch has tp = 0, so its F1 (and
  precision/recall/Jaccard) is 0, as in the released sigmoidF1 code (eps = 1e-16 guards 0/0).
"""

from __future__ import annotations

import contextlib
import functools
import math
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from .errors import ConfigError

__all__ = [
    "LOSSES",
    "Option",
    "Loss",
    "register",
    "ALIASES",
    "build",
    "canonical_name",
    "accepted_options",
    "describe",
    "smooth_confusion",
    "confusion_entries",
    "POS_WEIGHT_LOSSES",
]

LOSSES: dict[str, type["Loss"]] = {}

#: Alternative CLI name -> registered name. An alias builds the very same loss class; ``describe()``
#: and ``mlhead losses`` list it under its loss, never as a loss of its own.
ALIASES: dict[str, str] = {"bce": "crossentropy"}

#: eps of the released sigmoidF1 code (``2*tp / (2*tp + fn + fp + 1e-16)``), used by every
#: confusion-matrix loss.
CONFUSION_EPS = 1e-16


# --------------------------------------------------------------------------------------------
# Options
# --------------------------------------------------------------------------------------------


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        v = value.strip().lower()
        if v in ("1", "true", "yes", "on", "y", "t"):
            return True
        if v in ("0", "false", "no", "off", "n", "f"):
            return False
    raise ValueError("not a boolean")


def _to_float(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError("a boolean is not a number")
    if isinstance(value, Tensor):
        value = value.item()
    return float(value)


def _to_int(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("a boolean is not an integer")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        value = value.strip()
        try:
            return int(value)
        except ValueError:
            value = float(value)
    f = float(value)
    if not f.is_integer():
        raise ValueError("not an integer")
    return int(f)


def _to_str(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("not a string")
    return value.strip()


_CONVERTERS: dict[type, Callable[[Any], Any]] = {
    bool: _to_bool,
    int: _to_int,
    float: _to_float,
    str: _to_str,
}


@dataclass(frozen=True)
class Option:
    """Declaration of one loss option.

    Attributes:
        default: value used when the option is not given.
        check: predicate on the converted value; ``False`` -> out of range (``None``: any value).
        valid: human-readable valid range, quoted in error messages and ``describe()``.
        help: one-line description (shown by ``mlhead losses``).
        type: ``bool``, ``int``, ``float`` or ``str``; values (e.g. CLI strings ``"3"``) are
            converted with it. ``None`` -> ``type(default)``.
    """

    default: Any
    check: Callable[[Any], bool] | None = None
    valid: str = "any"
    help: str = ""
    type: type | None = None

    @property
    def kind(self) -> type:
        """The option's value type (``bool``, ``int``, ``float`` or ``str``)."""
        return self.type if self.type is not None else type(self.default)

    def convert(self, loss: str, name: str, value: Any) -> Any:
        """Convert ``value`` to the option's type and check its range.

        Raises:
            ValueError: conversion failed or value out of range; the message names the loss,
                the option, the value and the valid range.
        """
        kind = self.kind
        try:
            converted = _CONVERTERS[kind](value)
        except (TypeError, ValueError, OverflowError):
            raise ConfigError(
                f"--loss {loss}: {option_flag(name, value)} is not a valid {kind.__name__}; valid: {self.valid}"
            ) from None
        if self.check is not None and not self.check(converted):
            raise ConfigError(f"--loss {loss}: {option_flag(name, value)} is out of range; valid: {self.valid}")
        return converted


#: Loss options with a flag of their own on ``mlhead fit``/``sweep`` (the others are ``-O NAME=VALUE``).
OPTION_FLAGS = {"beta": "--beta", "eta": "--eta", "presigmoid": "--presigmoid"}


def option_flag(name: str, value: Any) -> str:
    """How a loss option is written on the command line: ``--beta -1`` for options with their own flag
    (:data:`OPTION_FLAGS`), else ``-O gamma=2``; the value as the user typed it (no Python quotes)."""
    flag = OPTION_FLAGS.get(name)
    if flag == "--presigmoid":
        return flag if value in (True, "true", "True", "1") else f"-O presigmoid={value}"
    return f"{flag} {value}" if flag else f"-O {name}={value}"


def _finite(v: float) -> bool:
    return math.isfinite(v)


def _positive(v: float) -> bool:
    return math.isfinite(v) and v > 0


def _nonnegative(v: float) -> bool:
    return math.isfinite(v) and v >= 0


# Shared option declarations (one definition each; classes compose them).
BETA = Option(1.0, _positive, "> 0", "sigmoid slope beta of S(u) = 1/(1+exp(-beta(u+eta))) (sigmoidF1 Eq. 6)")
ETA = Option(0.0, _finite, "any finite real", "sigmoid offset eta of S(u) (sigmoidF1 Eq. 6)")
PRESIGMOID = Option(
    False,
    None,
    "true or false",
    "apply S to sigmoid(z) instead of z, as the released sigmoidF1 code did (default: follow Eq. 5-6)",
)
AVERAGE = Option(
    "macro",
    lambda v: v in ("macro", "micro"),
    "macro or micro",
    "macro: metric per class over the batch, mean over classes; micro: tp/fp/fn/tn summed over classes",
)
SMOOTH_OPTIONS: dict[str, Option] = {"beta": BETA, "eta": ETA, "presigmoid": PRESIGMOID}


def canonical_name(name: str) -> str:
    """The registered name of loss ``name``, resolving :data:`ALIASES` ("bce" -> "crossentropy").

    Raises :class:`~mlhead.errors.ConfigError` (a ValueError) for an unknown name (lists the valid names
    and aliases).
    """
    name = ALIASES.get(name, name) if isinstance(name, str) else name
    if name not in LOSSES:
        aliases = ", ".join(f"{a} (= {n})" for a, n in ALIASES.items())
        raise ConfigError(f"unknown loss {name!r}; valid: {', '.join(LOSSES)}; aliases: {aliases}")
    return name


def _lookup(name: str) -> type["Loss"]:
    try:
        return LOSSES[canonical_name(name)]
    except TypeError:
        raise ConfigError(f"unknown loss {name!r}; valid: {', '.join(LOSSES)}") from None


def _resolve_options(cls: type["Loss"], options: dict[str, Any]) -> dict[str, Any]:
    unknown = [k for k in options if k not in cls.OPTIONS]
    if unknown:
        valid = ", ".join(cls.OPTIONS) or "none (this loss takes no options)"
        raise ConfigError(f"--loss {cls.NAME}: unknown option {unknown[0]}; valid options: {valid}")
    out = {}
    for name, opt in cls.OPTIONS.items():
        out[name] = opt.convert(cls.NAME, name, options[name]) if name in options else opt.default
    return out


# --------------------------------------------------------------------------------------------
# Registry API
# --------------------------------------------------------------------------------------------


def register(name: str) -> Callable[[type["Loss"]], type["Loss"]]:
    """Class decorator: register a :class:`Loss` subclass under CLI name ``name``.

    Sets ``cls.NAME = name``. Raises ``ValueError`` if the name is taken.
    """

    def deco(cls: type["Loss"]) -> type["Loss"]:
        if name in LOSSES:
            raise ValueError(f"loss {name!r} is already registered ({LOSSES[name].__name__})")
        if not (isinstance(cls, type) and issubclass(cls, Loss)):
            raise TypeError(f"@register({name!r}) needs a subclass of mlhead.losses.Loss")
        cls.NAME = name
        LOSSES[name] = cls
        return cls

    return deco


def build(name: str, pos_weight: Tensor | None = None, **options: Any) -> "Loss":
    """Build the loss registered as ``name`` with ``options``.

    Option values may be strings (from the CLI); they are converted with the option's type.
    ``pos_weight``: per-class weight of the positive term (C float tensor, finite, >= 0), with the
    semantics of ``torch.nn.BCEWithLogitsLoss(pos_weight=...)``; only for the losses in
    :data:`POS_WEIGHT_LOSSES` (``--pos-weight``).

    Raises:
        ValueError: unknown loss (lists valid names), unknown option (lists the loss's valid
            options), failed conversion or out-of-range value (names option, value, valid range);
            ConfigError (a ValueError) for ``pos_weight`` on a loss that does not define it.
    """
    return _lookup(name)(pos_weight=pos_weight, **options)


def accepted_options(name: str, options: dict[str, Any]) -> dict[str, Any]:
    """Return the items of ``options`` that loss ``name`` declares (values unchanged).

    Used when one grid gives e.g. ``beta`` to several losses, only some of which take it.
    Raises ``ValueError`` for an unknown loss name.
    """
    cls = _lookup(name)
    return {k: v for k, v in options.items() if k in cls.OPTIONS}


def describe() -> list[dict[str, Any]]:
    """One entry per registered loss, in registration order.

    Each entry: ``{"name", "aliases", "source", "reduction", "soft_targets", "pos_weight", "options":
    [{"name", "default", "valid", "help"}, ...]}``; ``aliases`` lists the :data:`ALIASES` of the loss;
    ``pos_weight`` says how the loss uses ``--pos-weight`` ("" when it does not accept it).
    """
    return [
        {
            "name": name,
            "aliases": [a for a, n in ALIASES.items() if n == name],
            "source": cls.SOURCE,
            "reduction": cls.REDUCTION,
            "soft_targets": cls.SOFT_TARGETS,
            "pos_weight": cls.POS_WEIGHT_DOC if cls.POS_WEIGHT else "",
            "options": [
                {"name": k, "default": o.default, "valid": o.valid, "help": o.help}
                for k, o in cls.OPTIONS.items()
            ],
        }
        for name, cls in LOSSES.items()
    ]


# --------------------------------------------------------------------------------------------
# Base class
# --------------------------------------------------------------------------------------------


class Loss(nn.Module):
    """Base class of every registered loss.

    Subclasses set ``OPTIONS``, ``SOURCE``, ``REDUCTION`` (and ``SOFT_TARGETS``) and implement
    ``_loss(z, y)``: ``z`` logits of shape ``(..., B, C)`` in float32/float64, ``y`` targets of
    the same shape and dtype; returns a tensor of shape ``z.shape[:-2]``.  Leading dimensions are
    stacked runs, so every reduction must act on the last two dimensions only.

    ``__init__(pos_weight=None, **options)`` validates options like :func:`build` and stores each one
    both in ``self.options`` and as an attribute; ``pos_weight`` (C tensor) becomes the buffer
    ``self.pos_weight`` (None when not given) for the losses with ``POS_WEIGHT = True``.
    """

    NAME: ClassVar[str] = ""
    OPTIONS: ClassVar[dict[str, Option]] = {}
    SOURCE: ClassVar[str] = ""
    REDUCTION: ClassVar[str] = ""
    #: True when targets in [0, 1] are meaningful; False -> targets must be exactly 0 or 1.
    SOFT_TARGETS: ClassVar[bool] = True
    #: True when the loss has a positive term to weight per class (``--pos-weight``).
    POS_WEIGHT: ClassVar[bool] = False
    #: How ``pos_weight`` enters the loss (shown by ``mlhead losses``).
    POS_WEIGHT_DOC: ClassVar[str] = ""

    def __init__(self, pos_weight: Tensor | None = None, **options: Any) -> None:
        super().__init__()
        self.options: dict[str, Any] = _resolve_options(type(self), options)
        for k, v in self.options.items():
            setattr(self, k, v)
        self.register_buffer("pos_weight", _check_pos_weight(type(self), pos_weight))

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.options.items())

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        """Loss of ``logits`` (B x C or K x B x C) against ``targets`` (B x C or K x B x C).

        Returns a 0-d tensor for 2-D logits, a K-vector for stacked logits (float32, or
        float64 for float64 logits).  Raises ``ValueError`` on bad shapes, dtypes, devices or
        target values.
        """
        z, y = self._prepare(logits, targets)
        return self._loss(z, y)

    def _loss(self, z: Tensor, y: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def _prepare(self, logits: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
        name = self.NAME or type(self).__name__
        if not isinstance(logits, Tensor) or not isinstance(targets, Tensor):
            raise ValueError(f"{name}: logits and targets must be torch tensors")
        shapes = f"logits {tuple(logits.shape)}, targets {tuple(targets.shape)}"
        ok = (logits.ndim == 2 and targets.shape == logits.shape) or (
            logits.ndim == 3 and targets.shape in (logits.shape, logits.shape[1:])
        )
        if not ok:
            raise ValueError(
                f"{name}: expected logits B x C with targets B x C, or stacked logits K x B x C with "
                f"targets B x C or K x B x C; got {shapes}"
            )
        if logits.shape[-1] == 0 or logits.shape[-2] == 0 or logits.numel() == 0:
            raise ValueError(f"{name}: empty batch or no classes; got {shapes}")
        if not logits.is_floating_point():
            raise ValueError(f"{name}: logits must be a floating tensor; got dtype {logits.dtype}")
        if targets.is_complex():
            raise ValueError(f"{name}: targets must be real; got dtype {targets.dtype}")
        if targets.device != logits.device:
            raise ValueError(f"{name}: logits on {logits.device} but targets on {targets.device}")
        dtype = torch.float64 if logits.dtype == torch.float64 else torch.float32
        z = logits.to(dtype)
        y = targets.detach().to(dtype)
        if self.SOFT_TARGETS:
            bad = ~((y >= 0) & (y <= 1))
            allowed = "in [0, 1]"
        else:
            bad = ~((y == 0) | (y == 1))
            allowed = "0 or 1 (this loss does not support soft targets)"
        if bool(bad.any()):
            example = y[bad].flatten()[0].item()
            raise ValueError(f"{name}: targets must be {allowed}; found {example!r}")
        return z, y.expand_as(z)


def _check_pos_weight(cls: type[Loss], pos_weight: Tensor | None) -> Tensor | None:
    """``pos_weight`` as a float32 C tensor (None stays None); ConfigError for a loss without a
    positive term to weight, or for negative / non-finite weights."""
    from .errors import ConfigError

    if pos_weight is None:
        return None
    if not cls.POS_WEIGHT:
        raise ConfigError(f"--pos-weight is not defined for --loss {cls.NAME}; it applies to "
                          f"{', '.join(POS_WEIGHT_LOSSES)} (see `mlhead losses`)")
    w = torch.as_tensor(pos_weight, dtype=torch.float32)
    if w.ndim != 1 or not bool(torch.isfinite(w).all()) or bool((w < 0).any()):
        raise ConfigError(f"{cls.NAME}: pos_weight must be a 1-D tensor of finite weights >= 0 (one per class)")
    return w


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def confusion_entries(p: Tensor, y: Tensor, q: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Soft confusion-matrix entries per class, summed over the batch (sigmoidF1 Eq. 4 / 5).

    Args:
        p: ``(..., B, C)`` "prediction" (raw output for Eq. 4, ``S(z)`` for Eq. 5).
        y: ``(..., B, C)`` targets in [0, 1].
        q: ``1 - p`` if the caller has a more accurate value (e.g. ``sigmoid(-a)``); else computed.

    Returns:
        ``(tp, fp, fn, tn)``, each ``(..., C)``: ``tp = sum p*y``, ``fp = sum p*(1-y)``,
        ``fn = sum (1-p)*y``, ``tn = sum (1-p)*(1-y)`` over the batch dimension.
    """
    if q is None:
        q = 1 - p
    ny = 1 - y
    return (p * y).sum(-2), (p * ny).sum(-2), (q * y).sum(-2), (q * ny).sum(-2)


def smooth_confusion(
    logits: Tensor, targets: Tensor, beta: float = 1.0, eta: float = 0.0, presigmoid: bool = False
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Smooth tp, fp, fn, tn of sigmoidF1 Eq. 5 with S(u) = 1 / (1 + exp(-beta (u + eta))) (Eq. 6).

    ``u = logits`` (the equations) or ``u = sigmoid(logits)`` when ``presigmoid`` (the released
    code, which wrote ``1/(1+exp(b(z+c)))`` with ``b = -beta`` after a ``torch.sigmoid``).
    Shapes as in :func:`confusion_entries`; returns per-class entries ``(..., C)``.
    """
    u = torch.sigmoid(logits) if presigmoid else logits
    a = beta * (u + eta)
    return confusion_entries(torch.sigmoid(a), targets, torch.sigmoid(-a))


def _masked_logsumexp(x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """logsumexp of ``x`` over the last dim restricted to ``mask``; NaN-free gradients.

    Returns ``(lse, has_any)``; where the mask is empty ``lse`` is 0 (callers mask it out).
    """
    has_any = mask.any(-1)
    neg_inf = torch.tensor(float("-inf"), dtype=x.dtype, device=x.device)
    xm = torch.where(mask, x, neg_inf)
    # Defensive: rows without any element would be all -inf (lse -inf, NaN in its backward);
    # give them zeros so every intermediate stays finite (their result is masked below).
    xm = torch.where(has_any.unsqueeze(-1), xm, torch.zeros((), dtype=x.dtype, device=x.device))
    lse = torch.logsumexp(xm, dim=-1)
    return torch.where(has_any, lse, torch.zeros((), dtype=x.dtype, device=x.device)), has_any


def _log_pair_sum(z: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """``log sum_{i pos, j neg} exp(s_j - s_i)`` per example (= logsumexp_neg s + logsumexp_pos -s) and
    a mask of the examples that have at least one (positive, negative) pair. Shapes ``z.shape[:-1]``."""
    pos = y > 0.5
    lse_neg, has_neg = _masked_logsumexp(z, ~pos)
    lse_pos, has_pos = _masked_logsumexp(-z, pos)
    return lse_neg + lse_pos, has_neg & has_pos


def _logsumexp_with_zero(x: Tensor) -> Tensor:
    """``log(1 + sum_i exp(x_i))`` over the last dim, as logsumexp with an appended zero logit."""
    zero = torch.zeros(x.shape[:-1] + (1,), dtype=x.dtype, device=x.device)
    return torch.logsumexp(torch.cat([zero, x], dim=-1), dim=-1)


#: Most pair terms (stacked runs x examples x positive labels x labels) in one block of the pairwise
#: hinge losses (ranking, warp); a larger batch is computed block by block (same result up to float
#: rounding), so their memory stays bounded whatever B and C are (8-20 bytes per term in float32).
PAIR_BLOCK_ELEMENTS = 16 * 2**20


def _pair_blocks(lead: int, B: int, C: int) -> list[tuple[int, int, int, int]]:
    """Blocks ``(b0, b1, i0, i1)`` of the (example b, label i) grid of a ``lead x B x C`` batch, in
    row-major order: whole examples while ``lead * (b1-b0) * C * C <= PAIR_BLOCK_ELEMENTS``, else one
    example at a time in chunks of labels i (``lead * (i1-i0) * C`` terms, at least one label)."""
    per_row = lead * C * C
    if per_row <= PAIR_BLOCK_ELEMENTS:
        nb = PAIR_BLOCK_ELEMENTS // per_row
        return [(b0, min(B, b0 + nb), 0, C) for b0 in range(0, B, nb)]
    ni = max(1, PAIR_BLOCK_ELEMENTS // (lead * C))
    return [(b, b + 1, i0, min(C, i0 + ni)) for b in range(B) for i0 in range(0, C, ni)]


def _hinge_operands(z: Tensor, pos: Tensor, margin: float) -> tuple[Tensor, Tensor]:
    """``(zi, zj)``, both ``z.shape``: ``zi`` = z on positive labels and +inf elsewhere, ``zj`` = margin + z
    on negative labels and -inf elsewhere, so ``zj[j] - zi[i]`` is the hinge argument ``margin + z_j -
    z_i`` of a (positive i, negative j) pair and -inf for every other pair (no pair mask needed)."""
    return torch.where(pos, z, math.inf), torch.where(pos, -math.inf, z + margin)


def _compact_positives(y: Tensor, has_neg: Tensor) -> Tensor:
    """Column indices ``(..., b, P)`` of each example's positive labels in a block's 0/1 targets ``y``
    ``(..., b, i)`` (in no particular order): P = the most positives of an example with a negative (at
    least 1); the remaining columns are padding, i.e. non-positive labels or positives of examples
    without a negative, both of which have no pair.  The pair terms then cost B*C*P instead of B*C^2
    (one host sync for P)."""
    P = int((y * has_neg).sum(-1).max())
    return torch.topk(y, max(P, 1), dim=-1, sorted=False).indices


def _block_hinge(zi: Tensor, zj: Tensor, block: tuple[int, int, int, int], cols: Tensor) -> Tensor:
    """``max(0, zj[b, j] - zi[b, i])`` on one block for the columns ``cols`` (:func:`_compact_positives`)
    of labels ``i0:i1``, laid out ``(..., b1-b0, C, P)`` (index j before i, so that the sums and minima
    over j run along a non-innermost dimension, which torch's CPU kernels vectorize)."""
    b0, b1, i0, i1 = block
    zi_b = zi[..., b0:b1, i0:i1].gather(-1, cols)
    return (zj[..., b0:b1, :, None] - zi_b.unsqueeze(-2)).clamp_min_(0)


def _gather_columns(order: Tensor, cols: Tensor) -> Tensor:
    """``order`` ``(b, C, i)`` at the columns ``cols`` ``(..., b, P)``: ``(..., b, C, P)``."""
    idx = cols.unsqueeze(-2).expand(*cols.shape[:-1], order.shape[-2], cols.shape[-1])
    return order.expand(*cols.shape[:-2], *order.shape).gather(-1, idx)


def _amin_labels(x: Tensor) -> Tensor:
    """``x.amin(-2)`` (exact) by halving with ``torch.minimum``: on CPU a few times faster than ``amin``
    over a short middle dimension (148 vs 495 us at 256 x 28 x 28 float32, one thread, under load)."""
    while x.shape[-2] > 1:
        n, h = x.shape[-2], x.shape[-2] // 2
        m = torch.minimum(x[..., :h, :], x[..., n - h:, :])
        if n % 2:  # the middle row
            m[..., :1, :] = torch.minimum(m[..., :1, :], x[..., h:h + 1, :])
        x = m
    return x[..., 0, :]


def _warp_rank(violates: Tensor, order: Tensor, neg: Tensor, n_neg: Tensor) -> Tensor:
    """WARP's sampled rank of each positive i on one block: ``floor(#neg / draws)`` where i has a
    violator; elsewhere some finite value (i has no hinge and no gradient there, so it is never used).

    ``violates`` ``(..., b, C, i)``: 1.0 where (positive i, negative j) violates the margin, else 0.0;
    ``order`` ``(b, C, i)``: ``C +`` the position of label j in positive i's visiting order
    (:func:`_key_order`); ``neg`` ``(..., b, 1, C)`` 1.0 on negatives; ``n_neg`` ``(..., b, 1)`` their
    number.  ``draws`` = the negatives visited up to the first violator (the violator with the smallest
    position).  Exact integer arithmetic in floats, no bool masks: on CPU, torch's bool ops and
    ``where`` over B x C x C cost several times more than float passes.
    """
    C = order.shape[-2]
    first = _amin_labels(torch.add(order, violates, alpha=-C)).add_(C)  # C + first violator's position
    later = (order - first.unsqueeze(-2)).clamp_(0, 1)  # 1.0 where visited after the first violator
    draws = n_neg - torch.matmul(neg, later).squeeze(-2)
    # floor of the float quotient: exact for integer counts below 2^22 (the quotient is >= 1/(2C) away
    # from the next integer); clamp: no 0/0 where there is no violator
    return (n_neg / draws.clamp_(min=1)).floor_()


def _key_order(keys: Tensor) -> Tensor:
    """``keys`` ``(b, i, C)`` -> ``(b, C, i)`` float32: ``C + #{j' : keys[b, i, j'] < keys[b, i, j]}`` at
    ``[b, j, i]``, i.e. label j's position in the visiting order of positive i (equal keys: equal
    positions, so comparisons of positions are comparisons of keys), shifted by C."""
    C = keys.shape[-1]
    pos = torch.searchsorted(keys.sort(-1).values, keys)
    return (pos.to(torch.float32) + C).transpose(-1, -2).contiguous()


def _no_autocast(device_type: str):
    """Autocast off (a no-op context when it is off already, which is cheaper than torch.autocast)."""
    return torch.autocast(device_type, enabled=False) if torch.is_autocast_enabled(device_type) else contextlib.nullcontext()


class _PairHinge(torch.autograd.Function):
    """Per example ``sum_{i pos} w_i sum_{j neg} max(0, margin + z_j - z_i)``, block by block
    (:func:`_pair_blocks`), over each example's positive labels only (:func:`_compact_positives`):
    ``w_i = 1`` (ranking, ``keys=None``) or WARP's sampled rank (``keys``: callable giving each block's
    key order, :func:`_key_order`; the rank is a count and gets no gradient).

    ``forward(z (..., B, C) float, y (..., B, C) 0/1 of z's dtype, margin, keys) -> (..., B)``.  Backward,
    with V the violating pairs (``margin + z_j - z_i > 0``; the hinge's derivative at 0 is 0, as
    ``relu``'s): ``grad z_j = g sum_i w_i V_ij`` (a matmul) and ``grad z_i = -g w_i sum_j V_ij``, instead
    of autograd through B x C x C where/relu temporaries.  A single block keeps V (float 0/1) for
    backward; more blocks recompute it block by block, so memory stays bounded.  Computed with autocast
    off (the counts and weights stay exact).
    """

    @staticmethod
    def forward(ctx, z: Tensor, y: Tensor, margin: float, keys: Callable | None) -> Tensor:
        with _no_autocast(z.device.type):
            *lead, B, C = z.shape
            blocks = _pair_blocks(math.prod(lead), B, C)
            zi, zj = _hinge_operands(z, y > 0.5, margin)
            neg = 1 - y
            n_neg = neg.sum(-1, keepdim=True)
            orders = keys(blocks) if keys is not None else [None] * len(blocks)
            parts = [_PairHinge._block(zi, zj, y, neg, n_neg, block, order, len(blocks) == 1)
                     for block, order in zip(blocks, orders)]
        ctx.save_for_backward(zi, zj)
        ctx.blocks, ctx.saved = blocks, [saved for _, saved in parts]
        return parts[0][0] if len(parts) == 1 else torch.cat([rows for rows, _ in parts], -1).view(*lead, B, -1).sum(-1)

    @staticmethod
    def _block(zi, zj, y, neg, n_neg, block, order, keep):
        """One block's per-example sums ``(..., b1-b0)`` and what backward needs: (columns, rank,
        violations if ``keep``)."""
        b0, b1, i0, i1 = block
        cols = _compact_positives(y[..., b0:b1, i0:i1], n_neg[..., b0:b1, :] > 0)
        h = _block_hinge(zi, zj, block, cols)
        hinge, violates, rank = h.sum(-2), h.sign_(), None
        if order is not None:
            rank = _warp_rank(violates, _gather_columns(order, cols), neg[..., b0:b1, None, :], n_neg[..., b0:b1, :])
            hinge = rank * hinge
        return hinge.sum(-1), (cols, rank, violates if keep else None)

    @staticmethod
    @once_differentiable
    def backward(ctx, g: Tensor):
        zi, zj = ctx.saved_tensors
        with _no_autocast(zi.device.type):
            grad = torch.zeros_like(zi)
            for block, (cols, rank, violates) in zip(ctx.blocks, ctx.saved):
                b0, b1, i0, i1 = block
                if violates is None:
                    violates = _block_hinge(zi, zj, block, cols).sign_()
                w = g[..., b0:b1, None]
                if rank is None:  # w_i = 1: violation counts times the example's gradient
                    grad[..., b0:b1, :] += violates.sum(-1) * w
                else:
                    w = rank * w
                    grad[..., b0:b1, :] += torch.matmul(violates, w.unsqueeze(-1)).squeeze(-1)
                grad[..., b0:b1, i0:i1].scatter_add_(-1, cols, violates.sum(-2).mul_(w).neg_())
        return grad, None, None, None


_PAIR_POLICY = (
    "examples with no positive or no negative label contribute 0 (and count in the batch mean)"
)


# --------------------------------------------------------------------------------------------
# Binary-relevance losses
# --------------------------------------------------------------------------------------------


@register("crossentropy")
class CrossEntropyLoss(Loss):
    """Binary cross-entropy (BCE) with logits, one independent sigmoid per class.

    CLI names ``crossentropy`` (the sigmoidF1 paper's name for its baseline) and ``bce`` (alias).
    Not the softmax (categorical) cross-entropy: each class is its own binary problem.
    ``mean_{b,c} -[y log sigmoid(z) + (1-y) log sigmoid(-z)]``, computed by
    ``F.binary_cross_entropy_with_logits`` (log-sum-exp stable); soft targets in [0, 1] allowed.
    Input/output contract: see :class:`Loss`.
    """

    SOURCE = "torch.nn.functional.binary_cross_entropy_with_logits (sigmoidF1 baseline; ZLPR Eq. 14)"
    REDUCTION = "mean over batch and classes (= ZLPR Eq. 14 / C, averaged over the batch)"
    POS_WEIGHT = True
    POS_WEIGHT_DOC = "torch's pos_weight: -[w_c y log s(z) + (1-y) log s(-z)]"

    def _loss(self, z: Tensor, y: Tensor) -> Tensor:
        return F.binary_cross_entropy_with_logits(z, y, reduction="none", pos_weight=self.pos_weight).mean((-2, -1))


@register("focal")
class FocalLoss(Loss):
    """Sigmoid focal loss, ``torchvision.ops.sigmoid_focal_loss`` (Lin et al. 2017).

    Per element ``alpha_t (1 - p_t)^gamma BCE(z, y)``, ``p = sigmoid(z)``; ``alpha = -1``
    disables the alpha weighting (then it is ZLPR Eq. 19 / C). Mean over batch and classes,
    i.e. torchvision's ``reduction="mean"``.
    """

    OPTIONS = {
        "gamma": Option(2.0, _nonnegative, ">= 0", "focusing exponent gamma"),
        "alpha": Option(
            0.25,
            lambda v: (0 <= v <= 1) or v == -1,
            "in [0, 1], or -1 to disable",
            "positive-class weight alpha (negatives get 1 - alpha)",
        ),
    }
    SOURCE = "torchvision.ops.sigmoid_focal_loss (Lin et al. 2017; ZLPR Eq. 19 with alpha=-1)"
    REDUCTION = "mean over batch and classes (torchvision reduction='mean')"
    POS_WEIGHT = True
    POS_WEIGHT_DOC = "torch's pos_weight inside the BCE term: alpha_t (1-p_t)^gamma BCE_w"

    def _loss(self, z: Tensor, y: Tensor) -> Tensor:
        if self.pos_weight is None:
            from torchvision.ops import sigmoid_focal_loss

            per = sigmoid_focal_loss(z, y, alpha=self.alpha, gamma=self.gamma, reduction="none")
            return per.mean((-2, -1))
        # torchvision's formula with torch's pos_weight in the cross-entropy term
        p = torch.sigmoid(z)
        ce = F.binary_cross_entropy_with_logits(z, y, reduction="none", pos_weight=self.pos_weight)
        p_t = p * y + (1 - p) * (1 - y)
        per = ce * (1 - p_t) ** self.gamma
        if self.alpha >= 0:
            per = (self.alpha * y + (1 - self.alpha) * (1 - y)) * per
        return per.mean((-2, -1))


@register("asl")
class AsymmetricLoss(Loss):
    """Asymmetric Loss (Ridnik et al., ICCV 2021), the reference ``AsymmetricLoss`` formula.

    ``p = sigmoid(z)``, ``p_neg = min(1 - p + clip, 1)`` (probability shifting),
    ``L = -[y log(max(p, eps)) + (1-y) log(max(p_neg, eps))] * (1 - p_t)^gamma_t`` with
    ``p_t = p`` / ``gamma_t = gamma_pos`` for positives and ``p_t = p_neg`` / ``gamma_t =
    gamma_neg`` for negatives.

    Reduction: sum over classes, mean over batch.  The reference returns ``-loss.sum()`` over
    all B x C elements, i.e. **reference value = this value x batch size** (same gradient
    direction; Adam is invariant to that constant factor).  ``detach_focal=True`` reproduces the
    reference's ``disable_torch_grad_focal_loss=True`` (the focusing weight gets no gradient; the
    value is unchanged).
    """

    OPTIONS = {
        "gamma_neg": Option(4.0, _nonnegative, ">= 0", "focusing exponent for negatives"),
        "gamma_pos": Option(0.0, _nonnegative, ">= 0", "focusing exponent for positives"),
        "clip": Option(0.05, lambda v: 0 <= v < 1, "in [0, 1)", "probability margin added to 1 - p"),
        "eps": Option(1e-8, lambda v: 0 < v < 1, "in (0, 1)", "clamp of probabilities inside the log"),
        "detach_focal": Option(
            False, None, "true or false", "no gradient through the focusing weight (ASL's disable_torch_grad_focal_loss)"
        ),
    }
    SOURCE = "Ridnik et al. 2021, Asymmetric Loss (reference AsymmetricLoss; sigmoidF1 VOC baseline)"
    REDUCTION = "sum over classes, mean over batch (reference -loss.sum() = this x batch size)"
    POS_WEIGHT = True
    POS_WEIGHT_DOC = "w_c multiplies the positive term y log(p) (as torch's pos_weight)"

    def _loss(self, z: Tensor, y: Tensor) -> Tensor:
        p = torch.sigmoid(z)
        p_neg = 1 - p
        if self.clip > 0:
            p_neg = (p_neg + self.clip).clamp(max=1)
        pos = y * torch.log(p.clamp(min=self.eps))
        if self.pos_weight is not None:
            pos = pos * self.pos_weight
        loss = pos + (1 - y) * torch.log(p_neg.clamp(min=self.eps))
        if self.gamma_neg > 0 or self.gamma_pos > 0:
            pt = p * y + p_neg * (1 - y)
            gamma = self.gamma_pos * y + self.gamma_neg * (1 - y)
            w = torch.pow(1 - pt, gamma)
            if self.detach_focal:
                w = w.detach()
            loss = loss * w
        return -loss.sum(-1).mean(-1)


# --------------------------------------------------------------------------------------------
# Confusion-matrix (F1-type) losses
# --------------------------------------------------------------------------------------------


@register("unboundedf1")
class UnboundedF1Loss(Loss):
    """unboundedF1 (sigmoidF1 paper Eq. 4, 7) on the raw outputs z.

    ``tp = sum_b z y``, ``fp = sum_b z (1-y)``, ``fn = sum_b (1-z) y`` per class;
    ``loss = 1 - mean_c 2tp / (2tp + fn + fp + 1e-16)``.  Unbounded: z is not squashed, so the
    loss can leave [0, 1] (the paper's stated weakness).  Batch-level, macro over classes.
    """

    SOURCE = "sigmoidF1 paper Eq. 4, 7 (raw outputs, eps 1e-16)"
    REDUCTION = "batch-level (macro over classes)"

    def _loss(self, z: Tensor, y: Tensor) -> Tensor:
        tp, fp, fn, _ = confusion_entries(z, y)
        return 1 - (2 * tp / (2 * tp + fn + fp + CONFUSION_EPS)).mean(-1)


class SmoothMetricLoss(Loss):
    """Base of the smooth confusion-matrix losses: ``loss = 1 - metric(tp, fp, fn, tn)``.

    tp/fp/fn/tn are the smooth entries of sigmoidF1 Eq. 5 (:func:`smooth_confusion`, options
    beta, eta, presigmoid), summed over the batch.  ``average = "macro"``: the metric per class,
    then the mean over classes; ``"micro"``: entries summed over classes first.  Subclasses
    implement :meth:`metric` (elementwise on tensors, eps = 1e-16 in denominators).
    """

    OPTIONS = {**SMOOTH_OPTIONS, "average": AVERAGE}
    REDUCTION = "batch-level (macro: mean of per-class metrics; micro: entries summed over classes)"
    average: str = "macro"

    def metric(self, tp: Tensor, fp: Tensor, fn: Tensor, tn: Tensor) -> Tensor:  # pragma: no cover
        raise NotImplementedError

    def metric_to_loss(self, m: Tensor) -> Tensor:
        """Map the metric (higher is better, 1 at best) to a loss: ``1 - m``."""
        return 1 - m

    def _loss(self, z: Tensor, y: Tensor) -> Tensor:
        tp, fp, fn, tn = smooth_confusion(z, y, self.beta, self.eta, self.presigmoid)
        if self.average == "micro":
            m = self.metric(tp.sum(-1), fp.sum(-1), fn.sum(-1), tn.sum(-1))
        else:
            m = self.metric(tp, fp, fn, tn).mean(-1)
        return self.metric_to_loss(m)


@register("sigmoidf1")
class SigmoidF1Loss(SmoothMetricLoss):
    """sigmoidF1 (sigmoidF1 paper Eq. 5, 6, 8), the paper's loss.

    ``S = 1/(1+exp(-beta(z+eta)))`` (on ``sigmoid(z)`` with ``presigmoid=True``, as the released
    code); per class over the batch ``tp = sum S y``, ``fp = sum S (1-y)``, ``fn = sum (1-S) y``;
    ``loss = 1 - mean_c 2tp / (2tp + fn + fp + 1e-16)``.  Decision rule matching S: predict a
    label when ``S >= 0.5``, i.e. ``z + eta >= 0`` (the paper itself thresholds softmax(z)).
    ``smooth-f1`` is this class plus the ``average`` option (macro: identical values).
    """

    OPTIONS = dict(SMOOTH_OPTIONS)
    SOURCE = "sigmoidF1 paper Eq. 5, 6, 8 (released code: eps 1e-16; presigmoid=True reproduces it)"
    REDUCTION = "batch-level (macro over classes)"

    def metric(self, tp, fp, fn, tn):
        return 2 * tp / (2 * tp + fn + fp + CONFUSION_EPS)


# --------------------------------------------------------------------------------------------
# ZLPR and label-ranking losses
# --------------------------------------------------------------------------------------------


@register("zlpr")
class ZLPRLoss(Loss):
    """ZLPR (ZLPR paper Eq. 1; soft labels Eq. 31).

    Per example ``log(1 + sum_{i pos} e^{-s_i}) + log(1 + sum_{j neg} e^{s_j})``, computed as
    logsumexp with an appended zero logit.  Soft targets p in [0, 1] (Eq. 31):
    ``log(1 + <p, e^{-s}>) + log(1 + <1-p, e^{s}>)`` = logsumexp over ``[0, -s + log p]`` plus
    logsumexp over ``[0, s + log(1-p)]`` (equal to Eq. 1 for hard labels).
    Decision rule: predict label i when ``s_i > 0`` (the "zero bound"; use ``--activation none
    --threshold 0``); for soft labels the paper's probability is ``sigmoid(2 s)`` (Eq. 35).
    Mean over batch.
    """

    SOURCE = "ZLPR paper Eq. 1 (hard labels) and Eq. 31 (soft labels); decision rule logit > 0"
    #: the rule the paper pairs with this loss (stored in run configs as ``suggested_rule``)
    DECISION_RULE: ClassVar[dict] = {"activation": "none", "threshold": 0.0}
    REDUCTION = "mean over batch (per-example Eq. 1 already sums over classes)"

    def _loss(self, z: Tensor, y: Tensor) -> Tensor:
        pos = _logsumexp_with_zero(torch.log(y) - z)
        neg = _logsumexp_with_zero(torch.log1p(-y) + z)
        return (pos + neg).mean(-1)


@register("dice1")
class Dice1Loss(Loss):
    """Dice loss, first version (ZLPR Eq. 20), ``p = sigmoid(z)``.

    Per element ``1 - (2 p y + gamma) / (p^2 + y + gamma)``: for y = 1 this is the positive term
    of Eq. 20, for y = 0 the negative term ``1 - gamma / (p^2 + gamma)``; for soft y the same
    expression (``y`` as in Eq. 21's ``sum y``).  Sum over classes, mean over batch.
    """

    OPTIONS = {"gamma": Option(1.0, _positive, "> 0", "smoothing gamma_dl1 (ZLPR uses 1)")}
    SOURCE = "ZLPR paper Eq. 20"
    REDUCTION = "sum over classes, mean over batch"

    def _loss(self, z: Tensor, y: Tensor) -> Tensor:
        p = torch.sigmoid(z)
        per = 1 - (2 * p * y + self.gamma) / (p * p + y + self.gamma)
        return per.sum(-1).mean(-1)


@register("dice2")
class Dice2Loss(Loss):
    """Dice loss, second version (ZLPR Eq. 21): batch-level, per class.

    ``sum_c 1 - (2 sum_b p y + gamma) / (sum_b p^2 + sum_b y + gamma)``, ``p = sigmoid(z)``.
    Batch-level (sums over the batch inside each class term), summed over classes as in Eq. 21.
    """

    OPTIONS = {"gamma": Option(1.0, _positive, "> 0", "smoothing gamma_dl2 (ZLPR uses 1)")}
    SOURCE = "ZLPR paper Eq. 21"
    REDUCTION = "batch-level (sums over the batch per class), sum over classes"

    def _loss(self, z: Tensor, y: Tensor) -> Tensor:
        p = torch.sigmoid(z)
        num = 2 * (p * y).sum(-2) + self.gamma
        den = (p * p).sum(-2) + y.sum(-2) + self.gamma
        return (1 - num / den).sum(-1)


@register("ranking")
class RankingLoss(Loss):
    """Pairwise ranking (hinge) loss, ZLPR Eq. 22.

    Per example ``sum_{i pos} sum_{j neg} max(0, margin + s_j - s_i)``; mean over batch.
    Examples with no positive or no negative label contribute 0.

    Cost: B*C*P pair terms per stacked run, P = the most positive labels of an example in the batch
    (at most C; B*C^2 = 200,704 at B = 256, C = 28, and about 57,000 when P = 8), computed by
    :class:`_PairHinge`: float passes only and a hand-written backward (two reductions of the violation
    mask).  Memory: about 8 bytes per term in float32 (the hinge, turned into the violation mask kept
    for backward), twice in float64; a batch above :data:`PAIR_BLOCK_ELEMENTS` (16 Mi) terms is
    computed in blocks of examples, or of labels of one example, so the peak stays about 128 MiB
    whatever B and C are (or ``K * C`` terms per block when that alone exceeds the cap).
    """

    OPTIONS = {"margin": Option(1.0, _nonnegative, ">= 0", "hinge margin alpha_rl (ZLPR uses 1)")}
    SOURCE = "ZLPR paper Eq. 22"
    REDUCTION = "sum over (positive, negative) pairs, mean over batch; " + _PAIR_POLICY
    SOFT_TARGETS = False

    def _loss(self, z: Tensor, y: Tensor) -> Tensor:
        return _PairHinge.apply(z, y, self.margin, None).mean(-1)


@register("warp")
class WARPLoss(Loss):
    """WARP loss, ZLPR Eq. 23, with WARP's sampled rank estimate (Weston et al. 2011).

    Per example ``sum_{i pos} sum_{j neg} w(r_i) max(0, margin + s_j - s_i)`` with ``w(r) = r``
    (ZLPR's choice).  ``r_i`` (rank of positive i: the number of negatives violating the
    margin) is estimated by WARP sampling: the negatives are visited in a random order until the
    first violator, N draws, and ``r_i = floor(#neg / N)`` (0 when no negative violates).  The
    weight is a count and gets no gradient.

    Sampling is seeded and reproducible: each call draws ``keys = torch.rand((B, C, C),
    generator=torch.Generator(device=logits.device).manual_seed(seed))`` (float32); the visiting
    order for (example b, positive i) is the negatives j sorted by ``keys[b, i, j]``.  So the
    same call gives the same value, and the K stacked runs share the keys (each entry equals its
    2-D call).  Mean over batch; examples with no positive or no negative label contribute 0.

    Cost: B*C*P pair terms per stacked run, P = the most positive labels of an example in the batch
    (at most C; B*C^2 = 200,704 at B = 256, C = 28, and about 57,000 when P = 8), each with its hinge
    and its part of the rank estimate, computed by :class:`_PairHinge` (float passes only, a
    hand-written backward); plus the B*C^2 keys, drawn once per batch shape and kept as their visiting
    order (:func:`_key_order`, 4 bytes per key) while B*C^2 <= :data:`PAIR_BLOCK_ELEMENTS`.  Memory:
    about 20 bytes per term in float32 (hinge/violation mask kept for backward, the gathered key
    order, the masked order, the "visited later" mask), twice in float64; a batch above
    :data:`PAIR_BLOCK_ELEMENTS` (16 Mi) terms is computed in blocks of examples, or of labels of one
    example, so the peak stays about 320 MiB whatever B and C are.  Above the cap the keys are drawn
    block by block from the same seeded generator, in the order of one ``torch.rand((B, C, C))``
    call: on CPU the same numbers (tested); on CUDA, whose generator is counter-based per call, they
    differ from one whole draw (and depend on the cap).
    """

    OPTIONS = {
        "margin": Option(1.0, _nonnegative, ">= 0", "hinge margin alpha_warp (ZLPR uses 1)"),
        "seed": Option(0, lambda v: 0 <= v < 2**63, "integer in [0, 2^63)", "seed of the negative sampling"),
    }
    SOURCE = "ZLPR paper Eq. 23 with w(r) = r; rank by WARP sampling (Weston et al. 2011)"
    REDUCTION = "weighted sum over (positive, negative) pairs, mean over batch; " + _PAIR_POLICY
    SOFT_TARGETS = False

    def _generator(self, device: torch.device) -> torch.Generator:
        gen = torch.Generator(device=device)
        gen.manual_seed(self.seed)
        return gen

    def _keys(self, B: int, C: int, device: torch.device) -> Tensor:
        """The sampling keys of a B x C batch, transposed: ``out[b, j, i] = keys[b, i, j]`` (the layout
        of :func:`_block_hinge`).  The same for every call by construction (a generator freshly
        seeded with ``seed``), so drawn once per (B, C, device) and kept (at most
        :data:`PAIR_BLOCK_ELEMENTS` keys in all)."""
        cache = self.__dict__.setdefault("_key_cache", {})
        key = (B, C, str(device))
        if key not in cache:
            if sum(k.numel() for k in cache.values()) + B * C * C > PAIR_BLOCK_ELEMENTS:
                cache.clear()
            keys = torch.rand((B, C, C), generator=self._generator(device), device=device, dtype=torch.float32)
            cache[key] = _key_order(keys)
        return cache[key]

    def _block_keys(self, B: int, C: int, device: torch.device, blocks: list) -> Iterator[Tensor]:
        """The keys of each block ``(b0, b1, i0, i1)`` (row-major, as :func:`_pair_blocks` gives them),
        ``(b1-b0, C, i1-i0)`` in the layout of :meth:`_keys`: slices of the kept keys, or, above the
        cap, drawn block by block."""
        if B * C * C <= PAIR_BLOCK_ELEMENTS:
            keys = self._keys(B, C, device)
            return (keys[b0:b1, :, i0:i1] for b0, b1, i0, i1 in blocks)
        gen = self._generator(device)
        return (_key_order(torch.rand((b1 - b0, i1 - i0, C), generator=gen, device=device, dtype=torch.float32))
                for b0, b1, i0, i1 in blocks)

    def _loss(self, z: Tensor, y: Tensor) -> Tensor:
        B, C = z.shape[-2:]
        keys = functools.partial(self._block_keys, B, C, z.device)
        return _PairHinge.apply(z, y, self.margin, keys).mean(-1)


@register("bpmll")
class BPMLLLoss(Loss):
    """BP-MLL loss in log form, ZLPR Eq. 24: ``log sum_{i pos} sum_{j neg} exp(s_j - s_i)``.

    Computed as ``logsumexp_{j neg} s_j + logsumexp_{i pos} (-s_i)`` (no overflow at |s| = 1e4).
    Can be negative.  Mean over batch; examples with no positive or no negative label contribute
    0 (the log of the empty sum would be -inf).
    """

    SOURCE = "ZLPR paper Eq. 24 (log form, as in ZLPR's experiments)"
    REDUCTION = "log of the sum over (positive, negative) pairs, mean over batch; " + _PAIR_POLICY
    SOFT_TARGETS = False

    def _loss(self, z: Tensor, y: Tensor) -> Tensor:
        log_pairs, valid = _log_pair_sum(z, y)
        return torch.where(valid, log_pairs, 0).mean(-1)


@register("lsep")
class LSEPLoss(Loss):
    """LSEP loss, ZLPR Eq. 12: ``log(1 + sum_{j neg} e^{s_j} sum_{i pos} e^{-s_i})``.

    Computed as ``softplus(logsumexp_{j neg} s_j + logsumexp_{i pos} (-s_i))`` (no sampling,
    as in ZLPR).  Mean over batch; examples with no positive or no negative label contribute 0
    (empty sum: log 1).
    """

    SOURCE = "ZLPR paper Eq. 12 (Li et al. 2017, unsampled)"
    REDUCTION = "mean over batch; " + _PAIR_POLICY
    SOFT_TARGETS = False

    def _loss(self, z: Tensor, y: Tensor) -> Tensor:
        log_pairs, valid = _log_pair_sum(z, y)
        return torch.where(valid, F.softplus(log_pairs), 0).mean(-1)


# --------------------------------------------------------------------------------------------
# Smooth confusion-matrix metrics ("any confusion-matrix metric has a smooth surrogate")
# --------------------------------------------------------------------------------------------


@register("smooth-f1")
class SmoothF1Loss(SigmoidF1Loss):
    """Smooth F1: ``1 - 2tp / (2tp + fn + fp + eps)`` (sigmoidF1 Eq. 8), macro or micro.

    With ``average="macro"`` it equals ``sigmoidf1`` (same class, plus the average option).
    """

    OPTIONS = {**SMOOTH_OPTIONS, "average": AVERAGE}
    SOURCE = "sigmoidF1 paper Eq. 5, 6, 8; F1 = 2tp/(2tp+fn+fp)"
    REDUCTION = SmoothMetricLoss.REDUCTION


@register("smooth-fbeta")
class SmoothFBetaLoss(SmoothMetricLoss):
    """Smooth F-beta: ``1 - (1+b^2) tp / ((1+b^2) tp + b^2 fn + fp + eps)``, ``b = f_beta``."""

    OPTIONS = {**SmoothMetricLoss.OPTIONS, "f_beta": Option(1.0, _positive, "> 0", "recall weight b of F-beta")}
    SOURCE = "sigmoidF1 paper Eq. 5, 6 + appendix Table 1; F-beta = (1+b^2)tp/((1+b^2)tp + b^2 fn + fp)"

    def metric(self, tp, fp, fn, tn):
        b2 = self.f_beta**2
        return (1 + b2) * tp / ((1 + b2) * tp + b2 * fn + fp + CONFUSION_EPS)


@register("smooth-jaccard")
class SmoothJaccardLoss(SmoothMetricLoss):
    """Smooth Jaccard (IoU): ``1 - tp / (tp + fp + fn + eps)``."""

    SOURCE = "sigmoidF1 paper Eq. 5, 6 + appendix Table 1; Jaccard = tp/(tp+fp+fn)"

    def metric(self, tp, fp, fn, tn):
        return tp / (tp + fp + fn + CONFUSION_EPS)


@register("smooth-precision")
class SmoothPrecisionLoss(SmoothMetricLoss):
    """Smooth precision: ``1 - tp / (tp + fp + eps)``."""

    SOURCE = "sigmoidF1 paper Eq. 5, 6 + appendix Table 1; precision = tp/(tp+fp)"

    def metric(self, tp, fp, fn, tn):
        return tp / (tp + fp + CONFUSION_EPS)


@register("smooth-recall")
class SmoothRecallLoss(SmoothMetricLoss):
    """Smooth recall: ``1 - tp / (tp + fn + eps)``."""

    SOURCE = "sigmoidF1 paper Eq. 5, 6 + appendix Table 1; recall = tp/(tp+fn)"

    def metric(self, tp, fp, fn, tn):
        return tp / (tp + fn + CONFUSION_EPS)


@register("smooth-balanced-accuracy")
class SmoothBalancedAccuracyLoss(SmoothMetricLoss):
    """Smooth balanced accuracy: ``1 - (tp/(tp+fn+eps) + tn/(tn+fp+eps)) / 2``."""

    SOURCE = "sigmoidF1 paper Eq. 5, 6 + appendix Table 1; balanced accuracy = (TPR + TNR)/2"

    def metric(self, tp, fp, fn, tn):
        return 0.5 * (tp / (tp + fn + CONFUSION_EPS) + tn / (tn + fp + CONFUSION_EPS))


@register("smooth-mcc")
class SmoothMCCLoss(SmoothMetricLoss):
    """Smooth Matthews correlation, mapped to [0, 1]: ``loss = (1 - mcc) / 2``.

    ``mcc = (tp tn - fp fn) / (sqrt((tp+fp)(tn+fn) + eps) sqrt((tp+fn)(tn+fp) + eps))``
    (the eps inside the square roots keeps gradients finite when a factor is 0; |mcc| <= 1).
    """

    SOURCE = "sigmoidF1 paper Eq. 5, 6 + appendix Table 1; MCC = (tp tn - fp fn)/sqrt(product of margins)"
    REDUCTION = SmoothMetricLoss.REDUCTION + "; loss = (1 - mcc)/2 in [0, 1]"

    def metric(self, tp, fp, fn, tn):
        den = torch.sqrt((tp + fp) * (tn + fn) + CONFUSION_EPS) * torch.sqrt((tp + fn) * (tn + fp) + CONFUSION_EPS)
        return (tp * tn - fp * fn) / den

    def metric_to_loss(self, m: Tensor) -> Tensor:
        return (1 - m) / 2


#: Losses with a per-class positive term that ``--pos-weight`` weights.
POS_WEIGHT_LOSSES = tuple(name for name, cls in LOSSES.items() if cls.POS_WEIGHT)
