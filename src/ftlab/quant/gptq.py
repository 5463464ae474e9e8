"""GPTQ (Frantar et al. 2022): quantize a weight one column at a time and let the rest absorb the error.

The layer's output error for calibration inputs X (n, in) is ‖(W − Ŵ) Xᵀ‖², a quadratic
in each row of W with Hessian H = 2XᵀX (we divide by n, as the reference's ``add_batch``
does; the scale cancels out). Quantizing column q leaves an error e = w_q − ŵ_q, and the
Optimal Brain Surgeon update moves the not-yet-quantized columns by
−e · H⁻¹[q, rest] / H⁻¹[q, q], where H⁻¹ is the inverse Hessian of the columns still free.
GPTQ's two tricks make this fast and stable:

* quantize columns in a fixed order, so every row shares the same H⁻¹ sequence, and read
  it off the upper Cholesky factor U of H⁻¹: row q of U, divided by U[q, q], is exactly
  H⁻¹[q, q:] / H⁻¹[q, q] after columns < q are gone;
* lazy batches: apply the updates inside a block of ``block_size`` columns at once and
  push the block's accumulated error to later columns with one matrix product.

Details as in the reference (IST-DASLab/gptq ``gptq.py``, ``fasterquant``): lazy blocks of
128 columns by default, damping by ``damp`` (1%, ``percdamp=.01``) of the mean diagonal of H, dead inputs (H[i, i] = 0) get H[i, i] = 1 and
weight 0, and per-channel scales are fixed from the original W before the sweep.

``act_order=True`` is the reference's ``--act-order`` (``desc_act`` in GPTQConfig, AutoGPTQ
and GPTQModel): quantize the columns in order of decreasing H[i, i], the inputs with the
largest energy first, while many columns are still free to absorb their error; then undo
the permutation. With groups, a group is a run of g columns *in that order*, so a packed
checkpoint must store each column's group index (``g_idx``).
"""
from __future__ import annotations

import torch

from .common import Tensor, check_bits, check_pair, check_positive_int, work_dtype
from .rtn import GroupSize, check_group_size, fake_quantize, quant_params


def gptq_hessian(X: Tensor) -> Tensor:
    """H = 2 XᵀX / n for calibration inputs X (n, in): the Hessian of the mean squared output error."""
    return 2 * X.T @ X / X.shape[0]


def gptq_quantize(W: Tensor, X: Tensor, bits: int, group_size: GroupSize = None,
                  block_size: int = 128, damp: float = 0.01, symmetric: bool = False,
                  act_order: bool = False) -> Tensor:
    """GPTQ-quantize W (out, in) using calibration inputs X (n, in).

    Returns the dequantized weight.
    ``group_size``: None = one scale per output row, fixed before the sweep; int g = new
    scales for each run of g input columns, computed when the group starts from the
    weights as they are then, error updates included. ``symmetric`` defaults to False,
    the reference's default (its ``--sym`` flag is off); pass the same value to
    ``rtn_quantize`` when comparing the two. ``act_order``: quantize columns by
    decreasing Hessian diagonal.

    One deliberate difference from the reference: when a group starts inside a lazy
    block, the reference reads the group from the full matrix, which does not yet hold
    the updates from earlier columns of the same block. We read the truly current
    weights, so that the result equals the column-by-column OBS procedure exactly.
    """
    check_pair(W, X)
    check_bits(bits)
    if group_size == "tensor":
        raise ValueError(
            'group_size="tensor" is not supported by GPTQ; use None or an int'
        )
    group_size = check_group_size(group_size, W.shape[1])
    check_positive_int("block_size", block_size)
    if (
        isinstance(damp, bool)
        or not isinstance(damp, (int, float))
        or not 0 <= damp < 1
    ):
        raise ValueError(f"damp must be a number in [0, 1), got {damp!r}")
    if not isinstance(act_order, bool):
        raise TypeError(f"act_order must be a bool, got {act_order!r}")

    in_dtype, dt = W.dtype, work_dtype(W)
    W = W.detach().to(dt).clone()
    n_in = W.shape[1]
    H = gptq_hessian(X.detach().to(dt))

    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    if act_order:    # largest-energy inputs first; undone at the end
        perm = torch.argsort(torch.diag(H), descending=True, stable=True)
        W, H = W[:, perm], H[perm][:, perm]
    H += damp * torch.diag(H).mean() * torch.eye(n_in, dtype=dt)
    # Upper Cholesky factor of H⁻¹: H → L (lower) → H⁻¹ → U with H⁻¹ = UᵀU.
    Hinv = torch.linalg.cholesky(
        torch.cholesky_inverse(torch.linalg.cholesky(H)), upper=True
    )

    if group_size is None:
        scale, zero = quant_params(W, bits, symmetric, dim=1)          # (out, 1) each
    Q = torch.zeros_like(W)

    for i1 in range(0, n_in, block_size):
        i2 = min(i1 + block_size, n_in)
        W1 = W[:, i1:i2].clone()  # (out, B), updated in place
        Err1 = torch.zeros_like(W1)
        Hinv1 = Hinv[i1:i2, i1:i2]
        for i in range(i2 - i1):
            col = i1 + i
            if group_size is not None and col % group_size == 0:
                scale, zero = quant_params(
                    _current_group(W, W1, Err1, Hinv, i1, i2, i, group_size),
                    bits,
                    symmetric,
                    dim=1,
                )
            w = W1[:, i]
            q = fake_quantize(w[:, None], scale, zero, bits, symmetric)[:, 0]
            Q[:, col] = q
            err = (w - q) / Hinv1[i, i]
            W1[:, i:] -= err[:, None] * Hinv1[i, i:][None, :]
            Err1[:, i] = err
        W[:, i2:] -= Err1 @ Hinv[i1:i2, i2:]  # the lazy batch update
    if act_order:
        Q = Q[:, torch.argsort(perm)]
    return Q.to(in_dtype)


def _current_group(W, W1, Err1, Hinv, i1, i2, i, g):
    """The weights of the group starting at column i1 + i, with every error update so far applied."""
    col = i1 + i
    end = min(col + g, W.shape[1])
    cur = W[:, col:end].clone()
    inside = min(end, i2)
    cur[:, : inside - col] = W1[:, i: inside - i1]
    if end > i2:    # columns past this block still wait for this block's lazy update
        cur[:, i2 - col:] -= Err1[:, :i] @ Hinv[i1:i1 + i, i2:end]
    return cur
