"""Training memory and compute, on the back of an envelope: full fine-tuning, LoRA, QLoRA.

Pure arithmetic, no torch. Every figure is in bytes, and the tables use GB = 1e9 bytes
(decimal, as GPU datasheets and most blog posts do; 1 GiB = 1.074 GB).

What the estimates count, and what they leave out:

- model weights, gradients and optimizer state, per parameter (the ZeRO accounting);
- activations of the transformer layers (Korthikanti et al. 2022's accounting, applied
  to a Llama block as transformers and peft run it; see ``activation_terms``);
- not counted: the CUDA context and kernels (often 0.5-1 GB), the allocator's
  fragmentation, temporary buffers (for example QLoRA's dequantized weight tile), and the
  logits of the output layer (batch · seq_len · vocab values, often kept in fp32 by the
  loss: 0.26 GB at batch 1, 2048 tokens, vocab 32000).

So a real run needs somewhat more than these numbers: treat them as a floor.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Sequence

GB = 1e9  # decimal gigabyte; every *_gb figure in this module uses it

# Peak dense bf16 tensor throughput, from NVIDIA's datasheets (the sparse figures are 2x).
A100_BF16_TFLOPS = 312.0  # A100 datasheet: 312 TFLOPS BF16 dense (624 with sparsity)
H100_SXM_BF16_TFLOPS = 989.0  # H100 SXM datasheet: 1,979 TFLOPS BF16 with sparsity, half dense
# Model FLOPs utilization: an assumption, not a measurement. Chowdhery et al. 2022 (PaLM),
# who defined MFU, report 46.2% for PaLM 540B; well-tuned fine-tuning runs land near 30-50%.
DEFAULT_MFU = 0.4

# The seven linear layers of a Llama block, named as in Hugging Face transformers'
# modeling_llama.py (and so as peft's `target_modules` spells them).
LLAMA_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


# --- input checks: every public function refuses bad input rather than guess ---

def _check_int(name: str, value, minimum: int = 1) -> int:
    # bool is an int in Python; True as a rank is always a mistake.
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {value!r} ({type(value).__name__})")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return value


def _check_number(name: str, value, allow_zero: bool = False) -> float:
    # Counts like n_params are often written 7e9, so floats are welcome here.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {value!r} ({type(value).__name__})")
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be finite and {bound}, got {value!r}")
    return float(value)


def _check_bool(name: str, value) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return value


# --- model shapes ---

@dataclass(frozen=True)
class ModelShape:
    """The sizes of a decoder-only transformer (Llama layout: SwiGLU MLP, RMSNorm, untied head)."""

    n_params: float  # published total parameter count
    d_model: int  # hidden size h
    n_layers: int  # transformer blocks L
    n_heads: int  # query heads a
    d_ff: int  # MLP inner size (gate_proj/up_proj output)
    vocab_size: int = 32000
    n_kv_heads: int | None = None  # key/value heads for grouped-query attention; None = n_heads
    tie_embeddings: bool = False  # Llama keeps a separate lm_head; GPT-2 ties it
    name: str = ""

    def __post_init__(self):
        _check_number("n_params", self.n_params)
        for field in ("d_model", "n_layers", "n_heads", "d_ff", "vocab_size"):
            _check_int(field, getattr(self, field))
        if self.n_kv_heads is None:
            object.__setattr__(self, "n_kv_heads", self.n_heads)
        _check_int("n_kv_heads", self.n_kv_heads)
        _check_bool("tie_embeddings", self.tie_embeddings)
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model={self.d_model} is not divisible by n_heads={self.n_heads}")
        if self.n_heads % self.n_kv_heads:
            raise ValueError(f"n_heads={self.n_heads} is not divisible by n_kv_heads={self.n_kv_heads}")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads


# Shapes from the config.json of meta-llama/Llama-2-{7b,13b,70b}-hf; GQA (8 kv heads) on 70B
# only, as in Touvron et al. 2023 (Llama 2), Table 1. The counts are the exact sums of the
# checkpoint tensors; for 7B it is the "all params" peft prints (6,742,609,920) minus the
# 4,194,304 adapter parameters of r=8 on q_proj, v_proj.
LLAMA2_7B = ModelShape(6_738_415_616, d_model=4096, n_layers=32, n_heads=32, d_ff=11008, name="Llama-2-7B")
LLAMA2_13B = ModelShape(13_015_864_320, d_model=5120, n_layers=40, n_heads=40, d_ff=13824, name="Llama-2-13B")
LLAMA2_70B = ModelShape(68_976_648_192, d_model=8192, n_layers=80, n_heads=64, d_ff=28672,
                        n_kv_heads=8, name="Llama-2-70B")


def _check_shape(shape) -> ModelShape:
    if not isinstance(shape, ModelShape):
        raise TypeError(f"expected a ModelShape, got {type(shape).__name__}")
    return shape


def _module_shapes(shape: ModelShape) -> dict[str, tuple[int, int]]:
    """(in_features, out_features) of each linear layer in one block."""
    h, kv = shape.d_model, shape.n_kv_heads * shape.head_dim  # GQA shrinks k_proj/v_proj outputs
    return {
        "q_proj": (h, h), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (h, h),
        "gate_proj": (h, shape.d_ff), "up_proj": (h, shape.d_ff), "down_proj": (shape.d_ff, h),
    }


def count_params(shape: ModelShape) -> int:
    """Parameter count implied by the shape: embeddings, blocks (7 linears + 2 norms), final norm, head."""
    _check_shape(shape)
    per_block = sum(i * o for i, o in _module_shapes(shape).values()) + 2 * shape.d_model
    embeddings = shape.vocab_size * shape.d_model * (1 if shape.tie_embeddings else 2)
    return shape.n_layers * per_block + shape.d_model + embeddings


def target_shapes(shape: ModelShape, target_modules: Sequence[str] = LLAMA_MODULES) -> list[tuple[int, int]]:
    """(in, out) of every targeted linear layer in the model: one entry per module per layer."""
    _check_shape(shape)
    if isinstance(target_modules, str):
        # peft reads a string as a regex; here it is ambiguous, so ask for a list.
        raise TypeError(f"target_modules must be a list of names, got the string {target_modules!r}")
    modules = list(target_modules)
    if not modules:
        raise ValueError("target_modules is empty")
    known = _module_shapes(shape)
    for m in modules:
        if m not in known:
            raise ValueError(f"unknown module {m!r}; known: {', '.join(known)}")
    if len(set(modules)) != len(modules):
        raise ValueError(f"target_modules lists a module twice: {modules!r}")
    return [known[m] for _ in range(shape.n_layers) for m in modules]


def _linear_params(shape: ModelShape) -> int:
    """Parameters in the blocks' linear layers: what bitsandbytes quantizes in QLoRA."""
    return sum(i * o for i, o in target_shapes(shape))


# --- LoRA ---

def lora_params(shapes: Iterable[tuple[int, int]], r: int) -> int:
    """Adapter size: r·(in + out) per layer (A is r×in, B is out×r; Hu et al. 2021), summed."""
    _check_int("r", r)
    total, n = 0, 0
    for s in shapes:
        if not (isinstance(s, (tuple, list)) and len(s) == 2):
            raise TypeError(f"each shape must be an (in_features, out_features) pair, got {s!r}")
        d_in, d_out = _check_int("in_features", s[0]), _check_int("out_features", s[1])
        if r > min(d_in, d_out):
            # Past min(in, out) the update B @ A cannot gain rank: the extra parameters buy nothing.
            raise ValueError(f"r={r} exceeds min(in, out)={min(d_in, d_out)} for shape {tuple(s)}")
        total += r * (d_in + d_out)
        n += 1
    if n == 0:
        raise ValueError("shapes is empty")
    return total


# --- bytes per parameter ---

def full_ft_bytes(n_params: float) -> dict[str, float]:
    """Mixed-precision AdamW, 16 B/param: 2 (bf16 weights) + 2 (grads) + 12 (fp32
    master, m, v).

    Rajbhandari et al. 2020 (ZeRO), section 3.1: 2Ψ + 2Ψ + KΨ bytes with K = 12 for
    Adam, so 16Ψ; their section 3.1 example, GPT-2 with 1.5B parameters, needs at least
    24 GB, and their Figure 1 shows 7.5B needing 120 GB, both before activations.
    """
    n = _check_number("n_params", n_params)
    return _breakdown(weights=2 * n, trainable=n)


def _breakdown(weights: float, trainable: float) -> dict[str, float]:
    # Trainable parameters carry 2 B grads + the 12 B of fp32 master copy, Adam m and v.
    out = {"weights": weights, "grads": 2 * trainable, "master": 4 * trainable,
           "adam_m": 4 * trainable, "adam_v": 4 * trainable}
    out["optimizer"] = out["master"] + out["adam_m"] + out["adam_v"]
    out["total"] = out["weights"] + out["grads"] + out["optimizer"]
    return out


def _check_adapter(n_params: float, n_lora_params: float) -> tuple[float, float]:
    n = _check_number("n_params", n_params)
    k = _check_number("n_lora_params", n_lora_params)
    if k >= n:
        raise ValueError(f"n_lora_params={n_lora_params!r} is not smaller than n_params={n_params!r}; "
                         "are the arguments swapped?")
    return n, k


def lora_bytes(n_params: float, n_lora_params: float) -> dict[str, float]:
    """Frozen bf16 base (2 B/param) plus an adapter trained like full FT (16 B per adapter param)."""
    n, k = _check_adapter(n_params, n_lora_params)
    return _breakdown(weights=2 * n + 2 * k, trainable=k)


def bits_per_param_nf4(double_quant: bool = True, block_size: int = 64, dq_block: int = 256) -> float:
    """Storage per quantized weight: 4 bits of NF4 plus its share of the block constants.

    Dettmers et al. 2023 (QLoRA), section 3: one fp32 absmax per 64 weights costs
    32/64 = 0.5 bit; double quantization stores it in 8 bits, with one fp32 constant per
    256 of those blocks, so 8/64 + 32/(64·256) = 0.127 bit (0.373 saved per parameter).
    """
    from .quant.nf4 import constants_bits_per_param  # the one formula for the constants

    _check_bool("double_quant", double_quant)
    _check_int("block_size", block_size)
    _check_int("dq_block", dq_block)
    return 4 + constants_bits_per_param(block_size, double_quant, dq_block)


def qlora_bytes(n_params: float, n_lora_params: float, n_unquantized: float = 0,
                double_quant: bool = True, block_size: int = 64, dq_block: int = 256,
                unquantized_bytes: int = 2) -> dict[str, float]:
    """NF4 base (≈ 0.516 B/param with double quantization) plus a 16 B/param adapter.

    ``n_unquantized`` is the part of the base that bitsandbytes leaves alone: it
    quantizes only nn.Linear layers, and transformers skips lm_head, so the embeddings,
    the head and the norms stay unquantized. ``memory_table`` fills it in from the
    shape.
    They take ``unquantized_bytes`` each: 2 as loaded in bf16; peft's
    ``prepare_model_for_kbit_training`` casts every non-4-bit fp16/bf16 parameter to
    fp32 (peft utils/other.py), so pass 4 for a model prepared that way.
    """
    n, k = _check_adapter(n_params, n_lora_params)
    u = _check_number("n_unquantized", n_unquantized, allow_zero=True)
    if u >= n:
        raise ValueError(f"n_unquantized={n_unquantized!r} must be smaller than "
                         f"n_params={n_params!r}")
    ub = _check_int("unquantized_bytes", unquantized_bytes)
    nf4 = (n - u) * bits_per_param_nf4(double_quant, block_size, dq_block) / 8
    return _breakdown(weights=nf4 + ub * u + 2 * k, trainable=k)


# --- activations ---

@dataclass(frozen=True)
class Adapters:
    """LoRA adapters as peft runs them, for ``activation_terms``: what they keep.

    The base weights are frozen, so the base linear layers keep no input of their own
    (a frozen weight needs none); each adapter keeps the input of ``lora_A`` and the
    r-wide input of ``lora_B``. peft 0.21's ``lora.Linear.forward`` first casts the
    input to the adapter's dtype, and ``get_peft_model`` upcasts adapters to fp32 by
    default (``autocast_adapter_dtype=True``):

    - ``copy_bytes=4``: no autocast; every adapted module keeps its own fp32 copy, so
      q, k and v keep three copies of the one input they share;
    - ``copy_bytes=2``: bf16 autocast (Trainer's ``bf16=True``); lora_A recasts the
      fp32 copy to bf16 and keeps that, still one copy per module;
    - ``copy_bytes=None``: no cast (adapters in the input's dtype, or QLoRA under
      autocast: peft lora/bnb.py casts only when autocast is off); modules that share an
      input keep it once, as full fine-tuning does.

    ``lora_dropout=True`` (any p > 0) adds ``dropout(x)``, a copy per module, and its
    mask, counted at 1 byte per value as on GPU (PyTorch's CPU kernel keeps the mask in
    the input's dtype).
    """

    r: int = 16
    target_modules: tuple[str, ...] = LLAMA_MODULES
    copy_bytes: int | None = 2
    lora_dropout: bool = False

    def __post_init__(self):
        _check_int("r", self.r)
        if isinstance(self.target_modules, str):
            raise TypeError("target_modules must be a list of names, got the string "
                            f"{self.target_modules!r}")
        object.__setattr__(self, "target_modules", tuple(self.target_modules))
        for m in self.target_modules:
            if m not in LLAMA_MODULES:
                raise ValueError(f"unknown module {m!r}; "
                                 f"known: {', '.join(LLAMA_MODULES)}")
        if not self.target_modules:
            raise ValueError("target_modules is empty")
        if self.copy_bytes is not None:
            _check_int("copy_bytes", self.copy_bytes)
        _check_bool("lora_dropout", self.lora_dropout)


def activation_terms(shape: ModelShape, batch: int, seq_len: int,
                     bytes_per_value: int = 2, flash_attention: bool = True,
                     dropout: bool = False, mlp: str = "swiglu",
                     accounting: str = "transformers",
                     adapters: Adapters | None = None) -> dict[str, float]:
    """Bytes one transformer layer keeps for the backward pass, by tensor group.

    The list is Korthikanti et al. 2022 ("Reducing Activation Recomputation in Large
    Transformer Models"), section 4.1: what a GPT-3 layer keeps, with 16-bit values
    (b batch, s tokens, h hidden, a heads). ``accounting="korthikanti"``,
    ``mlp="gelu"``, ``dropout=True``, ``flash_attention=False`` gives their equation 1,
    sbh·(34 + 5as/h), exactly.

    The defaults describe Llama-2 as transformers trains it (modeling_llama.py):

    - no dropout (``attention_dropout: 0.0`` in its config.json);
    - fused attention (PyTorch SDPA by default; FlashAttention, Dao et al. 2022): no
      s×s matrix, only the output and one fp32 log-sum-exp per row and head;
    - a SwiGLU MLP of width f: it keeps gate, silu(gate), up and their product;
    - grouped-query attention keeps K and V at n_kv_heads·head_dim wide;
    - ``accounting="transformers"``: LlamaRMSNorm upcasts its input to fp32 and keeps
      that (4 bytes per value) and, when the norm weight trains, its 16-bit normalised
      output too; eager attention keeps the softmax in fp32 plus its 16-bit copy,
      (4 + 2)·a·s²·b bytes, where the paper counts 2, and K and V after ``repeat_kv``
      (so at full width even under grouped-query attention).

    ``adapters=None`` is full fine-tuning: every linear layer keeps its input for its
    weight's gradient. With ``Adapters`` (LoRA under peft) the base layers keep none and
    the adapters keep their own copies (see ``Adapters``). Not counted: the embeddings,
    the logits and the loss (see the module docstring).
    """
    _check_shape(shape)
    b, s = _check_int("batch", batch), _check_int("seq_len", seq_len)
    v = _check_int("bytes_per_value", bytes_per_value)
    _check_bool("flash_attention", flash_attention)
    _check_bool("dropout", dropout)
    if mlp not in ("swiglu", "gelu"):
        raise ValueError(f"mlp must be 'swiglu' (Llama) or 'gelu' (GPT), got {mlp!r}")
    if accounting not in ("transformers", "korthikanti"):
        raise ValueError("accounting must be 'transformers' or 'korthikanti', "
                         f"got {accounting!r}")
    if adapters is not None:
        if not isinstance(adapters, Adapters):
            raise TypeError(f"adapters must be an Adapters or None, got {adapters!r}")
        if mlp != "swiglu":
            raise ValueError("adapters follow the Llama layout: use mlp='swiglu'")
    h, a, f = shape.d_model, shape.n_heads, shape.d_ff
    kv = shape.n_kv_heads * shape.head_dim
    sb, as2b = s * b, a * s * s * b
    mask = 1  # a dropout mask takes one byte per value (on GPU)
    if not flash_attention and accounting == "transformers":
        kv = h  # eager attention keeps K and V after repeat_kv, at all a heads' width
    # Q, K, V, kept by the attention whatever trains; a fused kernel also keeps its
    # output, which is o_proj's input.
    attn = v * sb * (h + 2 * kv) + flash_attention * v * sb * h
    if flash_attention:
        # The kernel recomputes the scores in the backward pass (and regenerates any
        # dropout mask from the RNG state); it keeps one fp32 log-sum-exp per row.
        scores = 4 * a * s * b
    else:
        probs = 4 + v if accounting == "transformers" else v  # fp32 softmax + copy
        scores = probs * as2b + dropout * (mask * as2b + v * as2b)
    # The MLP's elementwise tensors: SwiGLU keeps gate, silu(gate), up; GeLU its input.
    mlp_bytes = v * sb * f * (3 if mlp == "swiglu" else 1)
    # The inputs of the linear layers, by input: width and the modules that read it.
    # (GeLU's fc2 input is the GeLU output, f wide, like SwiGLU's down_proj input.)
    groups = [(h, ("q_proj", "k_proj", "v_proj")), (h, ("o_proj",)),
              (h, ("gate_proj", "up_proj")), (f, ("down_proj",))]
    linear, masks = 0, dropout * 2 * mask * sb * h  # after attention and after the MLP
    for width, modules in groups:
        fused_output = modules == ("o_proj",) and flash_attention  # already kept above
        if adapters is None:
            linear += 0 if fused_output else v * sb * width
            continue
        adapted = [m for m in modules if m in adapters.target_modules]
        if adapters.copy_bytes is None and not adapters.lora_dropout:
            if adapted and not fused_output:
                linear += v * sb * width  # the shared input, kept once
            own = v
        else:
            own = v if adapters.copy_bytes is None else adapters.copy_bytes
            linear += len(adapted) * own * sb * width  # one copy per adapted module
        linear += len(adapted) * own * sb * adapters.r  # lora_B's input, r wide
        masks += adapters.lora_dropout * len(adapted) * mask * sb * width
    if accounting == "transformers":
        # RMSNorm keeps its fp32 input and the fp32 1/rms per row; a trainable weight
        # also needs the 16-bit normalised tensor.
        norms = 2 * (4 * sb * h + 4 * sb + (adapters is None) * v * sb * h)
    else:
        norms = 2 * v * sb * h
    return {"attention": float(attn), "scores": float(scores), "mlp": float(mlp_bytes),
            "linear_inputs": float(linear), "norms": float(norms),
            "dropout_masks": float(masks)}


def activation_bytes(shape: ModelShape, batch: int, seq_len: int, checkpointing: bool,
                     bytes_per_value: int = 2, flash_attention: bool = True,
                     dropout: bool = False, mlp: str = "swiglu",
                     accounting: str = "transformers",
                     adapters: Adapters | None = None) -> float:
    """Activation memory of all the transformer layers, kept for the backward pass.

    One layer is ``sum(activation_terms(...).values())``. The defaults describe full
    fine-tuning of Llama-2 under transformers (SDPA attention, no dropout, SwiGLU, fp32
    RMSNorm inputs): about 45.6·sbh per layer for 7B, 12 GB at batch 1 × 2,048 tokens.
    ``flash_attention=False`` is eager attention, which keeps the s×s softmax in fp32
    plus a 16-bit copy: the worst case.

    With full checkpointing (Korthikanti et al., section 5) only each layer's 16-bit
    input stays, 2·sbh bytes per layer, plus one layer's activations while it is
    recomputed.

    LoRA under peft keeps *more* than full fine-tuning without checkpointing: each
    adapted module keeps its own cast copy of its input (pass ``adapters``).
    """
    _check_bool("checkpointing", checkpointing)
    layer = sum(activation_terms(shape, batch, seq_len, bytes_per_value,
                                 flash_attention, dropout, mlp, accounting,
                                 adapters).values())
    if not checkpointing:
        return float(shape.n_layers * layer)
    sbh = seq_len * batch * shape.d_model
    return float(shape.n_layers * bytes_per_value * sbh + layer)


# --- compute and cost ---

def train_flops(n_params: float, tokens: float, flops_per_param_token: float = 6.0) -> float:
    """Training compute C ≈ 6·N·D (Kaplan et al. 2020, section 2.1: 2N forward, 4N backward).

    Kaplan's N leaves out the embeddings; passing the total count errs a few percent high.

    LoRA skips the weight gradients of the frozen base, so it is closer to 4·N·D; gradient
    checkpointing adds one more forward pass, +2·N·D. Pass ``flops_per_param_token`` to say so.
    """
    return (_check_number("flops_per_param_token", flops_per_param_token)
            * _check_number("n_params", n_params) * _check_number("tokens", tokens))


def gpu_hours(flops: float, peak_tflops: float = A100_BF16_TFLOPS, mfu: float = DEFAULT_MFU) -> float:
    """Hours on one GPU: flops / (peak · MFU). Defaults: A100 bf16 dense, 40% MFU (an assumption)."""
    f = _check_number("flops", flops)
    p = _check_number("peak_tflops", peak_tflops)
    m = _check_number("mfu", mfu)
    if m > 1:
        raise ValueError(f"mfu is a fraction of peak, so at most 1; got {mfu!r}")
    return f / (p * 1e12 * m) / 3600


def gpu_cost(hours: float, usd_per_hour: float) -> float:
    """Dollars for ``hours`` of GPU time at ``usd_per_hour`` (no default: prices move)."""
    return _check_number("hours", hours) * _check_number("usd_per_hour", usd_per_hour)


# --- the table ---

def memory_table(shape: ModelShape, r: int = 16,
                 target_modules: Sequence[str] = LLAMA_MODULES, batch: int = 1,
                 seq_len: int = 2048, checkpointing: bool = True,
                 flash_attention: bool = True, autocast: bool = True,
                 lora_dropout: bool = False) -> list[dict]:
    """One row per method (full FT, LoRA, QLoRA) with its memory in GB (1e9 bytes).

    Checkpointing is on by default, as in the QLoRA recipes, and attention is a fused
    kernel (SDPA/FlashAttention), as transformers runs it by default. The LoRA and QLoRA
    rows count what peft's adapters keep (see ``Adapters``): with ``autocast`` (bf16, as
    Trainer runs it) LoRA keeps a bf16 copy of the input per adapted module and QLoRA
    none; without it both keep fp32 copies. Nothing is sharded across GPUs.
    """
    _check_shape(shape)
    _check_bool("autocast", autocast)
    n = shape.n_params
    k = lora_params(target_shapes(shape, target_modules), r)
    # Whatever is not a block linear layer stays bf16 under QLoRA.
    unquantized = max(n - _linear_params(shape), 0)
    mods = tuple(target_modules)
    runs = (("full FT", n, full_ft_bytes(n), None),
            (f"LoRA r={r}", k, lora_bytes(n, k),
             Adapters(r, mods, 2 if autocast else 4, lora_dropout)),
            (f"QLoRA r={r}", k, qlora_bytes(n, k, unquantized),
             Adapters(r, mods, None if autocast else 4, lora_dropout)))
    rows = []
    for method, trainable, parts, adapters in runs:
        act = activation_bytes(shape, batch, seq_len, checkpointing,
                               flash_attention=flash_attention, adapters=adapters)
        rows.append({
            "method": method,
            "trainable_params": int(trainable),
            "weights_gb": parts["weights"] / GB,
            "grads_gb": parts["grads"] / GB,
            "optimizer_gb": parts["optimizer"] / GB,
            "activations_gb": act / GB,
            "total_gb": (parts["total"] + act) / GB,
        })
    return rows


def format_table(rows: Sequence[dict], digits: int = 1) -> str:
    """Plain-text table of ``memory_table`` rows (or any list of dicts with the same keys)."""
    if not rows:
        raise ValueError("rows is empty")
    _check_int("digits", digits, minimum=0)
    keys = list(rows[0])
    cells = [[k for k in keys]]
    for row in rows:
        if list(row) != keys:
            raise ValueError(f"row {row!r} does not have the keys {keys!r}")
        cells.append([f"{v:,.{digits}f}" if isinstance(v, float) else f"{v:,}" if isinstance(v, int)
                      else str(v) for v in row.values()])
    widths = [max(len(c[i]) for c in cells) for i in range(len(keys))]
    lines = ["  ".join(c[i].ljust(widths[i]) if i == 0 else c[i].rjust(widths[i]) for i in range(len(keys)))
             for c in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


# --- ZeRO, FSDP and offload: the bytes per GPU of data-parallel full fine-tuning ---
# Rajbhandari et al. 2020, "ZeRO: Memory Optimizations Toward Training Trillion Parameter
# Models", section 5.1 and Figure 1: mixed-precision Adam holds 2 bytes of fp16/bf16 weights,
# 2 of gradients and K = 12 of fp32 master weights, momentum and variance per parameter.
# Stage 1 shards the K bytes over the N data-parallel GPUs, stage 2 the gradients too,
# stage 3 (and PyTorch FSDP's FULL_SHARD) the weights as well. Activations, buffers and
# the gathered layer of stage 3 are not counted.

ZERO_STAGES = (0, 1, 2, 3)
ZERO_OFFLOAD = ("none", "optimizer", "optimizer+params")


def zero_bytes_per_gpu(n_params: float, n_gpus: int, stage: int, offload: str = "none",
                       weight_bytes: float = 2, grad_bytes: float = 2,
                       optimizer_bytes: float = 12) -> dict[str, float]:
    """Bytes of weights, gradients and optimizer state on each GPU, and on the CPUs.

    offload  "optimizer": the K optimizer bytes and the gradients live in CPU memory,
             where the optimizer step runs (DeepSpeed's ``offload_optimizer``; ZeRO-Offload,
             Ren et al. 2021, section 4.1, keeps only the 16-bit weights on the GPU);
             "optimizer+params": the sharded weights too (``offload_param``, stage 3 only).
    Returns ``{"weights", "grads", "optimizer", "gpu_total", "cpu_total"}``; ``cpu_total``
    is summed over all ``n_gpus`` ranks.
    """
    n = _check_number("n_params", n_params)
    N = _check_int("n_gpus", n_gpus)
    if isinstance(stage, bool) or stage not in ZERO_STAGES:
        raise ValueError(f"stage must be one of {ZERO_STAGES}, got {stage!r}")
    if offload not in ZERO_OFFLOAD:
        raise ValueError(f"offload must be one of {ZERO_OFFLOAD}, got {offload!r}")
    if offload == "optimizer+params" and stage != 3:
        raise ValueError(f"offloading the weights needs stage 3 (they must be sharded), got stage={stage!r}")
    wb = _check_number("weight_bytes", weight_bytes)
    gb = _check_number("grad_bytes", grad_bytes)
    ob = _check_number("optimizer_bytes", optimizer_bytes, allow_zero=True)
    weights = n * wb / (N if stage >= 3 else 1)
    grads = n * gb / (N if stage >= 2 else 1)
    optimizer = n * ob / (N if stage >= 1 else 1)
    cpu = 0.0
    if offload != "none":
        cpu += (optimizer + grads) * N
        optimizer = grads = 0.0
    if offload == "optimizer+params":
        cpu += weights * N
        weights = 0.0
    return {"weights": weights, "grads": grads, "optimizer": optimizer,
            "gpu_total": weights + grads + optimizer, "cpu_total": cpu}


def zero_table(n_params: float, n_gpus: int = 8) -> list[dict]:
    """One row per ZeRO stage and offload choice: GB per GPU and GB of CPU memory in all."""
    rows = []
    for stage, offload, name in ((0, "none", "DDP (no sharding)"), (1, "none", "ZeRO-1"),
                                 (2, "none", "ZeRO-2"), (3, "none", "ZeRO-3 / FSDP"),
                                 (2, "optimizer", "ZeRO-2 + offload optimizer"),
                                 (3, "optimizer+params", "ZeRO-3 + offload all")):
        b = zero_bytes_per_gpu(n_params, n_gpus, stage, offload)
        rows.append({"setup": name, "gpu_gb": b["gpu_total"] / GB, "cpu_gb": b["cpu_total"] / GB})
    return rows
