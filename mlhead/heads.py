"""The classification head (sigmoidF1 paper 4.2, Fig. 1) and its stacked K-run variant.

``MLPHead``: Linear(D->H) -> ReLU -> Linear(H->C), output = logits; ``hidden=0`` is a linear probe.
``StackedHeads``: K independent heads that share an input batch, stored so that the first layer is
one wide GEMM (B x D) @ (D x K*H) and the second a batched matmul (K x B x H) @ (K x H x C). Each
head's initial weights equal those of an ``MLPHead`` built with the same seed.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from . import normalize as N


def init_linear(fan_in: int, fan_out: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """nn.Linear's default init (kaiming-uniform a=sqrt(5), i.e. U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for
    both weight and bias), drawn from ``generator``. Returns (weight out x in, bias out) float32."""
    bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
    w = (torch.rand(fan_out, fan_in, generator=generator) * 2 - 1) * bound
    b = (torch.rand(fan_out, generator=generator) * 2 - 1) * bound
    return w, b


def init_head_state(dim: int, hidden: int, n_classes: int, seed: int) -> dict[str, torch.Tensor]:
    """Seeded initial weights of one head as an ``MLPHead`` state_dict (fc1.*, fc2.* or fc.*)."""
    g = torch.Generator().manual_seed(int(seed))
    if hidden == 0:
        w, b = init_linear(dim, n_classes, g)
        return {"fc.weight": w, "fc.bias": b}
    w1, b1 = init_linear(dim, hidden, g)
    w2, b2 = init_linear(hidden, n_classes, g)
    return {"fc1.weight": w1, "fc1.bias": b1, "fc2.weight": w2, "fc2.bias": b2}


class MLPHead(nn.Module):
    """Linear(D->H) -> ReLU -> Linear(H->C) (or Linear(D->C) when ``hidden == 0``).

    forward: embeddings B x D float -> logits B x C, after :func:`mlhead.normalize.apply` with
    ``normalize`` (``none``, ``l2``, ``standardize``); ``standardize`` adds buffers
    ``input_mean``/``input_std`` (D) holding the train statistics. ``standardize=True`` is the older
    spelling of ``normalize="standardize"``.
    """

    def __init__(self, dim: int, hidden: int, n_classes: int, seed: int | None = None, standardize: bool = False,
                 normalize: str = "none"):
        super().__init__()
        self.hidden = hidden
        self.normalize = N.check("standardize" if standardize else normalize)
        for key in N.STAT_KEYS[self.normalize]:  # filled from head.safetensors
            self.register_buffer(key, torch.zeros(dim) if key == "input_mean" else torch.ones(dim))
        if hidden == 0:
            self.fc = nn.Linear(dim, n_classes)
        else:
            self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, n_classes)
        if seed is not None:
            self.load_state_dict(init_head_state(dim, hidden, n_classes, seed))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = N.apply(x, self.normalize, {k: getattr(self, k) for k in N.STAT_KEYS[self.normalize]})
        if self.hidden == 0:
            return self.fc(x)
        return self.fc2(torch.relu(self.fc1(x)))


class StackedHeads(nn.Module):
    """K heads on one input batch. Parameters (float32 masters):

    ``w1`` D x (K*H), ``b1`` K*H, ``w2`` K x H x C, ``b2`` K x 1 x C (``hidden == 0``: ``w1`` D x (K*C)).
    forward: x B x D -> logits K x B x C.
    """

    def __init__(self, dim: int, hidden: int, n_classes: int, seeds: list[int]):
        super().__init__()
        self.k, self.dim, self.hidden, self.n_classes = len(seeds), dim, hidden, n_classes
        states = [init_head_state(dim, hidden, n_classes, s) for s in seeds]
        if hidden == 0:
            self.w1 = nn.Parameter(torch.cat([s["fc.weight"].t() for s in states], 1).contiguous())
            self.b1 = nn.Parameter(torch.cat([s["fc.bias"] for s in states]))
        else:
            self.w1 = nn.Parameter(torch.cat([s["fc1.weight"].t() for s in states], 1).contiguous())
            self.b1 = nn.Parameter(torch.cat([s["fc1.bias"] for s in states]))
            self.w2 = nn.Parameter(torch.stack([s["fc2.weight"].t() for s in states]).contiguous())
            self.b2 = nn.Parameter(torch.stack([s["fc2.bias"][None] for s in states]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B = x.shape[0]
        width = self.n_classes if self.hidden == 0 else self.hidden
        h = torch.addmm(self.b1, x, self.w1)
        h = h.view(B, self.k, width).transpose(0, 1)  # K x B x width
        if self.hidden == 0:
            return h
        return torch.baddbmm(self.b2, torch.relu(h), self.w2)

    def slice_runs(self, name: str, t: torch.Tensor, keep: list[int]) -> torch.Tensor:
        """The part of ``t`` -- parameter ``name`` (``w1``, ``b1``, ``w2``, ``b2``) or a tensor shaped
        like it, e.g. its Adam moments -- that belongs to the runs ``keep`` (indices in 0..K-1, in order)."""
        if name in ("w1", "b1"):
            width = self.n_classes if self.hidden == 0 else self.hidden
            cols = torch.cat([torch.arange(i * width, (i + 1) * width) for i in keep]).to(t.device)
            return t.index_select(t.ndim - 1, cols)
        return t.index_select(0, torch.tensor(keep, device=t.device))

    def select_runs(self, keep: list[int]) -> StackedHeads:
        """A new StackedHeads of the runs ``keep`` only (copies of their current weights): compaction
        when runs stop, so the remaining runs' GEMM gets narrower."""
        new = StackedHeads.__new__(StackedHeads)
        nn.Module.__init__(new)
        new.k, new.dim, new.hidden, new.n_classes = len(keep), self.dim, self.hidden, self.n_classes
        for name, p in self.named_parameters():
            setattr(new, name, nn.Parameter(self.slice_runs(name, p.detach(), keep).contiguous()))
        return new

    def head_state(self, i: int) -> dict[str, torch.Tensor]:
        """Run ``i``'s weights as an ``MLPHead`` state_dict (float32, contiguous, on CPU): a copy that
        later optimizer steps leave alone (a slice of a bias would be a view of the live parameter)."""
        width = self.n_classes if self.hidden == 0 else self.hidden
        w1 = _copy(self.w1.detach()[:, i * width:(i + 1) * width].t())
        b1 = _copy(self.b1.detach()[i * width:(i + 1) * width])
        if self.hidden == 0:
            return {"fc.weight": w1, "fc.bias": b1}
        return {"fc1.weight": w1, "fc1.bias": b1, "fc2.weight": _copy(self.w2.detach()[i].t()),
                "fc2.bias": _copy(self.b2.detach()[i, 0])}


def _copy(t: torch.Tensor) -> torch.Tensor:
    """A float32, contiguous CPU copy of ``t`` that never shares memory with it."""
    return t.to("cpu", torch.float32, copy=True).contiguous()
