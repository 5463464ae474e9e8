"""GGUF-style block quantization as llama.cpp does it: Q8_0, Q4_0 and Q4_K.

GGUF is a file format, not a quantization method: one file holding the model's metadata
(architecture, tokenizer, hyper-parameters) and its tensors, each tensor stored in some
ggml type (F16, Q8_0, Q4_K, …). Names such as Q4_K_M describe a whole file and are a
per-tensor mix: in llama.cpp's ``src/llama-quant.cpp`` (``llama_tensor_get_type``),
Q4_K_M stores most weights as Q4_K but output.weight as Q6_K, and (for most architectures)
attn_v and ffn_down as Q6_K in the first and last eighth of the layers and in every third
layer in between (``use_more_bits``). "_S"/"_M"/"_L" pick how many tensors get the bigger type.

Each type is a fixed block of weights stored as one C struct (ggml ``ggml-common.h``);
bits per weight follow from the struct's size:

* Q8_0: 32 weights → fp16 scale d + 32 int8 → 34 bytes → 8.5 bpw. w ≈ d·q.
* Q4_0: 32 weights → fp16 d + 16 bytes of 4-bit codes → 18 bytes → 4.5 bpw. w ≈ d·(q − 8).
* Q4_K: a 256-weight super-block of 8 sub-blocks of 32 → fp16 d and dmin, 12 bytes of
  6-bit sub-block scales and mins (8 + 8 values × 6 bits), 128 bytes of 4-bit codes
  → 144 bytes → 4.5 bpw. Sub-block j: w ≈ d·sc_j·q − dmin·m_j.

Quantization follows the reference (``quantize_row_q8_0_ref``, ``quantize_row_q4_0_ref``,
``quantize_row_q4_K_ref`` in ``ggml-quants.c``) with one simplification for Q4_K: the
reference picks each sub-block's scale and min by a weighted search (``make_qkx2_quants``);
we use the sub-block's min and max. We also keep codes unpacked (one per byte); the bits
per weight are those of the packed layout.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .common import Tensor, check_float

QK8_0 = 32      # ggml-common.h
QK4_0 = 32
QK_K = 256      # super-block size of the k-quants
K_SUB = 32      # Q4_K sub-block size (QK_K / 8)


@dataclass(frozen=True)
class BlockLayout:
    """One ggml block type: how many weights a block holds and the bytes of each struct field."""
    name: str
    block_weights: int
    fields: tuple        # ((field, bytes), ...)

    @property
    def block_bytes(self) -> int:
        return sum(b for _, b in self.fields)

    @property
    def bits_per_weight(self) -> float:
        return 8 * self.block_bytes / self.block_weights


LAYOUTS = {
    "Q8_0": BlockLayout("Q8_0", QK8_0, (("d: ggml_half", 2), ("qs: int8[32]", QK8_0))),
    "Q4_0": BlockLayout("Q4_0", QK4_0, (("d: ggml_half", 2), ("qs: uint8[16]", QK4_0 // 2))),
    "Q4_K": BlockLayout("Q4_K", QK_K, (("d: ggml_half", 2), ("dmin: ggml_half", 2),
                                       ("scales: uint8[12]", (2 * (QK_K // K_SUB) * 6) // 8),
                                       ("qs: uint8[128]", QK_K // 2))),
}


def bits_per_weight(type_name: str) -> float:
    """Bits per weight of a ggml type, from its block layout: Q8_0 8.5, Q4_0 4.5, Q4_K 4.5."""
    if type_name not in LAYOUTS:
        raise ValueError(f"unknown type {type_name!r}; have {sorted(LAYOUTS)}")
    return LAYOUTS[type_name].bits_per_weight


def _blocks(w: Tensor, size: int) -> Tensor:
    check_float("w", w)
    if w.dim() == 0 or w.shape[-1] % size:
        raise ValueError(f"the last dimension of w ({tuple(w.shape)}) must divide by the block size {size}: "
                         f"ggml quantizes rows, and a block never crosses a row")
    return w.detach().float().reshape(-1, size)


def _fp16(t: Tensor) -> Tensor:
    return t.to(torch.float16)


# --- Q8_0 ---------------------------------------------------------------------------

def quantize_q8_0(w: Tensor) -> tuple[Tensor, Tensor]:
    """Q8_0: per block of 32, d = max|w|/127 and q = round(w/d). Returns (q int8 (nb, 32), d fp16 (nb,))."""
    x = _blocks(w, QK8_0)
    d = x.abs().amax(dim=1) / 127
    inv = torch.where(d > 0, 1 / d, torch.zeros_like(d))
    q = torch.round(x * inv[:, None]).to(torch.int8)
    return q, _fp16(d)


def dequantize_q8_0(q: Tensor, d: Tensor) -> Tensor:
    """w = d · q, flattened float32."""
    return (q.float() * d.float()[:, None]).reshape(-1)


# --- Q4_0 ---------------------------------------------------------------------------

def quantize_q4_0(w: Tensor) -> tuple[Tensor, Tensor]:
    """Q4_0: per block of 32, the signed value of largest magnitude maps to code 0 (= −8).

    d = that value / −8, q = min(15, floor(w/d + 8.5)), so the grid is −8..7 times d and the
    largest weight is exact. Returns (q uint8 0..15 (nb, 32), d fp16 (nb,)).
    """
    x = _blocks(w, QK4_0)
    idx = x.abs().argmax(dim=1, keepdim=True)
    d = x.gather(1, idx)[:, 0] / -8
    inv = torch.where(d != 0, 1 / d, torch.zeros_like(d))
    q = torch.clamp(torch.floor(x * inv[:, None] + 8.5), 0, 15).to(torch.uint8)
    return q, _fp16(d)


def dequantize_q4_0(q: Tensor, d: Tensor) -> Tensor:
    """w = d · (q − 8), flattened float32."""
    return ((q.float() - 8) * d.float()[:, None]).reshape(-1)


# --- Q4_K ---------------------------------------------------------------------------

@dataclass
class Q4KBlocks:
    """Unpacked Q4_K super-blocks."""
    q: Tensor        # (nb, 8, 32) uint8, 0..15
    sc: Tensor       # (nb, 8) uint8, 6-bit sub-block scales, 0..63
    m: Tensor        # (nb, 8) uint8, 6-bit sub-block mins, 0..63
    d: Tensor        # (nb,) fp16, super-block scale of the scales
    dmin: Tensor     # (nb,) fp16, super-block scale of the mins


def quantize_q4_k(w: Tensor) -> Q4KBlocks:
    """Q4_K: 4-bit codes with a scale and a min per 32 weights, those quantized to 6 bits per 256.

    Per sub-block: min clamped to ≤ 0 (as the reference does, so the stored min is ≥ 0),
    scale = (max − min)/15. Per super-block: d = max scale/63, dmin = max min/63, and the
    6-bit codes are round(scale/d), round(min/dmin). The weights are then re-rounded
    against the 6-bit-quantized scale and min, so the codes fit what is stored.
    """
    x = _blocks(w, QK_K).reshape(-1, QK_K // K_SUB, K_SUB)          # (nb, 8, 32)
    lo = x.amin(dim=2).clamp(max=0)                                   # (nb, 8), ≤ 0
    hi = x.amax(dim=2)
    scale = (hi - lo).clamp_min(0) / 15
    mins = -lo                                                        # ≥ 0
    max_scale, max_min = scale.amax(dim=1), mins.amax(dim=1)          # (nb,)
    d = _fp16(max_scale / 63)
    dmin = _fp16(max_min / 63)
    inv_s = torch.where(max_scale > 0, 63 / max_scale, torch.zeros_like(max_scale))
    inv_m = torch.where(max_min > 0, 63 / max_min, torch.zeros_like(max_min))
    sc = torch.clamp(torch.round(scale * inv_s[:, None]), 0, 63)
    m = torch.clamp(torch.round(mins * inv_m[:, None]), 0, 63)
    step = d.float()[:, None] * sc                                    # (nb, 8)
    offset = dmin.float()[:, None] * m
    inv_step = torch.where(step > 0, 1 / step, torch.zeros_like(step))
    q = torch.clamp(torch.round((x + offset[..., None]) * inv_step[..., None]), 0, 15)
    return Q4KBlocks(q.to(torch.uint8), sc.to(torch.uint8), m.to(torch.uint8), d, dmin)


def dequantize_q4_k(b: Q4KBlocks) -> Tensor:
    """w = d·sc_j·q − dmin·m_j for each sub-block j, flattened float32."""
    step = b.d.float()[:, None] * b.sc.float()
    offset = b.dmin.float()[:, None] * b.m.float()
    return (b.q.float() * step[..., None] - offset[..., None]).reshape(-1)


def gguf_roundtrip(w: Tensor, type_name: str) -> Tensor:
    """Quantize ``w`` to a ggml type and back; returns a float32 tensor of w's shape."""
    if type_name == "Q8_0":
        flat = dequantize_q8_0(*quantize_q8_0(w))
    elif type_name == "Q4_0":
        flat = dequantize_q4_0(*quantize_q4_0(w))
    elif type_name == "Q4_K":
        flat = dequantize_q4_k(quantize_q4_k(w))
    else:
        raise ValueError(f"unknown type {type_name!r}; have {sorted(LAYOUTS)}")
    return flat.reshape(w.shape)


def gguf_nbytes(shape, type_name: str) -> int:
    """Bytes a tensor of ``shape`` takes in a ggml type (tensor data only, no file header)."""
    if type_name not in LAYOUTS:
        raise ValueError(f"unknown type {type_name!r}; have {sorted(LAYOUTS)}")
    lay = LAYOUTS[type_name]
    n = math.prod(shape)
    if not shape or shape[-1] % lay.block_weights:
        raise ValueError(f"the last dimension of shape {tuple(shape)} must divide by {lay.block_weights}")
    return n // lay.block_weights * lay.block_bytes
