"""LLM.int8() (Dettmers et al. 2022): int8 matmul with the outlier features kept in 16 bit.

At around 6.7B parameters the paper sees a phase shift: a handful of hidden dimensions
carry values of magnitude 6 and more (its outlier threshold, α = 6.0) in every layer and
in most tokens. A per-tensor absmax scale sized for them crushes every other value.
LLM.int8() splits the product:

* feature columns of x (n, in) that hold any |value| ≥ threshold, and the matching input
  columns of W (out, in), are multiplied in full precision;
* everything else is int8 with vector-wise scales: one per row of x (per token) and
  one per output channel of W (a row of W in PyTorch's (out, in) layout, a column of
  the paper's Wᵀ), so each dot product rescales by (row scale × output scale).

The paper keeps more than 99.9% of the values in the 8-bit part, so the 16-bit part is small.
"""
from __future__ import annotations

import torch

from .common import Tensor, check_pair, work_dtype
from .rtn import absmax_scale

_QMAX = 127   # int8 absmax grid −127..127 (LLM.int8() §3, absmax quantization)


def _check_threshold(threshold) -> float:
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not threshold > 0:
        raise ValueError(f"threshold must be a positive number, got {threshold!r}")
    return float(threshold)


def _int8_product(x: Tensor, W: Tensor, sx: Tensor, sw: Tensor) -> Tensor:
    qx = torch.clamp(torch.round(x / sx), -_QMAX, _QMAX)
    qw = torch.clamp(torch.round(W / sw), -_QMAX, _QMAX)
    acc = qx.double() @ qw.double().T      # exact, as an int32 accumulator would be
    # sx is a scalar or (n, 1); sw a scalar or (out, 1), which lines up with acc's columns.
    return acc * sx.double() * sw.double().reshape(1, -1)


def int8_absmax_matmul(x: Tensor, W: Tensor) -> Tensor:
    """x Wᵀ with x and W each int8 with a single absmax scale per tensor: the naive baseline."""
    check_pair(W, x)
    dt = work_dtype(x)
    x, W = x.to(dt), W.to(dt)
    return _int8_product(x, W, absmax_scale(x, 8, dim=None), absmax_scale(W, 8, dim=None)).to(dt)


def int8_vectorwise_matmul(x: Tensor, W: Tensor) -> Tensor:
    """x Wᵀ in int8 with one scale per row of x and one per output channel of W (no outlier split)."""
    check_pair(W, x)
    dt = work_dtype(x)
    x, W = x.to(dt), W.to(dt)
    return _int8_product(x, W, absmax_scale(x, 8, dim=1), absmax_scale(W, 8, dim=1)).to(dt)


def outlier_features(x: Tensor, threshold: float = 6.0) -> Tensor:
    """Boolean mask over the in-features of x (n, in): True where any |x[:, j]| ≥ threshold."""
    threshold = _check_threshold(threshold)
    return (x.abs() >= threshold).any(dim=0)


def int8_outlier_matmul(x: Tensor, W: Tensor, threshold: float = 6.0) -> Tensor:
    """LLM.int8(): outlier feature columns in full precision, the rest vector-wise int8.

    Returns x Wᵀ (n, out).
    """
    check_pair(W, x)
    threshold = _check_threshold(threshold)
    dt = work_dtype(x)
    x, W = x.to(dt), W.to(dt)
    out_mask = outlier_features(x, threshold)
    y = x[:, out_mask] @ W[:, out_mask].T  # (n, out), full precision
    keep = ~out_mask
    if keep.any():
        y = y + int8_vectorwise_matmul(x[:, keep], W[:, keep])
    return y
