"""FP8 E4M3: 1 sign, 4 exponent, 3 mantissa bits, largest finite value 448.

The "fn" variant (``torch.float8_e4m3fn``; the E4M3 of the OCP 8-bit floating point
spec, 2023) has no infinities and one NaN pattern, which frees codes for a range up to
±448. Three mantissa bits mean a relative rounding error of at most 2^-4 = 6.25% for
normal numbers. The range is small, so a tensor is divided by a scale first: here one
per tensor, max|x| / 448, so the largest value lands on the largest finite code.
Casting a value beyond ±448 to this dtype gives NaN rather than saturating, hence the
clamp before the cast.
"""
from __future__ import annotations

import torch

from .common import Tensor, check_float

FP8_E4M3_MAX = 448.0   # = torch.finfo(torch.float8_e4m3fn).max


def quantize_fp8(x: Tensor) -> tuple[Tensor, Tensor]:
    """Scale x by max|x|/448 and cast it to FP8.

    Returns (x8 in float8_e4m3fn, scale float32 scalar).
    """
    check_float("x", x)
    xf = x.detach().float()
    scale = (xf.abs().amax() / FP8_E4M3_MAX).clamp_min(torch.finfo(torch.float32).tiny)
    x8 = (xf / scale).clamp(-FP8_E4M3_MAX, FP8_E4M3_MAX).to(torch.float8_e4m3fn)
    return x8, scale


def dequantize_fp8(x8: Tensor, scale: Tensor) -> Tensor:
    """x8 · scale, as float32."""
    if x8.dtype != torch.float8_e4m3fn:
        raise TypeError(f"x8 must be torch.float8_e4m3fn, got {x8.dtype}")
    return x8.float() * scale


def fp8_roundtrip(x: Tensor) -> Tensor:
    """Quantize to FP8 E4M3 with a per-tensor scale and back, in x's dtype."""
    return dequantize_fp8(*quantize_fp8(x)).to(x.dtype)
