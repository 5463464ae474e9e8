"""Round-to-nearest (RTN): the baseline every smarter weight quantizer is measured against.

Two ways to put a grid on a range of numbers:

* **absmax (symmetric)**: step = max|x| / (2^(b-1) − 1), integers −(2^(b-1)−1)..(2^(b-1)−1).
  Zero is exact and no zero-point is stored, but one code is left unused: at 4 bit this
  *restricted* grid has 15 levels, −7..7. Other symmetric formats keep all 16 codes with a
  lopsided range: GPTQ's ``sym=True`` (zero point fixed at 8, step 2·absmax/15) and
  llama.cpp's Q4_0 (−8..7, see ``gguf.py``).
* **zero-point (asymmetric)**: step = (max − min) / (2^b − 1), integers 0..2^b − 1 shifted by a
  stored zero-point. All 2^b levels are used and a lopsided range wastes none of them.

Granularity is the other knob: one scale per tensor, per output channel (a row of the
(out, in) weight) or per group of ``group_size`` input columns within a row. Finer
granularity costs more stored scales and gives lower error.

The asymmetric range is widened to include 0 so that 0 stays exactly representable, as
GPTQ's reference quantizer does (IST-DASLab/gptq ``quant.py``, ``find_params``).
"""
from __future__ import annotations

from typing import Optional, Union

import torch

from .common import Tensor, check_bits, check_divides, check_float, check_matrix, work_dtype

GroupSize = Union[None, int, str]


def absmax_scale(x: Tensor, bits: int, dim: Optional[int] = -1) -> Tensor:
    """Symmetric step size: max|x| / (2^(bits-1) − 1) along ``dim`` (kept).

    If dim is None, the max is taken over all of x.
    """
    check_float("x", x)
    check_bits(bits)
    amax = x.abs().amax() if dim is None else x.abs().amax(dim=dim, keepdim=True)
    qmax = 2 ** (bits - 1) - 1
    # An all-zero slice gets a tiny step instead of 0, so x / step stays finite (and 0).
    return amax.clamp_min(torch.finfo(amax.dtype).tiny) / qmax


def zeropoint_params(
    x: Tensor, bits: int, dim: Optional[int] = -1
) -> tuple[Tensor, Tensor]:
    """Asymmetric (scale, zero), with the range widened to hold 0.

    scale = (max − min)/(2^bits − 1), zero = round(−min/scale).
    """
    check_float("x", x)
    check_bits(bits)
    if dim is None:
        lo, hi = x.amin(), x.amax()
    else:
        lo, hi = x.amin(dim=dim, keepdim=True), x.amax(dim=dim, keepdim=True)
    lo, hi = lo.clamp(max=0), hi.clamp(min=0)
    scale = ((hi - lo) / (2 ** bits - 1)).clamp_min(torch.finfo(x.dtype).tiny)
    zero = torch.round(-lo / scale)
    return scale, zero


def quant_params(x: Tensor, bits: int, symmetric: bool, dim: Optional[int] = -1) -> tuple[Tensor, Tensor]:
    """(scale, zero) for either grid; a symmetric grid has zero = 0."""
    if symmetric:
        scale = absmax_scale(x, bits, dim)
        return scale, torch.zeros_like(scale)
    return zeropoint_params(x, bits, dim)


def grid_limits(bits: int, symmetric: bool) -> tuple[int, int]:
    """Smallest and largest integer code: (−(2^(b-1)−1), 2^(b-1)−1) symmetric, (0, 2^b − 1) asymmetric."""
    check_bits(bits)
    if symmetric:
        return -(2 ** (bits - 1) - 1), 2 ** (bits - 1) - 1
    return 0, 2 ** bits - 1


def quantize_to_int(x: Tensor, scale: Tensor, zero: Tensor, bits: int, symmetric: bool) -> Tensor:
    """Integer codes clamp(round(x/scale) + zero) on the grid (kept in x's float dtype)."""
    lo, hi = grid_limits(bits, symmetric)
    return torch.clamp(torch.round(x / scale) + zero, lo, hi)


def dequantize_int(q: Tensor, scale: Tensor, zero: Tensor) -> Tensor:
    """Back to real numbers: (q − zero) · scale."""
    return (q - zero) * scale


def fake_quantize(x: Tensor, scale: Tensor, zero: Tensor, bits: int, symmetric: bool) -> Tensor:
    """Quantize then dequantize with given parameters: what the layer will compute with."""
    return dequantize_int(quantize_to_int(x, scale, zero, bits, symmetric), scale, zero)


def check_group_size(group_size: GroupSize, n_in: int) -> GroupSize:
    """None (per output channel), "tensor" (one scale), or an int that divides the input width."""
    if group_size is None or group_size == "tensor":
        return group_size
    if isinstance(group_size, str):
        raise ValueError(f'group_size must be None, "tensor" or a positive int, got {group_size!r}')
    return check_divides("group_size", group_size, n_in, "in_features")


def rtn_quantize(w: Tensor, bits: int, group_size: GroupSize = None, symmetric: bool = True) -> Tensor:
    """Round each weight to the nearest grid point; returns the dequantized (out, in) weight.

    ``group_size``: None = one scale per output channel (row), int g = one per g input
    columns of a row, ``"tensor"`` = one scale for the whole matrix. ``symmetric``: absmax
    grid with 2^(b-1)·2 − 1 levels (15 at 4 bit); False: zero-point grid with all 2^b.
    """
    check_matrix("w", w)
    check_bits(bits)
    group_size = check_group_size(group_size, w.shape[1])
    x = w.to(work_dtype(w))
    out_f, in_f = x.shape
    if group_size == "tensor":
        scale, zero = quant_params(x, bits, symmetric, dim=None)
        q = fake_quantize(x, scale, zero, bits, symmetric)
    elif group_size is None:
        scale, zero = quant_params(x, bits, symmetric, dim=1)
        q = fake_quantize(x, scale, zero, bits, symmetric)
    else:
        g = x.reshape(out_f, in_f // group_size, group_size)        # (out, n_groups, g)
        scale, zero = quant_params(g, bits, symmetric, dim=2)
        q = fake_quantize(g, scale, zero, bits, symmetric).reshape(out_f, in_f)
    return q.to(w.dtype)
