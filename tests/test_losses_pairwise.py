"""The pairwise hinge losses (ranking, warp) after their hand-written backward (``losses._PairHinge``):
values and gradients against a brute-force loop and against the formulas they replaced (kept in
``bench/bench_pairwise.py``), stacked K x B x C input, examples without pairs, bf16 logits, autocast,
and the block-by-block computation that bounds memory (tested with a small monkeypatched cap)."""

from __future__ import annotations

import pytest
import torch

from bench.bench_pairwise import old_keys, old_ranking, old_warp
from mlhead import losses
from mlhead.losses import build


def brute_force(Z, Y, margin, keys=None):
    """Loss and d loss / d Z of ranking (``keys=None``) or warp by loops over examples and pairs.

    WARP: negatives visited in the order of ``keys[b][i][j]``; rank = #neg // draws to the first
    violator (0 without one); value ``mean_b sum_{i pos} rank_i sum_{j neg} max(0, margin + z_j - z_i)``;
    gradient ``rank_i / B`` on z_j and ``-rank_i / B`` on z_i per violating pair (relu'(0) = 0)."""
    B, C = len(Z), len(Z[0])
    total, grad = 0.0, [[0.0] * C for _ in range(B)]
    for b in range(B):
        negs = [j for j in range(C) if Y[b][j] == 0]
        for i in (i for i in range(C) if Y[b][i] == 1):
            viol = [j for j in negs if margin + Z[b][j] - Z[b][i] > 0]
            w = 1.0
            if keys is not None:
                order = sorted(negs, key=lambda j: keys[b][i][j])
                first = next((n for n, j in enumerate(order, start=1) if j in viol), None)
                w = len(negs) // first if first else 0
            for j in viol:
                total += w * (margin + Z[b][j] - Z[b][i])
                grad[b][j] += w / B
                grad[b][i] -= w / B
    return total / B, grad


def _random_case(shape, seed, dtype=torch.float64, p=0.3):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(*shape, generator=g, dtype=dtype) * 2
    y = (torch.rand(*shape, generator=g) < p).to(dtype)
    y[..., 0, :] = 0  # an example without positive
    y[..., 1, :] = 1  # an example without negative
    return z, y


def _value_and_grad(fn, z):
    z = z.detach().clone().requires_grad_()
    v = fn(z)
    (g,) = torch.autograd.grad(v.sum(), z)
    return v.detach(), g


def _warp_keys(B, C, seed):
    return torch.rand((B, C, C), generator=torch.Generator().manual_seed(seed)).tolist()


# --------------------------------------------------------------------------------------------
# hand example and brute force
# --------------------------------------------------------------------------------------------


def test_warp_hand_example_value_and_gradient():
    # row 0: positives 0 (s=-5) and 4 (s=-6) lie below every negative: all 3 negatives violate, the first
    # draw is a violator, rank 3; hinges 9+10+8 and 10+11+9. Row 1: positives above every negative + 1.
    z = torch.tensor([[-5.0, 3.0, 4.0, 2.0, -6.0], [9.0, 0.0, 1.0, 8.0, -1.0]], requires_grad=True)
    y = torch.tensor([[1.0, 0, 0, 0, 1], [1, 0, 0, 1, 0]])
    for seed in range(3):
        v = build("warp", seed=seed)(z, y)
        (g,) = torch.autograd.grad(v, z)
        assert v.item() == pytest.approx((3 * 27 + 3 * 30) / 2)
        # d/dz_j = (3 + 3) / 2 for each negative j; d/dz_i = -3 * 3 / 2 for each positive i; row 1: 0
        want = torch.tensor([[-4.5, 3.0, 3.0, 3.0, -4.5], [0, 0, 0, 0, 0]])
        assert torch.equal(g, want)


def test_ranking_hand_example_gradient_counts_violations():
    # positive 0 (s=0) against negatives 1 (s=0.5: violates), 2 (s=-1: hinge exactly 0, no gradient),
    # 3 (s=-3: no violation); margin 1
    z = torch.tensor([[0.0, 0.5, -1.0, -3.0]], requires_grad=True)
    y = torch.tensor([[1.0, 0, 0, 0]])
    v = build("ranking")(z, y)
    (g,) = torch.autograd.grad(v, z)
    assert v.item() == pytest.approx(1.5)
    assert torch.equal(g, torch.tensor([[-1.0, 1.0, 0.0, 0.0]]))


@pytest.mark.parametrize("name", ["ranking", "warp"])
@pytest.mark.parametrize("margin", [1.0, 0.0, 0.5])
@pytest.mark.parametrize("shape", [(6, 5), (9, 13), (4, 2)])
def test_value_and_gradient_equal_brute_force(name, margin, shape):
    z, y = _random_case(shape, seed=sum(shape) + int(10 * margin))
    B, C = shape
    keys = _warp_keys(B, C, 4) if name == "warp" else None
    loss = build(name, margin=margin, **({"seed": 4} if name == "warp" else {}))
    v, g = _value_and_grad(lambda t: loss(t, y), z)
    want_v, want_g = brute_force(z.tolist(), y.tolist(), margin, keys)
    assert v.item() == pytest.approx(want_v, rel=1e-12, abs=1e-12)
    assert torch.allclose(g, torch.tensor(want_g, dtype=torch.float64), rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------------------------
# against the formulas before the change (autograd through B x C x C where/relu)
# --------------------------------------------------------------------------------------------


def _old(name, margin, seed):
    if name == "ranking":
        return lambda t, y: old_ranking(t, y, margin)
    return lambda t, y: old_warp(t, y, old_keys(*t.shape[-2:], seed), margin)


@pytest.mark.parametrize("name", ["ranking", "warp"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(256, 28), (3, 40, 28), (16, 100)])
def test_equal_to_the_old_formula(name, dtype, shape):
    z, y = _random_case(shape, seed=len(shape) * 100 + shape[-1], dtype=dtype, p=0.15)
    margin, seed = 1.0, 2
    new = build(name, margin=margin, **({"seed": seed} if name == "warp" else {}))
    v, g = _value_and_grad(lambda t: new(t, y), z)
    ov, og = _value_and_grad(lambda t: _old(name, margin, seed)(t, y), z)
    tol = {"rtol": 1e-6, "atol": 1e-6} if dtype == torch.float32 else {"rtol": 1e-12, "atol": 1e-12}
    assert torch.allclose(v, ov, **tol)
    assert torch.allclose(g, og, **tol)
    assert (og != 0).any()  # the case has violating pairs


@pytest.mark.parametrize("name", ["ranking", "warp"])
def test_stacked_input_equals_each_slice(name):
    K, B, C = 3, 12, 9
    z, y3 = _random_case((K, B, C), seed=5)
    loss = build(name)
    for y in (y3, y3[1]):  # K x B x C targets, or B x C shared
        v, g = _value_and_grad(lambda t: loss(t, y), z)
        assert v.shape == (K,)
        for k in range(K):
            yk = y[k] if y.ndim == 3 else y
            vk, gk = _value_and_grad(lambda t: loss(t, yk), z[k])
            assert torch.allclose(v[k], vk, rtol=1e-12, atol=0)
            assert torch.allclose(g[k], gk, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("name", ["ranking", "warp"])
def test_examples_without_pairs_have_no_gradient(name):
    z, y = _random_case((6, 7), seed=9)
    _, g = _value_and_grad(lambda t: build(name)(t, y), z)
    assert torch.equal(g[:2], torch.zeros_like(g[:2]))  # no positive / no negative
    assert (g[2:] != 0).any()


@pytest.mark.parametrize("name", ["ranking", "warp"])
def test_bf16_logits_computed_in_float32(name):
    z, y = _random_case((32, 28), seed=3, dtype=torch.float32, p=0.15)
    zb = z.bfloat16()
    v, g = _value_and_grad(lambda t: build(name)(t, y), zb)
    v32, g32 = _value_and_grad(lambda t: build(name)(t, y), zb.float())
    assert v.dtype == torch.float32 and g.dtype == torch.bfloat16
    assert torch.equal(v, v32)
    assert torch.equal(g, g32.bfloat16())
    # and the old formula agrees on the same bf16 input
    ov, og = _value_and_grad(lambda t: _old(name, 1.0, 0)(t.float(), y), zb)
    assert torch.allclose(v, ov, rtol=1e-6) and torch.allclose(g.float(), og.float(), rtol=1e-2, atol=1e-6)


@pytest.mark.parametrize("name", ["ranking", "warp"])
def test_autocast_does_not_change_the_result(name):
    z, y = _random_case((64, 28), seed=8, dtype=torch.float32, p=0.15)
    loss = build(name)
    v, g = _value_and_grad(lambda t: loss(t, y), z)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        va, ga = _value_and_grad(lambda t: loss(t, y), z)
    assert torch.equal(v, va) and torch.equal(g, ga)


# --------------------------------------------------------------------------------------------
# bounded memory: blocks
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("lead,B,C,cap", [(1, 7, 5, 60), (1, 7, 5, 24), (3, 4, 6, 200), (3, 4, 6, 40), (2, 3, 9, 5)])
def test_pair_blocks_tile_the_grid_within_the_cap(monkeypatch, lead, B, C, cap):
    monkeypatch.setattr(losses, "PAIR_BLOCK_ELEMENTS", cap)
    blocks = losses._pair_blocks(lead, B, C)
    cells = [(b, i) for b0, b1, i0, i1 in blocks for b in range(b0, b1) for i in range(i0, i1)]
    assert cells == [(b, i) for b in range(B) for i in range(C)]  # each cell once, row-major
    for b0, b1, i0, i1 in blocks:
        assert lead * (b1 - b0) * (i1 - i0) * C <= max(cap, lead * C)


@pytest.mark.parametrize("name", ["ranking", "warp"])
@pytest.mark.parametrize("cap", [10_000, 2 * 3 * 9 * 9, 3 * 9 * 4, 1])
def test_blocks_give_the_same_values_and_gradients(monkeypatch, name, cap):
    # cap 10,000: one block; 2 examples of 3 stacked runs per block; one example in label chunks of 4;
    # cap 1: one label per block. Same keys (drawn whole or block by block, same numbers on CPU).
    z, y = _random_case((3, 10, 9), seed=12, p=0.4)
    v0, g0 = _value_and_grad(lambda t: build(name, margin=0.7)(t, y), z)
    monkeypatch.setattr(losses, "PAIR_BLOCK_ELEMENTS", cap)
    v, g = _value_and_grad(lambda t: build(name, margin=0.7)(t, y), z)
    assert torch.allclose(v, v0, rtol=1e-12, atol=0)
    assert torch.allclose(g, g0, rtol=1e-12, atol=1e-15)
    assert torch.autograd.gradcheck(lambda t: build(name)(t, y[0]), (z[0].detach().clone().requires_grad_(),),
                                    eps=1e-6, atol=1e-6)


def test_warp_keys_drawn_by_block_equal_one_draw(monkeypatch):
    B, C = 5, 7
    loss = build("warp", seed=3)
    whole = loss._keys(B, C, torch.device("cpu"))
    monkeypatch.setattr(losses, "PAIR_BLOCK_ELEMENTS", 2 * C)  # above the cap: drawn block by block
    blocks = losses._pair_blocks(1, B, C)
    assert len(blocks) > B
    for (b0, b1, i0, i1), order in zip(blocks, loss._block_keys(B, C, torch.device("cpu"), blocks)):
        assert torch.equal(order, whole[b0:b1, :, i0:i1])


def test_key_order_matches_the_keys():
    g = torch.Generator().manual_seed(0)
    keys = torch.rand((4, 6, 6), generator=g)
    keys[0, 0, 3] = keys[0, 0, 1]  # a tie: equal positions
    order = losses._key_order(keys)
    C = keys.shape[-1]
    for b in range(4):
        for i in range(6):
            for j in range(6):
                assert order[b, j, i].item() == C + sum(keys[b, i, k] < keys[b, i, j] for k in range(6))
    assert order[0, 3, 0] == order[0, 1, 0]


def test_warp_key_cache_is_bounded(monkeypatch):
    monkeypatch.setattr(losses, "PAIR_BLOCK_ELEMENTS", 1000)
    loss = build("warp")
    for B in range(1, 12):
        loss._keys(B, 9, torch.device("cpu"))
        assert sum(k.numel() for k in loss._key_cache.values()) <= 1000
