"""The mechanics of a training job, as the pieces chapter 08's drills break and fix.

Packing with a block-diagonal mask, gradient accumulation normalised by the whole
batch's target tokens, a greedy decoder whose stop tokens and padding side are
arguments (so a drill can get them wrong), new-token embeddings, and the meters that
diagnose a run: saved-activation bytes, matmul FLOPs, KV-cache bytes, gradient norms.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.optim.optimizer import register_optimizer_step_pre_hook

from .chat import Example
from .tokenizer import EOS, EOS_ID, MAX_LEN, PAD_ID, encode

__all__ = ["Packed", "pack", "packed_attention_mask", "packed_logits", "packed_token_losses",
           "token_losses", "accumulated_grads", "masked_mean_naive", "greedy_ids",
           "resize_token_embeddings", "saved_activation_bytes", "linear_flops", "kv_cache_bytes",
           "fake_quantize_kv", "GradNormLog", "log_grad_norms", "forward_checkpointed", "labels_mask"]


def _check_examples(examples) -> list[Example]:
    if isinstance(examples, (str, Example)) or not examples:
        raise ValueError(f"examples must be a non-empty list of ftlab.Example, got {examples!r}")
    for ex in examples:
        if not isinstance(ex, Example):
            raise TypeError(f"expected ftlab.Example, got {type(ex).__name__}: {ex!r}")
    return list(examples)


# --- packing ---

@dataclass
class Packed:
    """Rows of concatenated examples, all (R, max_len) long tensors."""

    input_ids: torch.Tensor     # PAD_ID after the last example of a row
    loss_mask: torch.Tensor     # 1 on each example's completion and EOS
    position_ids: torch.Tensor  # restart at 0 for every example
    seq_ids: torch.Tensor       # which example of the row a token belongs to; -1 on padding

    @property
    def pad_fraction(self) -> float:
        return float((self.seq_ids < 0).float().mean())


def pack(examples: Sequence[Example], max_len: int = MAX_LEN, add_eos: bool = True) -> Packed:
    """Greedily concatenate examples, in order, into rows of ``max_len`` tokens.

    ``add_eos=False`` leaves the end marker off every example, the bug of a tokenizer
    that does not append EOS: packed examples then run into each other.
    """
    examples = _check_examples(examples)
    if isinstance(max_len, bool) or not isinstance(max_len, int) or max_len < 2:
        raise ValueError(f"max_len must be an int >= 2, got {max_len!r}")
    rows, cur = [], []
    for k, ex in enumerate(examples):
        p, c = encode(ex.prompt), encode(ex.completion + (EOS if add_eos else ""))
        if len(p) + len(c) > max_len:
            raise ValueError(f"example {k} of length {len(p) + len(c)} exceeds max_len={max_len}")
        if sum(len(t[0]) for t in cur) + len(p) + len(c) > max_len:
            rows.append(cur)
            cur = []
        cur.append((p + c, [0] * len(p) + [1] * len(c)))
    rows.append(cur)
    R = len(rows)
    out = [torch.full((R, max_len), v, dtype=torch.long) for v in (PAD_ID, 0, 0, -1)]
    for r, row in enumerate(rows):
        t = 0
        for j, (ids, mask) in enumerate(row):
            n = len(ids)
            out[0][r, t:t + n] = torch.tensor(ids)
            out[1][r, t:t + n] = torch.tensor(mask)
            out[2][r, t:t + n] = torch.arange(n)
            out[3][r, t:t + n] = j
            t += n
    return Packed(*out)


def packed_attention_mask(seq_ids: torch.Tensor) -> torch.Tensor:
    """(B, T) example ids -> (B, 1, T, T) bool: causal *and* within the same example.

    A padding token (id -1) may see only itself, so no row of the softmax is empty.
    """
    if not isinstance(seq_ids, torch.Tensor) or seq_ids.dim() != 2:
        raise ValueError(
            "seq_ids must be a (B, T) tensor, "
            f"got {getattr(seq_ids, 'shape', seq_ids)!r}"
        )
    T = seq_ids.shape[1]
    causal = torch.ones(T, T, dtype=torch.bool, device=seq_ids.device).tril()
    same = seq_ids[:, :, None] == seq_ids[:, None, :]                     # (B, T, T)
    eye = torch.eye(T, dtype=torch.bool, device=seq_ids.device)
    return ((causal & same) | eye)[:, None]


def packed_logits(model, input_ids: torch.Tensor, position_ids: torch.Tensor | None = None,
                  seq_ids: torch.Tensor | None = None) -> torch.Tensor:
    """TinyGPT's forward pass over packed rows; (B, T, vocab).

    With ``seq_ids`` each token attends only within its own example (block-diagonal),
    with ``position_ids`` positions restart per example: FlashAttention's varlen kernels
    and TRL's ``padding_free`` do both. With neither, it is the plain causal forward.
    """
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids must be (B, T), got shape {tuple(input_ids.shape)}")
    B, T = input_ids.shape
    if position_ids is None:
        position_ids = torch.arange(T, device=input_ids.device).expand(B, T)
    x = model.embed_tokens(input_ids) + model.embed_positions(position_ids)  # (B, T, C)
    mask = None if seq_ids is None else packed_attention_mask(seq_ids)
    for layer in model.layers:
        x, _ = layer(x, mask)
    return model.lm_head(model.ln_f(x))


def packed_token_losses(model, packed: Packed, isolate: bool = True) -> torch.Tensor:
    """(R, T) next-token cross-entropy of packed rows, zero off the loss mask.

    ``isolate`` uses the block-diagonal mask and restarted positions; ``False`` is naive
    packing, where every token sees all earlier examples of its row.
    """
    if isolate:
        logits = packed_logits(model, packed.input_ids, packed.position_ids, packed.seq_ids)
    else:
        logits = packed_logits(model, packed.input_ids)
    ce = F.cross_entropy(logits[:, :-1].transpose(1, 2), packed.input_ids[:, 1:], reduction="none")
    # A target must be in the same example as the token that predicts it.
    same = packed.seq_ids[:, 1:] == packed.seq_ids[:, :-1]
    out = torch.zeros_like(packed.input_ids, dtype=ce.dtype)
    out[:, 1:] = ce * packed.loss_mask[:, 1:] * same
    return out


# --- losses and gradient accumulation ---

def token_losses(model, ids: torch.Tensor, loss_mask: torch.Tensor) -> torch.Tensor:
    """(B, T-1) next-token cross-entropy, multiplied by the targets' mask."""
    if ids.shape != loss_mask.shape:
        raise ValueError(f"ids {tuple(ids.shape)} and loss_mask {tuple(loss_mask.shape)} differ in shape")
    logits = model(ids)
    ce = F.cross_entropy(logits[:, :-1].transpose(1, 2), ids[:, 1:], reduction="none")
    return ce * loss_mask[:, 1:]


def accumulated_grads(model, ids: torch.Tensor, loss_mask: torch.Tensor, micro_batch_size: int,
                      normalization: str = "global") -> list[torch.Tensor]:
    """Gradients of one optimizer step taken as ``ceil(B / micro_batch_size)`` micro-batches.

    ``"per_micro"`` averages each micro-batch's token losses, then the micro-batches (the
    pre-2024 Trainer); ``"global"`` sums token losses and divides by the target tokens of
    the whole accumulated batch (``num_items_in_batch``). ``"global"`` with one micro-batch
    of size B is the full-batch gradient.
    """
    if normalization not in ("global", "per_micro"):
        raise ValueError(f"normalization must be 'global' or 'per_micro', got {normalization!r}")
    if isinstance(micro_batch_size, bool) or not isinstance(micro_batch_size, int) or micro_batch_size < 1:
        raise ValueError(f"micro_batch_size must be a positive int, got {micro_batch_size!r}")
    params = [p for p in model.parameters() if p.requires_grad]
    model.zero_grad(set_to_none=True)
    starts = range(0, ids.shape[0], micro_batch_size)
    num_items = loss_mask[:, 1:].sum().clamp(min=1)
    for s in starts:
        ce = token_losses(model, ids[s:s + micro_batch_size], loss_mask[s:s + micro_batch_size])
        if normalization == "global":
            loss = ce.sum() / num_items
        else:
            n = loss_mask[s:s + micro_batch_size, 1:].sum().clamp(min=1)
            loss = ce.sum() / n / len(starts)
        loss.backward()
    grads = [p.grad.detach().clone() for p in params]
    model.zero_grad(set_to_none=True)
    return grads


def masked_mean_naive(ce: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``(ce * mask).sum() / mask.sum()``: NaN when every target is masked."""
    return (ce * mask).sum() / mask.sum()


# --- generation with the knobs a drill can get wrong ---

@torch.no_grad()
def greedy_ids(model, prompts: Sequence[str] | Sequence[Sequence[int]], max_new_tokens: int = 16,
               stop_ids: Sequence[int] = (EOS_ID,), padding_side: str = "left",
               position_ids: str = "from_mask") -> tuple[list[list[int]], list[bool]]:
    """Greedy completions as token ids, and whether each stopped on a stop token.

    padding_side   "left" puts every row's next token in the last column; "right"
                   (the bug) reads the next token off a padding column for short prompts.
    position_ids   "from_mask" counts from each row's first real token; "naive" counts
                   from column 0, so a left-padded prompt sits at shifted positions.
    No KV cache: every step re-runs the whole sequence, which is simple and exact.
    """
    if isinstance(prompts, str) or not prompts:
        raise ValueError(f"prompts must be a non-empty list, got {prompts!r}")
    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    if position_ids not in ("from_mask", "naive"):
        raise ValueError(f"position_ids must be 'from_mask' or 'naive', got {position_ids!r}")
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be a positive int, got {max_new_tokens!r}")
    seqs = [encode(p) if isinstance(p, str) else list(p) for p in prompts]
    if max(len(s) for s in seqs) + max_new_tokens > MAX_LEN:
        raise ValueError(f"longest prompt + max_new_tokens {max_new_tokens} exceeds MAX_LEN={MAX_LEN}")
    stop = set(int(s) for s in stop_ids)
    was_training = model.training
    model.eval()
    outs = [[] for _ in seqs]
    done = [False] * len(seqs)
    for _ in range(max_new_tokens):
        rows = [s + o for s, o in zip(seqs, outs)]
        T = max(len(r) for r in rows)
        ids = torch.full((len(rows), T), PAD_ID, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, r in enumerate(rows):
            sl = slice(0, len(r)) if padding_side == "right" else slice(T - len(r), T)
            ids[i, sl], mask[i, sl] = torch.tensor(r), 1
        pos = None
        if position_ids == "naive":
            pos = torch.arange(T).expand(len(rows), T)
        logits = model(ids.to(model.device), attention_mask=mask.to(model.device),
                       position_ids=None if pos is None else pos.to(model.device))
        nxt = logits[:, -1].argmax(-1).tolist()  # the last column: right only if left-padded
        for i, t in enumerate(nxt):
            if not done[i]:
                if t in stop:
                    done[i] = True
                else:
                    outs[i].append(t)
        if all(done):
            break
    model.train(was_training)
    return outs, done


# --- new tokens ---

def resize_token_embeddings(model, n_new: int, init: str = "mean", seed: int = 0) -> list[int]:
    """Append ``n_new`` rows to the input embedding and the output head, in place.

    init  "mean": each new row is the mean of the existing rows (Hewitt 2021;
          transformers' ``mean_resizing=True`` samples around that mean instead);
          "random": N(0, 1) rows, what a fresh ``nn.Embedding`` would hold.
    Returns the new token ids.
    """
    if isinstance(n_new, bool) or not isinstance(n_new, int) or n_new < 1:
        raise ValueError(f"n_new must be a positive int, got {n_new!r}")
    if init not in ("mean", "random"):
        raise ValueError(f"init must be 'mean' or 'random', got {init!r}")
    old_emb, old_head = model.embed_tokens, model.lm_head
    V, C = old_emb.weight.shape
    gen = torch.Generator().manual_seed(seed)
    emb = nn.Embedding(V + n_new, C).to(old_emb.weight.device)
    head = nn.Linear(C, V + n_new, bias=False).to(old_head.weight.device)
    with torch.no_grad():
        for new, old in ((emb, old_emb), (head, old_head)):
            new.weight[:V] = old.weight
            if init == "mean":
                new.weight[V:] = old.weight.mean(0, keepdim=True)
            else:
                new.weight[V:] = torch.randn(n_new, C, generator=gen)
    model.embed_tokens, model.lm_head = emb, head
    model.config.vocab_size = V + n_new
    return list(range(V, V + n_new))


# --- meters ---

def saved_activation_bytes(fn, *args, **kwargs) -> tuple[object, int]:
    """Run ``fn(*args, **kwargs)`` and count the bytes autograd saves for backward.

    Uses ``torch.autograd.graph.saved_tensors_hooks``; a tensor saved twice (or a
    parameter) is counted once, by its storage.
    """
    seen, total = set(), [0]

    def pack_hook(t):
        key = (t.untyped_storage().data_ptr(), t.dtype)
        if key not in seen and not isinstance(t, nn.Parameter):
            seen.add(key)
            total[0] += t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack_hook, lambda t: t):
        out = fn(*args, **kwargs)
    return out, total[0]


@contextmanager
def linear_flops(model):
    """Count the multiply-add FLOPs (2 per MAC) of every nn.Linear call inside the block.

    Yields a dict; ``counts["flops"]`` grows with each forward call, recomputations
    included, which is how gradient checkpointing's extra forward shows up.
    """
    counts = {"flops": 0, "calls": 0}

    def hook(mod, inp, out):
        counts["flops"] += 2 * inp[0].numel() // mod.in_features * mod.in_features * mod.out_features
        counts["calls"] += 1

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Linear)]
    try:
        yield counts
    finally:
        for h in handles:
            h.remove()


def forward_checkpointed(model, input_ids: torch.Tensor, checkpoint: bool = True) -> torch.Tensor:
    """Logits of TinyGPT with each block under ``torch.utils.checkpoint`` (non-reentrant)."""
    B, T = input_ids.shape
    pos = torch.arange(T, device=input_ids.device).expand(B, T)
    x = model.embed_tokens(input_ids) + model.embed_positions(pos)
    for layer in model.layers:
        if checkpoint:
            x, _ = torch.utils.checkpoint.checkpoint(layer, x, use_reentrant=False)
        else:
            x, _ = layer(x)
    return model.lm_head(model.ln_f(x))


def kv_cache_bytes(n_layers: int, n_kv_heads: int, head_dim: int, tokens: int, batch: int = 1,
                   bytes_per_value: float = 2) -> float:
    """2 (K and V) · layers · KV heads · head dim · tokens · batch · bytes per value."""
    for name, v in (("n_layers", n_layers), ("n_kv_heads", n_kv_heads), ("head_dim", head_dim),
                    ("tokens", tokens), ("batch", batch)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive int, got {v!r}")
    if isinstance(bytes_per_value, bool) or not isinstance(bytes_per_value, (int, float)) \
            or not bytes_per_value > 0:
        raise ValueError(f"bytes_per_value must be > 0, got {bytes_per_value!r}")
    return 2 * n_layers * n_kv_heads * head_dim * tokens * batch * bytes_per_value


def fake_quantize_kv(cache, dtype: str = "int8"):
    """Round-trip every K and V through ``int8`` or ``fp8`` (e4m3), back to float.

    Both scale by the absmax of each token and head: finer than vLLM's fp8 cache, whose
    scales are per tensor (1.0 unless calibrated) or per KV head, so the error is a lower bound.
    """
    if dtype not in ("int8", "fp8"):
        raise ValueError(f"dtype must be 'int8' or 'fp8', got {dtype!r}")
    out = []
    for k, v in cache:
        pair = []
        for t in (k, v):  # (B, H, T, hd)
            amax = t.abs().amax(-1, keepdim=True).clamp(min=1e-8)
            if dtype == "int8":
                s = amax / 127
                pair.append((t / s).round().clamp(-127, 127) * s)
            else:
                s = amax / 448  # e4m3's largest finite value
                pair.append((t / s).to(torch.float8_e4m3fn).to(t.dtype) * s)
        out.append(tuple(pair))
    return out


# --- gradient-norm logging ---

@dataclass
class GradNormLog:
    norms: list[float]


@contextmanager
def log_grad_norms():
    """Log the global gradient norm before every optimizer step taken inside the block.

    A global ``register_optimizer_step_pre_hook``: it sees the gradients the optimizer is
    about to use (after any clipping), so in an unclipped run it is the raw norm.
    """
    log = GradNormLog([])

    def hook(opt, args, kwargs):
        sq = sum(float(p.grad.detach().float().pow(2).sum()) for g in opt.param_groups
                 for p in g["params"] if p.grad is not None)
        log.norms.append(sq ** 0.5)

    handle = register_optimizer_step_pre_hook(hook)
    try:
        yield log
    finally:
        handle.remove()


def labels_mask(
    ids: torch.Tensor, loss_mask: torch.Tensor, pad_id: int = PAD_ID
) -> torch.Tensor:
    """What a typical collator does to the labels: mask out where ``ids == pad_id``.

    Every such position is masked. With ``pad_id=EOS_ID`` (pad token set to EOS) that
    masks EOS too.
    """
    if ids.shape != loss_mask.shape:
        raise ValueError(
            f"ids {tuple(ids.shape)} and loss_mask {tuple(loss_mask.shape)} "
            "differ in shape"
        )
    if isinstance(pad_id, bool) or not isinstance(pad_id, int):
        raise TypeError(f"pad_id must be an int token id, got {pad_id!r}")
    return loss_mask * (ids != pad_id)
