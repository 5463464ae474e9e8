"""NF4, the 4-bit NormalFloat of QLoRA, with blockwise absmax scaling and double quantization.

QLoRA (Dettmers et al. 2023, §3) stores a frozen base weight as 4-bit codes into a fixed
16-value table, with one absmax scale per block of 64 weights. The table is not evenly
spaced: its values sit at quantiles of a standard normal, so each code covers roughly
the same share of normally distributed weights. We build the table the way bitsandbytes
does (``create_normal_map`` in ``bitsandbytes/functional.py``) and the test compares it
with the table bitsandbytes hard-codes in ``get_4bit_type("nf4")``.

Double quantization (same paper, §3) then squeezes the absmax constants: the fp32 scales
cost 32/64 = 0.5 bit per weight; 8-bit scales in blocks of 256, plus one fp32 per block,
cost 8/64 + 32/(64·256) ≈ 0.127 bit.

A later ``NF4Linear`` holds an :class:`NF4Weight` and calls ``dequantize()`` in forward.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import Optional

import torch

from .common import Tensor, check_divides, check_float, check_positive_int
from .rtn import rtn_quantize

# bitsandbytes' create_normal_map default. The 8 positive codes are normal quantiles at
# probabilities evenly spaced from this offset down to 0.5; the offset is chosen so that
# after dividing by the largest value the table ends exactly at ±1.
NF4_OFFSET = 0.9677083


def nf4_codebook(offset: float = NF4_OFFSET) -> Tensor:
    """The 16 NF4 values in [-1, 1], ascending: 7 negative, an exact 0, 8 positive.

    Asymmetric on purpose: with 16 codes, a symmetric table either loses the exact zero
    or wastes a code on a second zero, so bitsandbytes gives the extra code to the
    positive side. ``statistics.NormalDist().inv_cdf`` stands in for scipy's
    ``norm.ppf``.
    """
    if not isinstance(offset, (int, float)) or not 0.5 < offset < 1.0:
        raise ValueError(f"offset must be a probability in (0.5, 1), got {offset!r}")
    ppf = NormalDist().inv_cdf

    def probs(
        n: int,
    ) -> list[float]:  # n points from offset to 0.5, the last (0.5) dropped
        return [offset + (0.5 - offset) * i / (n - 1) for i in range(n - 1)]

    pos = [ppf(p) for p in probs(9)]     # 8 positive quantiles
    neg = [-ppf(p) for p in probs(8)]    # 7 negative quantiles
    values = sorted(pos + [0.0] + neg)
    top = max(values)
    return torch.tensor([v / top for v in values], dtype=torch.float32)


def fp4_e2m1_values() -> Tensor:
    """The 16 FP4 E2M1 values (1 sign, 2 exponent, 1 mantissa bit), ascending, both zeros kept.

    Magnitudes 0, 0.5, 1, 1.5, 2, 3, 4, 6, as the OCP Microscaling (MX) spec v1.0 defines
    E2M1. Divide by 6 to use it as an absmax codebook. bitsandbytes' own "fp4" table
    (``get_4bit_type("fp4")``) is a different E2M1 variant: 0, 0.0625, 2, 3, 4, 6, 8, 12
    before normalisation, so the two differ near zero.
    """
    mags = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0]
    return torch.tensor([-m for m in reversed(mags)] + mags, dtype=torch.float32)


def _check_codebook(codebook) -> Tensor:
    check_float("codebook", codebook)
    if codebook.dim() != 1 or not 2 <= codebook.numel() <= 256:
        raise ValueError(f"codebook must be 1-D with 2..256 values, got shape {tuple(codebook.shape)}")
    if (codebook[1:] < codebook[:-1]).any():
        raise ValueError("codebook must be sorted ascending")
    return codebook


def quantize_blockwise(w: Tensor, codebook: Tensor, block_size: int = 64) -> tuple[Tensor, Tensor]:
    """Flatten w, scale each block of ``block_size`` by its absmax, pick the nearest codebook entry.

    Returns (codes uint8 of shape (numel,), absmax float32 of shape (numel // block_size,)).
    """
    check_float("w", w)
    _check_codebook(codebook)
    check_divides("block_size", block_size, w.numel(), "w.numel()")
    blocks = w.detach().reshape(-1, block_size).float()             # (n_blocks, block_size)
    absmax = blocks.abs().amax(dim=1)                                 # (n_blocks,)
    normed = blocks / absmax.clamp_min(torch.finfo(torch.float32).tiny)[:, None]
    cb = codebook.float()
    # Nearest code = which pair of neighbours' midpoint the value falls between.
    codes = torch.bucketize(normed, (cb[1:] + cb[:-1]) / 2)
    return codes.reshape(-1).to(torch.uint8), absmax


def dequantize_blockwise(codes: Tensor, absmax: Tensor, codebook: Tensor, shape,
                         block_size: int = 64) -> Tensor:
    """Inverse of :func:`quantize_blockwise`: codebook[code] · absmax of its block, reshaped to ``shape``."""
    _check_codebook(codebook)
    n = math.prod(shape)
    check_divides("block_size", block_size, n, "numel of shape")
    if codes.numel() != n:
        raise ValueError(f"codes has {codes.numel()} entries but shape {tuple(shape)} needs {n}")
    if absmax.numel() != n // block_size:
        raise ValueError(f"absmax has {absmax.numel()} entries, expected {n // block_size} "
                         f"(one per block of {block_size})")
    vals = codebook.float()[codes.reshape(-1, block_size).long()]    # (n_blocks, block_size)
    return (vals * absmax.float().reshape(-1, 1)).reshape(shape)


def quantize_nf4(w: Tensor, block_size: int = 64) -> tuple[Tensor, Tensor]:
    """NF4 codes (uint8, one per weight, flattened) and one fp32 absmax per block of ``block_size``."""
    return quantize_blockwise(w, nf4_codebook(), block_size)


def dequantize_nf4(codes: Tensor, absmax: Tensor, shape, block_size: int = 64) -> Tensor:
    """Rebuild the float32 weight of ``shape`` from NF4 codes and block absmax."""
    return dequantize_blockwise(codes, absmax, nf4_codebook(), shape, block_size)


def pack_4bit(codes: Tensor) -> Tensor:
    """Two 4-bit codes per byte (first in the high nibble); an odd count is padded with a 0 nibble."""
    if codes.dtype != torch.uint8:
        raise TypeError(f"codes must be uint8, got {codes.dtype}")
    if codes.numel() and int(codes.max()) > 15:
        raise ValueError(f"4-bit codes must be in 0..15, got max {int(codes.max())}")
    flat = codes.reshape(-1)
    if flat.numel() % 2:
        flat = torch.cat([flat, flat.new_zeros(1)])
    return (flat[0::2] << 4) | flat[1::2]


def unpack_4bit(packed: Tensor, n: int) -> Tensor:
    """Inverse of :func:`pack_4bit`, keeping the first ``n`` codes."""
    if packed.dtype != torch.uint8:
        raise TypeError(f"packed must be uint8, got {packed.dtype}")
    if not 0 <= n <= 2 * packed.numel():
        raise ValueError(f"n={n} codes cannot come from {packed.numel()} bytes")
    return torch.stack([packed >> 4, packed & 15], dim=1).reshape(-1)[:n]


@dataclass
class DoubleQuant:
    """Absmax constants stored in 8 bit: codes (int8), one fp32 scale per block, one fp32 mean."""
    codes: Tensor         # (n,) int8
    scales: Tensor        # (ceil(n / block_size),) float32
    offset: float         # the mean subtracted before quantizing
    block_size: int = 256


def double_quantize(absmax: Tensor, block_size: int = 256) -> DoubleQuant:
    """Quantize the NF4 absmax constants to 8 bit in blocks of ``block_size``, mean removed first.

    Absmax values are all positive, so centring them on their mean lets a symmetric grid
    use both halves (QLoRA §3; bitsandbytes ``quantize_4bit(compress_statistics=True)``
    subtracts ``absmax.mean()`` the same way). One difference: bitsandbytes quantizes the
    centred values with its 8-bit "dynamic" float map; we use a linear absmax int8 grid
    (−127..127), which is simpler to read and costs the same 8 bits. The last block may
    be shorter than ``block_size``, as in bitsandbytes.
    """
    check_float("absmax", absmax)
    if absmax.dim() != 1 or absmax.numel() == 0:
        raise ValueError(f"absmax must be a non-empty 1-D tensor, got shape {tuple(absmax.shape)}")
    check_positive_int("block_size", block_size)
    a = absmax.detach().float()
    offset = a.mean()
    c = a - offset
    n = c.numel()
    pad = (-n) % block_size
    blocks = torch.cat([c, c.new_zeros(pad)]).reshape(-1, block_size)
    scales = blocks.abs().amax(dim=1).clamp_min(torch.finfo(torch.float32).tiny) / 127
    codes = torch.round(blocks / scales[:, None]).clamp(-127, 127).to(torch.int8)
    return DoubleQuant(codes.reshape(-1)[:n], scales, float(offset), block_size)


def double_dequantize(dq: DoubleQuant) -> Tensor:
    """Recover the fp32 absmax constants from a :class:`DoubleQuant`."""
    n = dq.codes.numel()
    idx = torch.arange(n) // dq.block_size
    return dq.codes.float() * dq.scales[idx] + dq.offset


def constants_bits_per_param(block_size: int = 64, double_quant: bool = False,
                             dq_block_size: int = 256) -> float:
    """Bits per weight spent on scales: 32/block_size, or 8/block_size + 32/(block_size·dq_block_size).

    Defaults give QLoRA's 0.5 → 0.127 (the single fp32 mean per tensor is left out, as in
    the paper's count).
    """
    check_positive_int("block_size", block_size)
    check_positive_int("dq_block_size", dq_block_size)
    if not double_quant:
        return 32 / block_size
    return 8 / block_size + 32 / (block_size * dq_block_size)


@dataclass
class NF4Weight:
    """A frozen weight held as packed NF4 codes plus its scales; ``dequantize()`` rebuilds it on the fly."""
    packed: Tensor                      # (ceil(numel / 2),) uint8, two codes per byte
    absmax: Optional[Tensor]            # (numel // block_size,) float32, or None when double-quantized
    absmax_dq: Optional[DoubleQuant]    # the 8-bit form of absmax, or None
    shape: tuple
    block_size: int = 64
    dtype: torch.dtype = torch.float32  # dtype dequantize() returns

    @classmethod
    def from_float(cls, w: Tensor, block_size: int = 64, double_quant: bool = False,
                   dq_block_size: int = 256) -> "NF4Weight":
        codes, absmax = quantize_nf4(w, block_size)
        dq = double_quantize(absmax, dq_block_size) if double_quant else None
        return cls(pack_4bit(codes), None if double_quant else absmax, dq,
                   tuple(w.shape), block_size, w.dtype)

    def scales(self) -> Tensor:
        return double_dequantize(self.absmax_dq) if self.absmax_dq is not None else self.absmax

    def dequantize(self) -> Tensor:
        n = math.prod(self.shape)
        codes = unpack_4bit(self.packed, n)
        return dequantize_nf4(codes, self.scales(), self.shape, self.block_size).to(self.dtype)

    @property
    def nbytes(self) -> int:
        """Bytes actually held: packed codes + scales (+ the 8-bit scales' own scales and mean)."""
        b = self.packed.numel()
        if self.absmax_dq is None:
            return b + 4 * self.absmax.numel()
        return b + self.absmax_dq.codes.numel() + 4 * self.absmax_dq.scales.numel() + 4

    @property
    def bits_per_param(self) -> float:
        return 8 * self.nbytes / math.prod(self.shape)


def int4_codebook() -> Tensor:
    """The two's-complement 4-bit integers −8..7 divided by 8: an absmax table with 16 levels.

    With one absmax per block, this grid is lopsided: −absmax is a code, +absmax is not
    (the top code is 7/8), which is the price of an exact zero plus all 16 codes.
    """
    return torch.arange(-8, 8, dtype=torch.float32) / 8


def compare_4bit_formats(w: Tensor, block_size: int = 64) -> dict[str, float]:
    """MSE of 4-bit formats on ``w``, blockwise over the flattened tensor.

    Same storage, different tables (one absmax per block of ``block_size``):
    ``nf4``; ``int4`` (−8..7, 16 levels, see :func:`int4_codebook`); ``int4_sym`` (−7..7,
    the 15-level symmetric grid); ``fp4`` (E2M1 / 6). Plus ``int4_minmax``: the 16-level
    zero-point grid, which stores two constants per block (scale and zero), so it pays
    for its lower error with extra bits. On N(0, 1) weights at block 64 (seeded, 2^20
    samples; ``tests/test_quant.py``): nf4 ≈ 0.0085 < int4 ≈ 0.0099 < int4_sym ≈ 0.0116,
    fp4 ≈ 0.0112, int4_minmax ≈ 0.0083.
    """
    check_float("w", w)
    check_divides("block_size", block_size, w.numel(), "w.numel()")
    w = w.detach().float()
    out = {}
    tables = (("nf4", nf4_codebook()), ("int4", int4_codebook()),
              ("int4_sym", torch.arange(-7, 8, dtype=torch.float32) / 7), ("fp4", fp4_e2m1_values() / 6))
    for name, cb in tables:
        codes, absmax = quantize_blockwise(w, cb, block_size)
        out[name] = (dequantize_blockwise(codes, absmax, cb, w.shape, block_size) - w).pow(2).mean().item()
    blocks = w.reshape(-1, block_size)
    out["int4_minmax"] = (rtn_quantize(blocks, 4, symmetric=False) - blocks).pow(2).mean().item()
    return out
