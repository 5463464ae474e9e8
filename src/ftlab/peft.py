"""Parameter-efficient fine-tuning, from scratch: LoRA, QLoRA, multi-LoRA serving, prompt
tuning, prefix tuning and bottleneck adapters.

Names follow Hugging Face peft (``lora_A``, ``lora_B``, ``scaling``, ``r``, ``lora_alpha``,
``target_modules``, ``num_virtual_tokens``, ``merge``) so a reader who opens
peft/tuners/lora/layer.py afterwards meets the same words.

Every method freezes the base model and trains only its own few parameters.
``PromptTuningModel`` and ``PrefixTuningModel`` wrap a TinyGPT and keep its
``forward`` signature, so ``ftlab.train.train`` and ``ftlab.generation.generate``
work on them unchanged, KV cache included.
"""
from __future__ import annotations

import copy
import math
from contextlib import contextmanager
from typing import Iterable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .quant import NF4Weight, dequantize_blockwise, quantize_blockwise
from .tasks import LETTERS, Item, Task
from .tokenizer import encode
from .train import lm_loss
from .optim import AdamW

__all__ = [
    "LoRALinear", "add_lora", "merge_lora", "NF4Linear", "add_qlora", "training_state_bytes",
    "MultiLoRALinear", "add_multi_lora", "use_adapter",
    "PromptTuningModel", "PrefixTuningModel",
    "BottleneckAdapter", "add_adapters",
    "LAST_LETTER", "FIRST_LETTER", "letter_task",
    "count_trainable", "check_lora_layer", "check_lora_param_count", "check_nf4_roundtrip",
]


# --- argument checks (kept out of the classes so their source reads cleanly) --------
def _check_int(name: str, value, lo: int = 1) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < lo:
        raise ValueError(f"{name} must be an int >= {lo}, got {value!r}")


def _check_linear(base) -> None:
    if not isinstance(base, nn.Linear):
        raise TypeError(f"base must be an nn.Linear, got {type(base).__name__}")


def _check_lora_args(base, r, lora_alpha, lora_dropout=0.0) -> None:
    _check_linear(base)
    _check_int("r", r)
    if r > min(base.in_features, base.out_features):
        raise ValueError(f"r={r} exceeds min(in_features, out_features) = "
                         f"{min(base.in_features, base.out_features)} of {base}")
    if isinstance(lora_alpha, bool) or not isinstance(lora_alpha, (int, float)) or not lora_alpha > 0:
        raise ValueError(f"lora_alpha must be a number > 0, got {lora_alpha!r}")
    if isinstance(lora_dropout, bool) or not isinstance(lora_dropout, (int, float)) \
            or not 0.0 <= lora_dropout < 1.0:
        raise ValueError(f"lora_dropout must be in [0, 1), got {lora_dropout!r}")


def count_trainable(model: nn.Module) -> int:
    """How many parameters have ``requires_grad``: what an optimizer would update."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# --- this chapter's tasks ---------------------------------------------------------------
def letter_task(name: str, position: int) -> Task:
    """A held-out task: the prompt ``"<name> <word>"`` asks for one letter of the word.

    The answer is the word's letter at ``position``. Both words are new to every
    checkpoint, so the base model scores zero; a fine-tune learns them in well under
    100 steps, which lets one page run a dozen fine-tunes.
    """
    if not isinstance(name, str) or not name.isalpha() or not name.islower():
        raise ValueError(f"name must be a lower-case word, got {name!r}")
    if isinstance(position, bool) or position not in (0, -1):
        raise ValueError(
            f"position must be 0 (first letter) or -1 (last letter), got {position!r}"
        )

    def sample(rng) -> Item:
        word = "".join(rng.choice(LETTERS) for _ in range(rng.randint(3, 7)))
        return Item(name, f"{name} {word}", word[position])

    which = "first" if position == 0 else "last"
    return Task(
        name,
        f"the {which} letter of a word (held out; chapter 02)",
        sample,
        False,
        max_answer_len=2,
    )


LAST_LETTER = letter_task("last", -1)
FIRST_LETTER = letter_task("first", 0)


# --- LoRA -----------------------------------------------------------------------------
class LoRALinear(nn.Module):
    """A frozen ``nn.Linear`` plus a trainable low-rank update.

    h = W0 x + scaling · B A x.
    Hu et al. 2021 (LoRA). ``lora_A`` is (r, in_features) and ``lora_B`` is
    (out_features, r), so ΔW = B A has the shape of W0 and rank at most r.
    B starts at zero, so the layer starts as exactly the base layer. A starts
    Kaiming-uniform (``a=sqrt(5)``, nn.Linear's own default), as in peft's
    ``reset_lora_parameters`` (peft/tuners/lora/layer.py); the paper says Gaussian.
    ``scaling`` is lora_alpha / r, or lora_alpha / sqrt(r) with ``use_rslora``
    (Kalajdzievski 2023, rsLoRA), which keeps the update's size steady as r grows.
    """

    def __init__(
        self,
        base: nn.Linear,
        r: int,
        lora_alpha: float,
        lora_dropout: float = 0.0,
        use_rslora: bool = False,
    ):
        super().__init__()
        _check_lora_args(base, r, lora_alpha, lora_dropout)
        self.base = base.requires_grad_(False)   # W0 never trains
        self.r, self.lora_alpha = r, lora_alpha
        self.scaling = lora_alpha / math.sqrt(r) if use_rslora else lora_alpha / r
        self.lora_dropout = nn.Dropout(lora_dropout)
        w = base.weight
        self.lora_A = nn.Parameter(
            torch.empty(r, base.in_features, device=w.device, dtype=w.dtype)
        )
        self.lora_B = nn.Parameter(
            torch.zeros(base.out_features, r, device=w.device, dtype=w.dtype)
        )
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))

    def forward(self, x):
        # (..., in) -> (..., r) -> (..., out): never forms the (out, in) matrix B A.
        return (
            self.base(x)
            + (self.lora_dropout(x) @ self.lora_A.T @ self.lora_B.T) * self.scaling
        )

    @torch.no_grad()
    def merge(self) -> nn.Linear:
        """A plain ``nn.Linear`` with weight W0 + scaling · B A.

        It adds zero extra latency at inference. The sum is formed in fp32 and cast
        once to the base's dtype: adding a small update to a bf16 weight in bf16 would
        round part of it away twice. The LoRA layer itself is left intact, so the
        merge can be undone by keeping it.
        """
        b, w = self.base, self.base.weight
        merged = nn.Linear(b.in_features, b.out_features, bias=b.bias is not None,
                           device=w.device, dtype=w.dtype)
        delta = self.scaling * (self.lora_B.float() @ self.lora_A.float())
        merged.weight.copy_((w.float() + delta).to(w.dtype))
        if b.bias is not None:
            merged.bias.copy_(b.bias)
        return merged.requires_grad_(False)


def _find_linears(model: nn.Module, target_modules) -> list[str]:
    """Dotted names of the nn.Linear modules whose last name component is in ``target_modules``."""
    if isinstance(target_modules, str) or not isinstance(target_modules, Iterable):
        raise TypeError(f"target_modules must be a list of module names such as ['q_proj', 'v_proj'], "
                        f"got {target_modules!r}")
    targets = list(target_modules)
    if not targets:
        raise ValueError("target_modules is empty")
    found = [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and n.split(".")[-1] in targets]
    missing = sorted(set(targets) - {n.split(".")[-1] for n in found})
    if missing:
        known = sorted({n.split(".")[-1] for n, m in model.named_modules() if isinstance(m, nn.Linear)})
        raise ValueError(f"target_modules {missing} match no nn.Linear in the model; its Linear names are {known}")
    return found


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, new)


def add_lora(model: nn.Module, target_modules: Sequence[str], r: int, lora_alpha: float,
             lora_dropout: float = 0.0, use_rslora: bool = False) -> int:
    """Freeze ``model`` and wrap each targeted nn.Linear in a ``LoRALinear``, in place.

    ``target_modules`` are last name components (``["q_proj", "v_proj"]``), as in peft's
    ``LoraConfig``. Returns the number of trainable parameters.
    """
    if any(isinstance(m, (LoRALinear, NF4Linear)) for m in model.modules()):
        raise ValueError("model already has LoRA layers (one adapter only): call merge_lora first")
    names = _find_linears(model, target_modules)
    for name in names:  # check every layer before changing any
        _check_lora_args(model.get_submodule(name), r, lora_alpha, lora_dropout)
    model.requires_grad_(False)
    for name in names:
        _replace(model, name, LoRALinear(model.get_submodule(name), r, lora_alpha, lora_dropout, use_rslora))
    return count_trainable(model)


def merge_lora(model: nn.Module) -> nn.Module:
    """Replace every ``LoRALinear`` (or QLoRA ``NF4Linear``) with its merged ``nn.Linear``, in place."""
    for name, m in list(model.named_modules()):
        if isinstance(m, (LoRALinear, NF4Linear)):
            _replace(model, name, m.merge())
    return model


# --- QLoRA ----------------------------------------------------------------------------
class NF4Linear(nn.Module):
    """QLoRA's layer (Dettmers et al. 2023): a frozen NF4 weight, dequantized in every
    forward, plus a trainable LoRA update: h = deq(W_nf4) x + b + scaling · B A x.

    The base weight is stored as packed 4-bit NF4 codes with one absmax per block of
    ``block_size`` (``ftlab.quant.NF4Weight``); ``double_quant`` stores those absmax
    constants in 8 bit too. Gradients flow *through* the dequantized weight to x, but
    the weight itself is a constant: only ``lora_A`` and ``lora_B`` train. bitsandbytes
    dequantizes into bf16 (``bnb_4bit_compute_dtype``); this CPU lab computes in
    float32. The NF4 tensors are plain attributes, not buffers: ``.to(device)`` does
    not move them.
    """

    def __init__(
        self,
        base: nn.Linear,
        r: int,
        lora_alpha: float,
        lora_dropout: float = 0.0,
        use_rslora: bool = False,
        block_size: int = 64,
        double_quant: bool = True,
    ):
        super().__init__()
        _check_lora_args(base, r, lora_alpha, lora_dropout)
        w = base.weight.detach()
        self.weight_nf4 = NF4Weight.from_float(
            w, block_size=block_size, double_quant=double_quant
        )
        self.register_buffer(
            "bias", None if base.bias is None else base.bias.detach().clone()
        )
        self.in_features, self.out_features = base.in_features, base.out_features
        self.r, self.lora_alpha = r, lora_alpha
        self.scaling = lora_alpha / math.sqrt(r) if use_rslora else lora_alpha / r
        self.lora_dropout = nn.Dropout(lora_dropout)
        self.lora_A = nn.Parameter(torch.empty(r, base.in_features, dtype=w.dtype))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, r, dtype=w.dtype))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))

    def forward(self, x):
        W = self.weight_nf4.dequantize()  # (out, in), rebuilt on the fly, never stored
        return (
            F.linear(x, W, self.bias)
            + (self.lora_dropout(x) @ self.lora_A.T @ self.lora_B.T) * self.scaling
        )

    @torch.no_grad()
    def merge(self) -> nn.Linear:
        """A plain float ``nn.Linear`` with weight deq(W_nf4) + scaling · B A.

        It computes exactly what the trained layer computes.
        """
        W = self.weight_nf4.dequantize()
        merged = nn.Linear(
            self.in_features,
            self.out_features,
            bias=self.bias is not None,
            dtype=W.dtype,
        )
        merged.weight.copy_(W + self.scaling * (self.lora_B @ self.lora_A))
        if self.bias is not None:
            merged.bias.copy_(self.bias)
        return merged.requires_grad_(False)


def add_qlora(model: nn.Module, target_modules: Sequence[str], r: int, lora_alpha: float,
              lora_dropout: float = 0.0, use_rslora: bool = False, block_size: int = 64,
              double_quant: bool = True) -> int:
    """Freeze ``model``, quantize each targeted nn.Linear to NF4 and put LoRA on it (``NF4Linear``), in place.

    QLoRA quantizes every linear layer of the blocks and trains LoRA on all of them;
    pass all the names to do the same. Returns the number of trainable parameters.
    """
    if any(isinstance(m, (LoRALinear, NF4Linear)) for m in model.modules()):
        raise ValueError("model already has LoRA layers (one adapter only): call merge_lora first")
    names = _find_linears(model, target_modules)
    for name in names:  # check every layer before changing any
        lin = model.get_submodule(name)
        _check_lora_args(lin, r, lora_alpha, lora_dropout)
        _check_int("block_size", block_size)
        if lin.weight.numel() % block_size:
            raise ValueError(f"block_size={block_size} does not divide the {lin.weight.numel()} weights of {name}")
    model.requires_grad_(False)
    for name in names:
        _replace(model, name, NF4Linear(model.get_submodule(name), r, lora_alpha, lora_dropout, use_rslora,
                                        block_size, double_quant))
    return count_trainable(model)


def training_state_bytes(model: nn.Module, ids: torch.Tensor, loss_mask: torch.Tensor) -> dict[str, int]:
    """Bytes of weights, gradients and AdamW state after one real training step on a copy of ``model``.

    Measured, not computed: it runs forward, backward and ``AdamW.step()`` and adds up
    the tensors that exist afterwards. Frozen weights get no gradient and no optimizer
    state; NF4 weights count their packed codes and scales.
    """
    if ids.shape != loss_mask.shape:
        raise ValueError(f"ids {tuple(ids.shape)} and loss_mask {tuple(loss_mask.shape)} differ in shape")
    m = copy.deepcopy(model).train()
    params = [p for p in m.parameters() if p.requires_grad]
    if not params:
        raise ValueError("model has no trainable parameters")
    opt = AdamW(params, lr=1e-4)
    lm_loss(m, ids, loss_mask).backward()
    opt.step()
    nbytes = lambda t: t.numel() * t.element_size()
    weights = sum(nbytes(p) for p in m.parameters())
    weights += sum(l.weight_nf4.nbytes for l in m.modules() if isinstance(l, NF4Linear))
    grads = sum(nbytes(p.grad) for p in m.parameters() if p.grad is not None)
    state = sum(nbytes(v) for st in opt.state.values() for v in st.values()
                if torch.is_tensor(v) and v.dim() > 0)  # exp_avg, exp_avg_sq (the step counter is a scalar)
    return {"weights": weights, "gradients": grads, "optimizer": state}


# --- multi-LoRA serving ---------------------------------------------------------------
class MultiLoRALinear(nn.Module):
    """One frozen base layer, several LoRA adapters; each row of a batch picks its own.

    The idea behind S-LoRA (Sheng et al. 2023) and Punica (Chen et al. 2023): the base
    weights are shared and only the small (A, B) pairs differ per request. Those
    systems gather the rows of each adapter inside one custom kernel; this loop over
    adapters computes the same thing in plain PyTorch.
    """

    def __init__(self, base: nn.Linear):
        super().__init__()
        _check_linear(base)
        self.base = base.requires_grad_(False)
        self.lora_A, self.lora_B = nn.ParameterDict(), nn.ParameterDict()
        self.scaling: dict[str, float] = {}
        self.adapter_ids = None  # (B,) or (1,): index into self.lora_A per row; -1 = base only

    def add_adapter(self, name: str, lora: LoRALinear) -> None:
        if not torch.equal(lora.base.weight, self.base.weight):
            raise ValueError(f"adapter {name!r} was trained on different base weights")
        self.lora_A[name] = nn.Parameter(lora.lora_A.detach().clone(), requires_grad=False)
        self.lora_B[name] = nn.Parameter(lora.lora_B.detach().clone(), requires_grad=False)
        self.scaling[name] = lora.scaling

    def forward(self, x):
        y = self.base(x)
        if self.adapter_ids is None:
            return y
        ids = self.adapter_ids.expand(x.shape[0]) if self.adapter_ids.numel() == 1 else self.adapter_ids
        if ids.shape[0] != x.shape[0]:
            raise ValueError(f"{ids.shape[0]} adapter choices for a batch of {x.shape[0]} rows")
        for i, name in enumerate(self.lora_A):
            rows = ids == i  # the requests served by this adapter
            if rows.any():
                A, B = self.lora_A[name], self.lora_B[name]
                y[rows] = y[rows] + (x[rows] @ A.T @ B.T) * self.scaling[name]
        return y


def add_multi_lora(model: nn.Module, adapters: dict[str, nn.Module]) -> nn.Module:
    """Load several LoRA-trained copies of ``model`` as named adapters over its one base, in place.

    ``adapters`` maps a name to a model made by ``add_lora`` on a copy of ``model``.
    Pick adapters per request with ``use_adapter``. Returns ``model``.
    """
    if not isinstance(adapters, dict) or not adapters:
        raise ValueError(f"adapters must be a non-empty dict name -> LoRA model, got {adapters!r}")
    model.requires_grad_(False)
    for name, tuned in adapters.items():
        if not isinstance(name, str) or not name or "." in name:
            raise ValueError(f"adapter name must be a non-empty str without '.', got {name!r}")
        loras = [(n, m) for n, m in tuned.named_modules() if isinstance(m, LoRALinear)]
        if not loras:
            raise ValueError(f"adapter {name!r} has no LoRALinear layers: was add_lora applied to it?")
        for path, lora in loras:
            try:
                layer = model.get_submodule(path)
            except AttributeError:
                raise ValueError(f"adapter {name!r} has a LoRA layer at {path!r}, which the model lacks") from None
            if not isinstance(layer, MultiLoRALinear):
                _check_linear(layer)
                layer = MultiLoRALinear(layer)
                _replace(model, path, layer)
            layer.add_adapter(name, lora)
    return model


@contextmanager
def use_adapter(model: nn.Module, adapter):
    """Route requests through adapters: a name (or None, the base) for the whole batch,
    or a list with one name or None per row, as in peft's ``adapter_names`` argument."""
    layers = [m for m in model.modules() if isinstance(m, MultiLoRALinear)]
    if not layers:
        raise ValueError("model has no MultiLoRALinear layers: call add_multi_lora first")
    per_row = [adapter] if adapter is None or isinstance(adapter, str) else list(adapter)
    known = {n for m in layers for n in m.lora_A}
    if not per_row:
        raise ValueError("adapter is an empty list: give one name (or None) per row")
    unknown = sorted({a for a in per_row if a is not None and a not in known}, key=str)
    if unknown:
        raise ValueError(f"unknown adapter(s) {unknown}; known: {sorted(known)}")
    try:
        for m in layers:  # an adapter that skips this layer counts as the base here (-1)
            names = list(m.lora_A)
            m.adapter_ids = torch.tensor([names.index(a) if a in names else -1 for a in per_row],
                                         device=m.base.weight.device)
        yield model
    finally:
        for m in layers:
            m.adapter_ids = None


# --- prompt tuning --------------------------------------------------------------------
class PromptTuningModel(nn.Module):
    """Prompt tuning (Lester et al. 2021): N trained embeddings ("soft tokens") in front of every input.

    Only ``prompt_embeddings`` (N, d_model) train. The soft tokens take positions 0..N-1
    and shift the real tokens to N, N+1, ...; they are fed once, on the first call, and
    afterwards live in the KV cache, so ``generate`` works unchanged. The logits
    returned are those of the real tokens only. Each input may be at most
    ``block_size - N`` tokens long.
    The soft tokens start as embeddings of real tokens (``init_text``, cycled, or
    random vocabulary entries): Lester et al. found this beats a random start.
    """

    def __init__(self, base: nn.Module, num_virtual_tokens: int, init_text: str | None = None):
        super().__init__()
        _check_int("num_virtual_tokens", num_virtual_tokens)
        if num_virtual_tokens >= base.config.block_size:
            raise ValueError(f"num_virtual_tokens={num_virtual_tokens} leaves no room in "
                             f"block_size={base.config.block_size}")
        if init_text is not None and (not isinstance(init_text, str) or not init_text):
            raise ValueError(f"init_text must be a non-empty str or None, got {init_text!r}")
        self.base, self.config = base.requires_grad_(False), base.config
        self.num_virtual_tokens = n = num_virtual_tokens
        vocab = base.embed_tokens.weight.detach()
        if init_text is None:
            idx = torch.randint(vocab.shape[0], (n,), device=vocab.device)
        else:
            ids = encode(init_text)
            idx = torch.tensor([ids[i % len(ids)] for i in range(n)], device=vocab.device)
        self.prompt_embeddings = nn.Parameter(vocab[idx].clone())  # (N, C)

    @property
    def device(self) -> torch.device:
        return self.prompt_embeddings.device

    def num_params(self, trainable_only: bool = False) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    def forward(self, input_ids=None, attention_mask=None, position_ids=None,
                past_key_values=None, use_cache=False, inputs_embeds=None):
        """TinyGPT's forward with the soft tokens put in front; logits of the real tokens only."""
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids and inputs_embeds")
        x = self.base.embed_tokens(input_ids) if inputs_embeds is None else inputs_embeds  # (B, T, C)
        B, N = x.shape[0], self.num_virtual_tokens
        first = past_key_values is None  # later calls find the soft tokens in the cache
        if first:
            x = torch.cat([self.prompt_embeddings.to(x.dtype).expand(B, N, -1), x], dim=1)
        if attention_mask is not None:  # the soft tokens are always attended to
            attention_mask = torch.cat([attention_mask.new_ones(B, N), attention_mask], dim=1)
        if position_ids is not None:  # given for the real tokens: shift past the soft ones
            position_ids = position_ids + N
            if first:
                soft = torch.arange(N, device=x.device).expand(B, N)
                position_ids = torch.cat([soft, position_ids], dim=1)
        out = self.base(inputs_embeds=x, attention_mask=attention_mask, position_ids=position_ids,
                        past_key_values=past_key_values, use_cache=use_cache)
        logits, cache = out if use_cache else (out, None)
        if first:
            logits = logits[:, N:]
        return (logits, cache) if use_cache else logits


# --- prefix tuning --------------------------------------------------------------------
class PrefixTuningModel(nn.Module):
    """Prefix tuning (Li & Liang 2021): trained keys and values in front of every layer's attention.

    The N prefixes enter each layer as ``past_key_values``; every real token attends to
    them (the attention mask gets N leading ones). They take no positions: real tokens
    keep positions 0, 1, ... exactly as in the base model. The cache returned holds
    the prefixes, so ``generate``'s decode steps pass them back unchanged.

    ``encoder_hidden_size=None`` trains the prefixes directly, starting from the base
    model's own keys and values for N random tokens (Li & Liang found real-word
    activations a better start than random). An int reparameterises them as
    MLP(P'), with P' (N, d_model) and a tanh MLP of that hidden width, which the
    paper uses to stabilise training; peft calls this ``prefix_projection``. After
    training only the MLP's output matters: ``prefix_key_values`` computes it.
    """

    def __init__(self, base: nn.Module, num_virtual_tokens: int, encoder_hidden_size: int | None = None):
        super().__init__()
        _check_int("num_virtual_tokens", num_virtual_tokens)
        if encoder_hidden_size is not None:
            _check_int("encoder_hidden_size", encoder_hidden_size)
        self.base, self.config = base.requires_grad_(False), base.config
        self.num_virtual_tokens = n = num_virtual_tokens
        cfg, w = base.config, base.embed_tokens.weight
        L, C = cfg.n_layer, cfg.d_model
        if encoder_hidden_size is None:
            with torch.no_grad():  # keys and values of real tokens, one row per prefix
                ids = torch.randint(cfg.vocab_size, (1, n), device=w.device)
                _, cache = base(ids, use_cache=True)
                kv = torch.stack([torch.stack(layer) for layer in cache])  # (L, 2, 1, H, N, hd)
            self.prefix = nn.Parameter(kv[:, :, 0].permute(3, 0, 1, 2, 4).reshape(n, L * 2 * C))
            self.prefix_encoder = nn.Identity()
        else:
            self.prefix = nn.Parameter(torch.randn(n, C, device=w.device, dtype=w.dtype))
            self.prefix_encoder = nn.Sequential(
                nn.Linear(C, encoder_hidden_size), nn.Tanh(), nn.Linear(encoder_hidden_size, L * 2 * C),
            ).to(device=w.device, dtype=w.dtype)

    @property
    def device(self) -> torch.device:
        return self.prefix.device

    def num_params(self, trainable_only: bool = False) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    def prefix_key_values(
        self, batch_size: int
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The prefixes as a KV cache: (k, v) per layer, each (B, H, N, head_dim)."""
        cfg, n = self.config, self.num_virtual_tokens
        H, hd = cfg.n_head, cfg.d_model // cfg.n_head
        p = self.prefix_encoder(self.prefix)                                # (N, L*2*C)
        p = p.view(n, cfg.n_layer, 2, H, hd).permute(1, 2, 3, 0, 4)  # (L, 2, H, N, hd)
        return [
            (
                p[i, 0].expand(batch_size, -1, -1, -1),
                p[i, 1].expand(batch_size, -1, -1, -1),
            )
            for i in range(cfg.n_layer)
        ]

    def forward(self, input_ids=None, attention_mask=None, position_ids=None,
                past_key_values=None, use_cache=False, inputs_embeds=None):
        """TinyGPT's forward with the trained prefixes in every layer's attention."""
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids and inputs_embeds")
        B, T = (input_ids if input_ids is not None else inputs_embeds).shape[:2]
        n = self.num_virtual_tokens
        if past_key_values is None:  # later calls get the prefixes back inside the cache
            past_key_values = self.prefix_key_values(B)
        seen = past_key_values[0][0].shape[2] - n  # real tokens already in the cache
        if position_ids is None:  # count real tokens only, as the base model does
            if attention_mask is None:
                position_ids = torch.arange(seen, seen + T, device=self.device).expand(B, T)
            else:
                position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, -T:]
        if attention_mask is not None:
            attention_mask = torch.cat([attention_mask.new_ones(B, n), attention_mask], dim=1)
        return self.base(input_ids, attention_mask=attention_mask, position_ids=position_ids,
                         past_key_values=past_key_values, use_cache=use_cache, inputs_embeds=inputs_embeds)


# --- bottleneck adapters --------------------------------------------------------------
class BottleneckAdapter(nn.Module):
    """Houlsby et al. 2019: a layer's output h becomes h + up(act(down(h))), with the base frozen.

    ``adapter_down`` (d -> m) and ``adapter_up`` (m -> d) are the names of the
    adapter-hub ``adapters`` library. ``adapter_up`` starts at zero, so the adapter
    starts as the identity; the paper uses a near-zero Gaussian for the same end.
    The nonlinearity is GELU, as in TinyGPT's MLP. Unlike LoRA an adapter cannot be
    merged away: the nonlinearity sits between its two projections.
    """

    def __init__(self, base: nn.Linear, bottleneck_dim: int):
        super().__init__()
        _check_linear(base)
        _check_int("bottleneck_dim", bottleneck_dim)
        self.base = base.requires_grad_(False)
        d, w = base.out_features, base.weight
        self.adapter_down = nn.Linear(d, bottleneck_dim, device=w.device, dtype=w.dtype)
        self.adapter_up = nn.Linear(bottleneck_dim, d, device=w.device, dtype=w.dtype)
        nn.init.zeros_(self.adapter_up.weight)
        nn.init.zeros_(self.adapter_up.bias)

    def forward(self, x):
        h = self.base(x)
        return h + self.adapter_up(F.gelu(self.adapter_down(h)))


def add_adapters(model: nn.Module, bottleneck_dim: int, target_modules: Sequence[str] = ("o_proj", "down_proj"),
                 train_layer_norms: bool = False) -> int:
    """Freeze ``model`` and put a ``BottleneckAdapter`` after each targeted nn.Linear, in place.

    The default targets are Houlsby's two places: after the attention output
    projection and after the MLP, before each residual add. Houlsby et al. also train
    the LayerNorms; ``train_layer_norms=True`` does so. Returns the trainable count.
    """
    _check_int("bottleneck_dim", bottleneck_dim)
    names = _find_linears(model, target_modules)
    model.requires_grad_(False)
    for name in names:
        _replace(model, name, BottleneckAdapter(model.get_submodule(name), bottleneck_dim))
    if train_layer_norms:
        for m in model.modules():
            if isinstance(m, nn.LayerNorm):
                m.requires_grad_(True)
    return count_trainable(model)


# --- the exercise checker -------------------------------------------------------------
def check_lora_layer(cls, in_features: int = 24, out_features: int = 16, r: int = 4,
                     lora_alpha: float = 8.0) -> None:
    """Check a reader's LoRA layer ``cls(base, r, lora_alpha)`` by what it does.

    Either orientation of A and B is accepted. Raises AssertionError saying what is
    wrong; prints one line when every check passes.
    """
    if not isinstance(cls, type):
        raise TypeError(f"pass the class itself, not {type(cls).__name__}: check_lora_layer(MyLoRA)")
    torch.manual_seed(0)
    base = nn.Linear(in_features, out_features)
    ref = copy.deepcopy(base)  # the untouched base, to compare against
    x = torch.randn(5, in_features)
    layer = cls(base, r, lora_alpha)
    layer.eval()
    params = dict(layer.named_parameters())
    trainable = {n: p for n, p in params.items() if p.requires_grad}
    shapes = {n: tuple(p.shape) for n, p in trainable.items()}

    for n, p in params.items():
        assert not (p.requires_grad and any(p is q for q in base.parameters())), \
            f"base parameter {n!r} still trains: freeze the base layer (requires_grad_(False))"
    want = r * (in_features + out_features)
    assert sum(p.numel() for p in trainable.values()) == want, \
        f"trainable parameters {shapes} total {sum(p.numel() for p in trainable.values())}, " \
        f"expected r * (in + out) = {want}: only A and B should train, with no bias"
    mats = [p for p in trainable.values() if p.dim() == 2]
    assert len(mats) == 2, f"expected exactly two trainable matrices A and B, found {shapes}"

    with torch.no_grad():
        torch.testing.assert_close(layer(x), ref(x), msg=lambda m: (
            "the output at initialisation differs from the base layer's: start B at zero so ΔW = 0\n" + m))

        gen = torch.Generator().manual_seed(1)
        for p in mats:  # pretend training happened
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
        out = layer(x)
        eye = torch.eye(in_features)
        dW = (layer(eye) - ref(eye)).T  # (out, in): the update the layer actually applies
        assert dW.abs().max() > 1e-6, "changing A and B did not change the output: does forward use them?"
        prods = [a @ b for a, b in (mats, mats[::-1]) if a.shape[1] == b.shape[0]]
        prods = [P if P.shape == (out_features, in_features) else P.T for P in prods
                 if P.shape in ((out_features, in_features), (in_features, out_features))]
        assert prods, f"A and B of shapes {shapes} do not multiply to a {out_features}x{in_features} update"
        s = lora_alpha / r
        if not any(torch.allclose(dW, s * P, rtol=1e-4, atol=1e-5) for P in prods):
            P = prods[0]
            c = float((dW * P).sum() / (P * P).sum())
            assert False, (f"the update is {c:.4g} x (B A), expected scaling = lora_alpha / r = {s:.4g}"
                           + (": scaling is missing" if abs(c - 1) < 1e-3 else ""))

        assert hasattr(layer, "merge"), "add a merge() method that returns an nn.Linear"
        merged = layer.merge()
        assert isinstance(merged, nn.Linear), f"merge() must return an nn.Linear, got {type(merged).__name__}"
        torch.testing.assert_close(merged(x), out, msg=lambda m: (
            "merge() gives a layer whose output differs from the unmerged one: "
            "the merged weight is W0 + scaling * B A, and keep the bias\n" + m))
    print(f"check_lora_layer({cls.__name__}): all checks passed "
          f"({want} trainable parameters, scaling {s:g}, merge matches)")


def check_lora_param_count(fn) -> None:
    """Check ``fn(shape, r, target_modules) -> int``: LoRA parameters of a whole model.

    ``shape`` is an ``ftlab.memory.ModelShape``; the answer is r · (in + out) summed
    over every targeted linear of every layer, with grouped-query attention's smaller
    k_proj / v_proj outputs.
    """
    from .memory import LLAMA2_7B, LLAMA2_70B, lora_params, target_shapes
    cases = [(LLAMA2_7B, 8, ["q_proj", "v_proj"]), (LLAMA2_7B, 16, ["q_proj", "k_proj", "v_proj", "o_proj"]),
             (LLAMA2_7B, 16, ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]),
             (LLAMA2_70B, 64, ["k_proj", "v_proj"]), (LLAMA2_70B, 4, ["down_proj"])]
    for shape, r, mods in cases:
        want = lora_params(target_shapes(shape, mods), r)
        got = fn(shape, r, list(mods))
        assert got == want, (f"{shape.name}, r={r}, {mods}: expected {want:,}, got {got!r}"
                             + (" (70B uses grouped-query attention: k_proj/v_proj output "
                                f"n_kv_heads·head_dim = {shape.n_kv_heads * shape.head_dim})"
                                if shape.n_kv_heads != shape.n_heads else ""))
    print("check_lora_param_count: all checks passed (7B and 70B, with grouped-query attention)")


def check_nf4_roundtrip(fn) -> None:
    """Check ``fn(w, codebook, block_size) -> w_hat``: blockwise absmax quantization to the
    nearest codebook value and back, as QLoRA stores NF4 (ties may go either way)."""
    from .quant import int4_codebook, nf4_codebook
    gen = torch.Generator().manual_seed(0)
    for cb_name, cb in (("nf4", nf4_codebook()), ("int4", int4_codebook())):
        for shape, bs in (((8, 64), 64), ((4, 96), 32), ((2, 256), 256)):
            w = torch.randn(shape, generator=gen) * 0.02
            w[0, 3] = 0.0
            codes, absmax = quantize_blockwise(w, cb, bs)
            want = dequantize_blockwise(codes, absmax, cb, w.shape, bs)
            got = fn(w, cb, bs)
            assert isinstance(got, torch.Tensor) and got.shape == w.shape, \
                f"return a tensor of the input's shape {tuple(w.shape)}, got {getattr(got, 'shape', type(got))}"
            amax = w.reshape(-1, bs).abs().amax(1, keepdim=True)
            close = torch.isclose(got, want, atol=1e-7, rtol=0)
            # a value exactly between two codes may round either way; nothing else may differ
            if not close.all():
                mid = ((cb[1:] + cb[:-1]) / 2)
                normed = (w.reshape(-1, bs) / amax).reshape(w.shape)
                tie = (normed[~close, None] - mid).abs().min(-1).values < 1e-6
                assert tie.all(), (f"{cb_name}, block {bs}: {int((~close).sum())} values differ from the "
                                   f"nearest code with one absmax per block of {bs}, e.g. {w[~close][0].item():.5f} -> "
                                   f"{got[~close][0].item():.5f}, expected {want[~close][0].item():.5f}")
    print("check_nf4_roundtrip: all checks passed (nf4 and int4 tables, block sizes 32, 64, 256)")
