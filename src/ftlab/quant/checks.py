"""Checkers for the quantization chapter's exercises: they test what your function does.

Each raises ``AssertionError`` with a hint on the first failure and prints one line on success.
"""
from __future__ import annotations

import torch

from .gguf import LAYOUTS
from .rtn import rtn_quantize


def _ok(msg: str) -> None:
    print(f"✓ {msg}")


def check_absmax_int8(fn) -> None:
    """``fn(x) -> (q int8 tensor, scale float)``: symmetric absmax int8 over the whole tensor."""
    g = torch.Generator().manual_seed(0)
    cases = [torch.tensor([0.5, -1.27, 0.01, 1.0]), torch.randn(1000, generator=g) * 3, torch.zeros(4) + 2.0]
    for x in cases:
        q, scale = fn(x.clone())
        assert isinstance(q, torch.Tensor) and q.dtype == torch.int8, f"q must be an int8 tensor, got {getattr(q, 'dtype', type(q))}"
        assert q.shape == x.shape, f"q has shape {tuple(q.shape)}, expected {tuple(x.shape)}"
        want_scale = x.abs().max().item() / 127
        assert abs(float(scale) - want_scale) <= 1e-6 * max(1.0, want_scale), (
            f"scale should be max|x|/127 = {want_scale:.6g}, got {float(scale):.6g}")
        want_q = torch.round(x / want_scale).clamp(-127, 127).to(torch.int8)
        assert torch.equal(q, want_q), "q should be round(x / scale), clamped to -127..127"
        assert q.abs().max().item() == 127, "the largest |x| must map to ±127"
    _ok("absmax int8: scale = max|x|/127, q = round(x/scale)")


def check_group_rtn(fn) -> None:
    """``fn(w, bits, group_size) -> dequantized w``: symmetric absmax RTN, one scale per group of columns."""
    g = torch.Generator().manual_seed(1)
    w = torch.randn(8, 64, generator=g) * torch.rand(1, 64, generator=g) * 2
    for bits in (8, 4, 3):
        for group_size in (64, 16, 8):
            got = fn(w.clone(), bits, group_size)
            assert isinstance(got, torch.Tensor) and got.shape == w.shape, (
                f"return the dequantized weight of shape {tuple(w.shape)}")
            want = rtn_quantize(w, bits, group_size, symmetric=True)
            err = (got - want).abs().max().item()
            assert err < 1e-5, (f"bits={bits}, group_size={group_size}: differs from absmax RTN by {err:.3g}; "
                                f"each row's groups of {group_size} columns need their own max|w|/(2^(bits-1)-1)")
    _ok("per-group RTN matches ftlab.quant.rtn_quantize at 8/4/3 bits, groups of 64/16/8")


def check_bits_per_weight(fn) -> None:
    """``fn(block_weights, field_bytes) -> float``: bits per weight of a block layout."""
    for lay in LAYOUTS.values():
        got = float(fn(lay.block_weights, [b for _, b in lay.fields]))
        assert abs(got - lay.bits_per_weight) < 1e-9, (
            f"{lay.name}: {lay.block_weights} weights in {lay.block_bytes} bytes is "
            f"{lay.bits_per_weight} bits per weight, got {got}")
    got = float(fn(64, [4, 32]))   # NF4 with one fp32 absmax per 64 weights
    assert abs(got - 4.5) < 1e-9, f"NF4 blocks of 64 with an fp32 absmax: expected 4.5, got {got}"
    _ok("bits per weight: Q8_0 8.5, Q4_0 4.5, Q4_K 4.5, NF4 (block 64, fp32 absmax) 4.5")
