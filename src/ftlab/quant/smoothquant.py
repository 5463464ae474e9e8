"""SmoothQuant (Xiao et al. 2022): move activation outliers into the weights so both fit in int8.

In large LLMs a few input channels carry activations 10-100× larger than the rest, and
they do so for every token. With one int8 scale per activation tensor, those channels
set the step and the other channels round to a handful of levels. Weights, in contrast,
are tame. SmoothQuant divides channel j of the activation by

    s_j = max|X_j|^α / max|W_j|^(1−α)

and multiplies column j of the weight by s_j, so X Wᵀ is unchanged while the difficulty
is shared: α = 0 leaves activations alone, α = 1 moves all of it into the weights; the
paper uses α = 0.5 for most models (formula and α from the paper, §4; the clamp of both
scales at 1e-5 from mit-han-lab/smoothquant ``smoothquant/smooth.py``, ``smooth_ln_fcs``).
In a transformer the 1/s folds into the preceding LayerNorm, offline, for q/k/v and
up_proj (the same places as AWQ's scales).

Unlike AWQ, which only quantizes weights, SmoothQuant is for W8A8: both operands int8,
the matmul in integer units. :func:`w8a8_matmul` simulates it with per-tensor activation
scales and per-output-channel weight scales (the reference's ``fake_quant.py`` offers
these, among other granularities).
"""
from __future__ import annotations

import torch

from .common import Tensor, check_bits, check_float, check_pair, work_dtype
from .rtn import absmax_scale


def _check_alpha(alpha) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 <= alpha <= 1:
        raise ValueError(f"alpha must be a number in [0, 1], got {alpha!r}")
    return float(alpha)


def smooth_scales(
    act_absmax: Tensor, weight_absmax: Tensor, alpha: float = 0.5
) -> Tensor:
    """s_j = max|X_j|^α / max|W_j|^(1−α), per input channel j.

    Both maxima are clamped at 1e-5.
    """
    check_float("act_absmax", act_absmax)
    check_float("weight_absmax", weight_absmax)
    alpha = _check_alpha(alpha)
    if act_absmax.shape != weight_absmax.shape or act_absmax.dim() != 1:
        raise ValueError(
            f"act_absmax {tuple(act_absmax.shape)} and weight_absmax "
            f"{tuple(weight_absmax.shape)} must be 1-D and the same length"
        )
    s = act_absmax.clamp_min(1e-5).pow(alpha) / weight_absmax.clamp_min(1e-5).pow(
        1 - alpha
    )
    return s.clamp_min(1e-5)


def smooth(W: Tensor, X: Tensor, alpha: float = 0.5) -> tuple[Tensor, Tensor, Tensor]:
    """Return (W · diag(s), X · diag(s)⁻¹, s) for W (out, in) and X (n, in); X Wᵀ is unchanged."""
    check_pair(W, X)
    s = smooth_scales(X.detach().abs().amax(dim=0), W.detach().abs().amax(dim=0), alpha)
    return W * s[None, :], X / s[None, :], s


def w8a8_matmul(X: Tensor, W: Tensor, bits: int = 8) -> Tensor:
    """Fake-quantized X Wᵀ: X with one absmax scale per tensor, W with one per output channel (row).

    Integer grid −(2^(b−1)−1)..(2^(b−1)−1), −127..127 at 8 bit. Returns float (n, out).
    """
    check_pair(W, X)
    check_bits(bits)
    dt = work_dtype(X)
    X, W = X.to(dt), W.to(dt)
    qmax = 2 ** (bits - 1) - 1
    sx = absmax_scale(X, bits, dim=None)                             # scalar
    sw = absmax_scale(W, bits, dim=1)                                # (out, 1)
    qx = torch.clamp(torch.round(X / sx), -qmax, qmax)
    qw = torch.clamp(torch.round(W / sw), -qmax, qmax)
    # Integer matmul (float64 keeps the int32-style accumulation exact), then both scales.
    acc = qx.double() @ qw.double().T                                # (n, out)
    return (acc * (sx * sw.T).double()).to(dt)
