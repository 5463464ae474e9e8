"""Quantize a whole TinyGPT: calibration inputs from forward hooks, then RTN, GPTQ or AWQ per linear layer.

What the real tools do, at toy scale:

* **calibration**: run a few hundred prompts through the float model and record, with a
  forward hook on each ``nn.Linear``, the inputs it sees on real (non-padding) tokens;
* **per-layer quantization**: replace each weight by its quantized-then-dequantized copy
  ("fake quantization": the numbers a real int kernel would compute with);
* **held-out NLL**: next-token loss on test-split answers of the pretraining tasks, the
  small-scale stand-in for perplexity on a held-out corpus.

One simplification: every layer's calibration inputs come from the *float* model in a
single pass. GPTQ's reference (IST-DASLab/gptq ``llama.py``) and AutoAWQ go block by
block and feed each block the outputs of the blocks already quantized, so later layers
also correct for earlier layers' error. We do not model that cross-layer effect; the
error feedback *within* a layer, which is what the chapter measures, is exact.

``lm_head`` and the embeddings stay in float by default, as the usual GPTQ and AWQ
recipes and bitsandbytes' loaders leave them (llama.cpp instead stores ``output.weight``
in a larger type than the rest, Q6_K in its Q4_K_M mix).
"""
from __future__ import annotations

import copy
from typing import Iterable, Optional, Sequence

import torch
import torch.nn as nn

from ..chat import sft_tensors
from ..tasks import PRETRAIN_TASKS, Task, get_task
from ..tokenizer import PAD_ID
from ..train import lm_loss
from .awq import awq_quantize
from .common import check_bits
from .gptq import gptq_quantize
from .rtn import GroupSize, rtn_quantize

METHODS = ("rtn", "gptq", "awq")


def linear_names(model: nn.Module, include_head: bool = False) -> list[str]:
    """Names of the model's nn.Linear modules, in forward order (``lm_head`` only if asked)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    return [n for n, m in model.named_modules()
            if isinstance(m, nn.Linear) and (include_head or not n.endswith("lm_head"))]


def _check_names(model: nn.Module, names: Iterable[str]) -> list[str]:
    known = set(linear_names(model, include_head=True))
    names = list(names)
    bad = [n for n in names if n not in known]
    if bad:
        raise ValueError(f"not linear layers of this model: {bad}; have {sorted(known)}")
    return names


def eval_batch(tasks: Sequence[str | Task] = PRETRAIN_TASKS, n_per_task: int = 32, seed: int = 0,
               split: str = "test") -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, loss_mask) for ``n_per_task`` items of each task, answers masked in: the held-out NLL set.

    The same tensors serve as calibration data when drawn from ``split="train"``.
    """
    if isinstance(n_per_task, bool) or not isinstance(n_per_task, int) or n_per_task < 1:
        raise ValueError(f"n_per_task must be a positive int, got {n_per_task!r}")
    examples = []
    for t in tasks:
        task = t if isinstance(t, Task) else get_task(t)
        n = min(n_per_task, len(task.finite)) if task.finite else n_per_task
        examples += task.examples(n, seed=seed, split="all" if task.finite else split)
    return sft_tensors(examples)


@torch.no_grad()
def heldout_nll(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> float:
    """Mean next-token loss (nats) on the answer tokens of ``batch`` = (ids, loss_mask)."""
    model.eval()
    ids, mask = batch
    # Rows sorted by length and run in chunks cut to each chunk's longest row: the same
    # token losses as one padded batch, at about half the compute on mixed-length tasks.
    real = (ids != PAD_ID) | mask.bool()
    # right padding: a row's length runs up to its last real token
    lengths = ids.shape[1] - real.flip(1).long().argmax(1)
    total, count = 0.0, 0.0
    for rows in lengths.argsort().split(64):
        T = int(lengths[rows].max())
        n = float(mask[rows, 1:T].sum())
        if n:
            total += float(lm_loss(model, ids[rows, :T], mask[rows, :T])) * n
            count += n
    return total / max(count, 1.0)


@torch.no_grad()
def capture_inputs(
    model: nn.Module,
    ids: torch.Tensor,
    names: Optional[Sequence[str]] = None,
    pad_mask: Optional[torch.Tensor] = None,
) -> dict[str, torch.Tensor]:
    """Run ``ids`` (B, T) through the model and return each linear layer's inputs.

    Returns {layer name: its inputs (n_tokens, in_features)}. Forward hooks record
    each linear layer's input. ``pad_mask`` (B, T), 1 on real tokens, drops padding
    positions so they do not count as calibration data.
    """
    names = _check_names(model, names if names is not None else linear_names(model))
    if pad_mask is None:
        pad_mask = ids != PAD_ID
    keep = pad_mask.reshape(-1).bool()
    modules = dict(model.named_modules())
    store, hooks = {}, []
    for name in names:
        def hook(mod, inp, out, name=name):
            x = inp[0].reshape(-1, inp[0].shape[-1])                  # (B·T, in)
            store[name] = x[keep].detach().float().clone()
        hooks.append(modules[name].register_forward_hook(hook))
    try:
        model.eval()
        model(ids)
    finally:
        for h in hooks:
            h.remove()
    return store


def quantize_weight(W: torch.Tensor, X: Optional[torch.Tensor], method: str, bits: int,
                    group_size: GroupSize = None, act_order: bool = False) -> torch.Tensor:
    """One weight (out, in) → its dequantized ``method`` version; X (n, in) is needed by gptq and awq.

    ``act_order`` (gptq only): quantize columns by decreasing Hessian diagonal.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if act_order and method != "gptq":
        raise ValueError(f"act_order applies to method 'gptq' only, got method {method!r}")
    if method == "rtn":
        return rtn_quantize(W, bits, group_size, symmetric=False)
    if X is None:
        raise ValueError(f"method {method!r} needs calibration inputs X")
    if method == "gptq":
        return gptq_quantize(W, X, bits, group_size, act_order=act_order)
    return awq_quantize(W, X, bits, group_size)


@torch.no_grad()
def quantize_model(
    model: nn.Module,
    method: str = "rtn",
    bits: int = 4,
    group_size: GroupSize = None,
    calib: Optional[dict[str, torch.Tensor]] = None,
    names: Optional[Sequence[str]] = None,
    bits_for: Optional[dict[str, int]] = None,
    act_order: bool = False,
) -> nn.Module:
    """A quantized copy of ``model``: every layer in ``names`` fake-quantized.

    ``names`` defaults to all block linears.
    ``calib`` is what :func:`capture_inputs` returns (needed by gptq and awq).
    ``bits_for`` overrides the bit-width per layer (mixed precision); a value of 16
    keeps that layer in float. Biases stay in float, as in every weight-only scheme.
    ``act_order`` (gptq only) is GPTQ's act-order / ``desc_act``.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if not isinstance(act_order, bool):
        raise TypeError(f"act_order must be a bool, got {act_order!r}")
    if act_order and method != "gptq":
        raise ValueError(
            f"act_order applies to method 'gptq' only, got method {method!r}"
        )
    check_bits(bits)
    names = _check_names(model, names if names is not None else linear_names(model))
    bits_for = dict(bits_for or {})
    _check_names(model, bits_for)
    if method != "rtn":
        if calib is None:
            raise ValueError(
                f"method {method!r} needs calib=capture_inputs(model, ids)"
            )
        missing = [n for n in names if n not in calib]
        if missing:
            raise ValueError(f"calib has no inputs for {missing}")
    q = copy.deepcopy(model)
    modules = dict(q.named_modules())
    for name in names:
        b = bits_for.get(name, bits)
        if b == 16:
            continue
        lin = modules[name]
        X = calib.get(name) if calib is not None else None
        lin.weight.copy_(
            quantize_weight(lin.weight.detach(), X, method, b, group_size, act_order)
        )
    return q


@torch.no_grad()
def layer_output_error(model: nn.Module, qmodel: nn.Module, calib: dict[str, torch.Tensor],
                       names: Optional[Sequence[str]] = None) -> dict[str, float]:
    """Relative output error ‖X(Ŵ − W)ᵀ‖ / ‖XWᵀ‖ of each layer on its calibration inputs X."""
    names = _check_names(model, names if names is not None else linear_names(model))
    a, b = dict(model.named_modules()), dict(qmodel.named_modules())
    out = {}
    for n in names:
        X = calib[n]
        W, Wq = a[n].weight.float(), b[n].weight.float()
        out[n] = ((X @ (Wq - W).T).norm() / (X @ W.T).norm()).item()
    return out


def layer_sensitivity(
    model: nn.Module,
    batch: tuple[torch.Tensor, torch.Tensor],
    bits: int,
    group_size: GroupSize = None,
    names: Optional[Sequence[str]] = None,
    method: str = "rtn",
    calib: Optional[dict[str, torch.Tensor]] = None,
) -> dict[str, float]:
    """Held-out NLL increase when only one layer is quantized, for each layer.

    It shows where the damage comes from.
    """
    names = _check_names(model, names if names is not None else linear_names(model))
    base = heldout_nll(model, batch)
    return {
        n: heldout_nll(
            quantize_model(model, method, bits, group_size, calib, names=[n]), batch
        )
        - base
        for n in names
    }


@torch.no_grad()
def plant_outlier_channels(
    model: nn.Module, n_channels: int = 4, factor: float = 20.0, seed: int = 0
) -> nn.Module:
    """A copy of ``model`` that computes the same function but has activation outliers.

    Large LLMs have such outliers. For ``n_channels`` residual channels j (the same in
    every block), the LayerNorms ``ln_1`` and ``ln_2`` multiply channel j by ``factor``
    and the layers reading from them (q/k/v_proj, up_proj) divide column j by
    ``factor``: the reverse of the fold AWQ and SmoothQuant do. In float the model is
    unchanged; the inputs of those layers now have a few channels ``factor``× larger
    than the rest, met by small weights.
    """
    if (
        isinstance(n_channels, bool)
        or not isinstance(n_channels, int)
        or n_channels <= 0
    ):
        raise ValueError(f"n_channels must be a positive int, got {n_channels!r}")
    if (
        isinstance(factor, bool)
        or not isinstance(factor, (int, float))
        or not factor > 0
    ):
        raise ValueError(f"factor must be a positive number, got {factor!r}")
    q = copy.deepcopy(model)
    d = q.config.d_model
    if n_channels > d:
        raise ValueError(f"n_channels={n_channels} exceeds d_model={d}")
    g = torch.Generator().manual_seed(seed)
    ch = torch.randperm(d, generator=g)[:n_channels]
    for block in q.layers:
        for ln, linears in (
            (block.ln_1, (block.attn.q_proj, block.attn.k_proj, block.attn.v_proj)),
            (block.ln_2, (block.mlp.up_proj,)),
        ):
            ln.weight[ch] *= factor
            ln.bias[ch] *= factor
            for lin in linears:
                lin.weight[:, ch] /= factor
    return q
