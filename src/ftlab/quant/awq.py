"""AWQ (Lin et al. 2023): protect the weights that meet large activations by scaling them up first.

A weight's rounding error reaches the output multiplied by its input. So input channels
with large mean |x| ("salient" channels) matter most. AWQ multiplies those columns of W by
s_j > 1 before quantizing and divides the input by s_j, which leaves the float layer
unchanged: (W·diag(s)) (diag(s)⁻¹ x) = W x. A bigger column keeps about the same rounding
step (the step is set by the group's largest weight), so its error relative to its size
shrinks by about s_j.

The scales are s = mean|x|^α with one α per layer, chosen on a grid α ∈ {0, 1/n, …, (n−1)/n}
(n_grid = 20) to minimise the output error of the scaled-then-quantized layer, and
normalised by sqrt(max(s)·min(s)), as in llm-awq ``awq/quantize/auto_scale.py``
(``_search_module_scale``).

What we implement from the paper: the activation-aware scale search. What we leave out:
the second step, the weight-clipping search (llm-awq ``auto_clip.py``), which shrinks each
group's max before quantizing; it adds a little on top of the scales.

Where the scales go in a transformer (llm-awq ``apply_scale``), so inference pays nothing:

* q_proj/k_proj/v_proj share one input, the output of ``ln_1``; dividing the LayerNorm's
  weight and bias by s does the diag(s)⁻¹ for free. Likewise ``ln_2`` absorbs up_proj's s.
* o_proj's input is the attention mix of v, linear in v_proj's output, so its s folds into
  the rows of v_proj (when their shapes match, as in TinyGPT).
* down_proj's input is GELU(up_proj(x)). GELU(z/s) ≠ GELU(z)/s, so the scale cannot move
  into up_proj; llm-awq wraps the activation in ``ScaledActivation``, an explicit divide.
  (In a Llama SwiGLU MLP it can fold, into up_proj's rows, since act(gate)·up is linear in up.)
"""
from __future__ import annotations

import torch

from .common import Tensor, check_bits, check_matrix, check_pair, check_positive_int, work_dtype
from .rtn import GroupSize, check_group_size, rtn_quantize


def awq_apply(W: Tensor, scales: Tensor, bits: int, group_size: GroupSize = None,
              symmetric: bool = False) -> Tensor:
    """Q(W · diag(s)) · diag(s)⁻¹: quantize the scaled weight, then undo the scale; returns (out, in)."""
    check_matrix("W", W)
    if not isinstance(scales, torch.Tensor) or scales.dim() != 1 or scales.numel() != W.shape[1]:
        raise ValueError(f"scales must be 1-D with {W.shape[1]} entries (one per input channel), "
                         f"got {getattr(scales, 'shape', scales)!r}")
    if not (scales > 0).all():
        raise ValueError("scales must be positive")
    s = scales.to(W.dtype)[None, :]
    return rtn_quantize(W * s, bits, group_size, symmetric) / s


def awq_scales(
    W: Tensor,
    X: Tensor,
    bits: int,
    group_size: GroupSize = None,
    n_grid: int = 20,
    symmetric: bool = False,
) -> tuple[Tensor, float]:
    """Search α on the grid and return (per-input-channel scales s, best α).

    Error measured as the mean squared difference between X Ŵᵀ and X Wᵀ. ``symmetric``
    defaults to False, like llm-awq (``zero_point=True``); α = 0 gives s = 1, plain RTN,
    so the search never does worse than RTN on the calibration set.
    """
    check_pair(W, X)
    check_bits(bits)
    group_size = check_group_size(group_size, W.shape[1])
    check_positive_int("n_grid", n_grid)
    dt = work_dtype(W)
    W, X = W.detach().to(dt), X.detach().to(dt)
    x_mean = X.abs().mean(dim=0)                                      # (in,)
    Y = X @ W.T                                                       # (n, out)
    best = (float("inf"), None, None)
    for k in range(n_grid):
        alpha = k / n_grid
        s = x_mean.pow(alpha).clamp_min(1e-4)  # floor 1e-4 and the normalisation below:
        s = s / (s.max() * s.min()).sqrt()              # llm-awq auto_scale.py
        err = (
            (X @ awq_apply(W, s, bits, group_size, symmetric).T - Y)
            .pow(2)
            .mean()
            .item()
        )
        if err < best[0]:
            best = (err, s, alpha)
    return best[1], best[2]


def awq_quantize(W: Tensor, X: Tensor, bits: int, group_size: GroupSize = None, n_grid: int = 20,
                 symmetric: bool = False) -> Tensor:
    """Search AWQ scales on X, apply them, and return the dequantized (out, in) weight."""
    s, _ = awq_scales(W, X, bits, group_size, n_grid, symmetric)
    return awq_apply(W.to(s.dtype), s, bits, group_size, symmetric).to(W.dtype)
