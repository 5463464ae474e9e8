"""TinyGPT: a decoder-only transformer small enough to read in one sitting.

Pre-LayerNorm blocks, causal self-attention with ``q_proj``/``k_proj``/``v_proj``/``o_proj``
and an MLP with ``up_proj``/``down_proj``: the module names of Llama-style models, so
LoRA and quantization can target layers by name as peft and bitsandbytes do.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .tokenizer import MAX_LEN, VOCAB_SIZE


@dataclass
class GPTConfig:
    vocab_size: int = VOCAB_SIZE  # the course's character vocabulary
    block_size: int = MAX_LEN     # longest sequence, prompt and answer together
    n_layer: int = 3              # transformer blocks
    n_head: int = 4               # attention heads; d_model must divide by it
    d_model: int = 64             # residual stream width
    mlp_ratio: int = 4            # MLP hidden width = mlp_ratio * d_model
    dropout: float = 0.0          # off: the tasks are clean and runs are short

    def __post_init__(self):
        for name in (
            "vocab_size",
            "block_size",
            "n_layer",
            "n_head",
            "d_model",
            "mlp_ratio",
        ):
            v = getattr(self, name)
            if not isinstance(v, int) or v <= 0:
                raise ValueError(f"GPTConfig.{name} must be a positive int, got {v!r}")
        if self.d_model % self.n_head:
            raise ValueError(
                f"d_model={self.d_model} is not divisible by n_head={self.n_head}"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")

    def to_dict(self) -> dict:
        return asdict(self)


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.n_head, self.head_dim = cfg.n_head, cfg.d_model // cfg.n_head
        self.q_proj = nn.Linear(cfg.d_model, cfg.d_model)
        self.k_proj = nn.Linear(cfg.d_model, cfg.d_model)
        self.v_proj = nn.Linear(cfg.d_model, cfg.d_model)
        self.o_proj = nn.Linear(cfg.d_model, cfg.d_model)
        self.dropout = cfg.dropout

    def forward(self, x, mask=None, past_kv=None):
        B, T, C = x.shape
        # (B, T, C) -> (B, H, T, hd)
        q, k, v = (p(x).view(B, T, self.n_head, self.head_dim).transpose(1, 2)
                   for p in (self.q_proj, self.k_proj, self.v_proj))
        if past_kv is not None:  # a KV cache, or trained prefixes (prefix tuning)
            k = torch.cat([past_kv[0].to(k.dtype), k], dim=2)
            v = torch.cat([past_kv[1].to(v.dtype), v], dim=2)
        drop = self.dropout if self.training else 0.0
        if mask is None:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=drop)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=drop)
        y = y.transpose(1, 2).reshape(B, T, C)
        return self.o_proj(y), (k, v)


class MLP(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.up_proj = nn.Linear(cfg.d_model, cfg.mlp_ratio * cfg.d_model)
        self.down_proj = nn.Linear(cfg.mlp_ratio * cfg.d_model, cfg.d_model)

    def forward(self, x):
        return self.down_proj(F.gelu(self.up_proj(x)))


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.d_model)
        self.attn = CausalSelfAttention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.d_model)
        self.mlp = MLP(cfg)

    def forward(self, x, mask=None, past_kv=None):
        a, kv = self.attn(self.ln_1(x), mask, past_kv)
        x = x + a
        x = x + self.mlp(self.ln_2(x))
        return x, kv


class TinyGPT(nn.Module):
    def __init__(self, cfg: GPTConfig | None = None):
        super().__init__()
        self.config = cfg = cfg or GPTConfig()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.embed_positions = nn.Embedding(cfg.block_size, cfg.d_model)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.d_model)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        self.apply(self._init_weights)
        # GPT-2's scaled init of the projections that write into the residual stream.
        for name, p in self.named_parameters():
            if name.endswith(("o_proj.weight", "down_proj.weight")):
                nn.init.normal_(p, mean=0.0, std=0.02 / (2 * cfg.n_layer) ** 0.5)

    @staticmethod
    def _init_weights(m):
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)

    def num_params(self, trainable_only: bool = False) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def forward(self, input_ids=None, attention_mask=None, position_ids=None,
                past_key_values=None, use_cache=False, inputs_embeds=None):
        """Logits of shape (B, T, vocab); with ``use_cache``, also the new KV cache.

        attention_mask  (B, P + T), 1 for real tokens and 0 for padding, where P is the
                        length of ``past_key_values`` (a KV cache or trained prefixes).
        position_ids    (B, T); by default counted from the first real token, which is
                        what makes left-padded batches give the same answer as one prompt.
        inputs_embeds   (B, T, C) instead of ``input_ids``: how prompt tuning feeds soft tokens.
        """
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids and inputs_embeds")
        x = self.embed_tokens(input_ids) if inputs_embeds is None else inputs_embeds
        if x.dim() != 3:
            raise ValueError(f"expected (B, T) ids or (B, T, C) embeddings, got shape {tuple(x.shape)}")
        B, T, _ = x.shape
        P = 0 if past_key_values is None else past_key_values[0][0].shape[2]
        if len(past_key_values or ()) not in (0, len(self.layers)):
            raise ValueError(f"past_key_values has {len(past_key_values)} layers, model has {len(self.layers)}")
        if attention_mask is not None and tuple(attention_mask.shape) != (B, P + T):
            raise ValueError(f"attention_mask has shape {tuple(attention_mask.shape)}, expected {(B, P + T)}")
        if position_ids is None:
            if attention_mask is None:
                position_ids = torch.arange(P, P + T, device=x.device).expand(B, T)
            else:
                position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, P:]
        if int(position_ids.max()) >= self.config.block_size:
            raise ValueError(f"position {int(position_ids.max())} is past block_size={self.config.block_size}")
        x = x + self.embed_positions(position_ids)

        mask = None
        if attention_mask is not None or P > 0:
            q_pos = torch.arange(P, P + T, device=x.device)[:, None]
            k_pos = torch.arange(P + T, device=x.device)[None, :]
            allowed = (k_pos <= q_pos)[None, None]                    # (1, 1, T, P+T) causal
            if attention_mask is not None:
                allowed = allowed & attention_mask.bool()[:, None, None, :]
                # A padding query would see no key at all (NaN); let it see itself.
                allowed = allowed | (k_pos == q_pos)[None, None]
            mask = allowed
        present = []
        for i, layer in enumerate(self.layers):
            x, kv = layer(x, mask, None if past_key_values is None else past_key_values[i])
            present.append(kv)
        logits = self.lm_head(self.ln_f(x))
        return (logits, present) if use_cache else logits
