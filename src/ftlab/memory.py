"""Training memory and compute, on the back of an envelope: full fine-tuning, LoRA, QLoRA.

Pure arithmetic, no torch. Every figure is in bytes, and the tables use GB = 1e9 bytes
(decimal, as GPU datasheets and most blog posts do; 1 GiB = 1.074 GB).

What the estimates count, and what they leave out:

- model weights, gradients and optimizer state, per parameter (the ZeRO accounting);
- activations of the transformer layers (Korthikanti et al. 2022's accounting, applied
  to a Llama block: no dropout, fused attention, SwiGLU; see ``activation_terms``);
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
    """Mixed-precision AdamW, 16 B/param: 2 (bf16 weights) + 2 (grads) + 12 (fp32 master, m, v).

    Rajbhandari et al. 2019 (ZeRO), section 3.1: 2Ψ + 2Ψ + KΨ bytes with K = 12 for Adam,
    so 16Ψ; their 7.5B example needs 120 GB before activations.
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
                double_quant: bool = True, block_size: int = 64, dq_block: int = 256) -> dict[str, float]:
    """NF4 base (≈ 0.516 B/param with double quantization) plus a 16 B/param adapter.

    ``n_unquantized`` is the part of the base kept in bf16: bitsandbytes quantizes only
    nn.Linear layers, and transformers leaves lm_head alone, so the embeddings, the head and
    the norms stay at 2 B/param. ``memory_table`` fills it in from the shape.
    """
    n, k = _check_adapter(n_params, n_lora_params)
    u = _check_number("n_unquantized", n_unquantized, allow_zero=True)
    if u >= n:
        raise ValueError(f"n_unquantized={n_unquantized!r} must be smaller than n_params={n_params!r}")
    nf4 = (n - u) * bits_per_param_nf4(double_quant, block_size, dq_block) / 8
    return _breakdown(weights=nf4 + 2 * u + 2 * k, trainable=k)


# --- activations ---

def activation_terms(shape: ModelShape, batch: int, seq_len: int, bytes_per_value: int = 2,
                     flash_attention: bool = True, dropout: bool = False,
                     mlp: str = "swiglu") -> dict[str, float]:
    """Bytes one transformer layer keeps for the backward pass, tensor group by tensor group.

    The accounting is Korthikanti et al. 2022 ("Reducing Activation Recomputation in Large
    Transformer Models"), section 4.1, which lists what a GPT-3 layer stores with 16-bit
    values and no tensor or sequence parallelism (b batch, s tokens, h hidden, a heads):

    - attention: the shared input of Q/K/V (2sbh), Q and K (4sbh), the softmax output
      (2as²b), its dropout mask (as²b) and dropout output (2as²b), V (2sbh), the input of
      the output projection (2sbh) and the output dropout mask (sbh): 11sbh + 5as²b;
    - MLP: the input (2sbh), the GeLU input and output (8sbh each, a 4h MLP) and the
      dropout mask (sbh): 19sbh;
    - the two layer norms' inputs: 4sbh.

    Summed: sbh·(34 + 5as/h), the paper's equation 1, which ``mlp="gelu"``,
    ``dropout=True``, ``flash_attention=False`` reproduces exactly for a 4h MLP.

    A Llama-2 block differs in four ways, and the defaults follow it:

    - no dropout (``attention_dropout: 0.0`` in its config.json, and no other dropout
      layer), so the masks and the stored dropout outputs go;
    - attention runs in a fused kernel: transformers uses PyTorch SDPA by default, and
      FlashAttention (Dao et al. 2022) never stores the s×s matrix, only the output and
      one fp32 log-sum-exp per query row and head (4·a·s·b bytes);
    - a SwiGLU MLP of width f = d_ff: down_proj(silu(gate_proj(x)) * up_proj(x)) keeps
      x (2sbh) and four f-wide tensors (gate, up, silu(gate), the product): 2sbh + 8sbf;
    - and grouped-query attention stores K and V at n_kv_heads·head_dim wide.

    Not counted: the embeddings, the logits and the loss (see the module docstring); fp32
    copies that an unfused RMSNorm keeps; LoRA's own r-wide tensors.
    """
    _check_shape(shape)
    b, s = _check_int("batch", batch), _check_int("seq_len", seq_len)
    v = _check_int("bytes_per_value", bytes_per_value)
    _check_bool("flash_attention", flash_attention)
    _check_bool("dropout", dropout)
    if mlp not in ("swiglu", "gelu"):
        raise ValueError(f"mlp must be 'swiglu' (Llama) or 'gelu' (GPT), got {mlp!r}")
    h, a = shape.d_model, shape.n_heads
    kv = shape.n_kv_heads * shape.head_dim
    sbh, as2b = s * b * h, a * s * s * b
    mask = 1  # a dropout mask takes one byte per value
    attn = v * s * b * (h + h + kv + kv + h)  # q/k/v input, Q, K, V, o_proj input
    if flash_attention:
        # The kernel recomputes the scores in the backward pass (and regenerates any
        # dropout mask from the RNG state); it keeps one fp32 log-sum-exp per row.
        scores = 4 * a * s * b
    else:
        scores = v * as2b + (dropout * (mask * as2b + v * as2b))
    if mlp == "swiglu":
        mlp_bytes = v * sbh + 4 * v * s * b * shape.d_ff
    else:
        mlp_bytes = v * sbh + 2 * v * s * b * shape.d_ff
    masks = dropout * 2 * mask * sbh  # after the attention output and after the MLP
    return {"attention": float(attn), "scores": float(scores), "mlp": float(mlp_bytes),
            "norms": float(2 * v * sbh), "dropout_masks": float(masks)}


def activation_bytes(shape: ModelShape, batch: int, seq_len: int, checkpointing: bool,
                     bytes_per_value: int = 2, flash_attention: bool = True,
                     dropout: bool = False, mlp: str = "swiglu") -> float:
    """Activation memory of all the transformer layers, kept for the backward pass.

    One layer is ``sum(activation_terms(...).values())``. The defaults describe Llama-2 as
    transformers trains it (fused attention, no dropout, SwiGLU): about 37.5·sbh per
    layer for 7B, 10 GB at batch 1 × 2,048 tokens. ``flash_attention=False`` adds the s×s
    softmax output (eager attention, the worst case), and ``dropout=True, mlp="gelu"`` is
    Korthikanti et al.'s GPT-3 layer, sbh·(34 + 5as/h).

    With full checkpointing (Korthikanti et al., section 5) only each layer's 16-bit input
    stays, 2·sbh bytes per layer, plus one layer's activations while it is recomputed.

    LoRA and QLoRA get the same figure: adapters on every linear layer need those layers'
    inputs for their own gradients.
    """
    _check_bool("checkpointing", checkpointing)
    layer = sum(activation_terms(shape, batch, seq_len, bytes_per_value, flash_attention,
                                 dropout, mlp).values())
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

def memory_table(shape: ModelShape, r: int = 16, target_modules: Sequence[str] = LLAMA_MODULES,
                 batch: int = 1, seq_len: int = 2048, checkpointing: bool = True,
                 flash_attention: bool = True) -> list[dict]:
    """One row per method (full FT, LoRA, QLoRA) with its memory in GB (1e9 bytes).

    Checkpointing is on by default, as in the QLoRA recipes, and attention is a fused
    kernel (SDPA/FlashAttention), as transformers runs it by default. Activations are the
    same for all three rows (see ``activation_bytes``); nothing is sharded across GPUs.
    """
    _check_shape(shape)
    n = shape.n_params
    k = lora_params(target_shapes(shape, target_modules), r)
    # Whatever is not a block linear layer stays bf16 under QLoRA.
    unquantized = max(n - _linear_params(shape), 0)
    act = activation_bytes(shape, batch, seq_len, checkpointing, flash_attention=flash_attention)
    rows = []
    for method, trainable, parts in (("full FT", n, full_ft_bytes(n)),
                                     (f"LoRA r={r}", k, lora_bytes(n, k)),
                                     (f"QLoRA r={r}", k, qlora_bytes(n, k, unquantized))):
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

    offload  "optimizer": the K optimizer bytes live in CPU memory (DeepSpeed's
             ``offload_optimizer``, ZeRO-Offload, Ren et al. 2021); "optimizer+params":
             the sharded weights too (``offload_param``, stage 3 only).
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
        cpu += optimizer * N
        optimizer = 0.0
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
