"""Batched sampling with a KV cache, and the log-probability of a completion.

``generate`` left-pads the prompts, so every row's next token sits in the last column,
and counts position ids from each row's first real token: a prompt gets the same
answer alone or in a batch (a test checks this).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch
import torch.nn.functional as F

from .seeds import shift
from .tokenizer import EOS, EOS_ID, MAX_LEN, PAD_ID, decode, encode, pad_batch


@dataclass
class Generation:
    """One sampled completion: its text (EOS removed) and each token's log-probability."""

    prompt: str
    text: str
    token_logprobs: list[float] = field(repr=False)
    finished: bool = True  # False when max_new_tokens ran out before EOS

    @property
    def logprob(self) -> float:
        return float(sum(self.token_logprobs))


def _check_prompts(prompts) -> list[str]:
    if isinstance(prompts, str):
        raise TypeError("prompts must be a list of strings, not a single string")
    prompts = list(prompts)
    if not prompts:
        raise ValueError("prompts is empty")
    for p in prompts:
        if not isinstance(p, str) or not p:
            raise ValueError(f"every prompt must be a non-empty str, got {p!r}")
    return prompts


@torch.no_grad()
def generate(model, prompts: Sequence[str], max_new_tokens: int = 16, temperature: float = 0.0,
             seed: int | None = 0, num_return_sequences: int = 1, batch_size: int = 512) -> list[Generation]:
    """Complete each prompt; greedy at ``temperature=0``, else sampled with ``seed``.

    Returns ``len(prompts) * num_return_sequences`` generations, the samples of one
    prompt next to each other. ``token_logprobs`` are under the model's own
    (temperature 1) distribution, the quantity RL and DPO need.
    """
    prompts = _check_prompts(prompts)
    if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be a positive int, got {max_new_tokens!r}")
    if not isinstance(temperature, (int, float)) or temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature!r}")
    if not isinstance(num_return_sequences, int) or num_return_sequences < 1:
        raise ValueError(f"num_return_sequences must be a positive int, got {num_return_sequences!r}")
    longest = max(len(p) for p in prompts)
    if longest + max_new_tokens > MAX_LEN:
        raise ValueError(f"prompt length {longest} + max_new_tokens {max_new_tokens} exceeds MAX_LEN={MAX_LEN}")
    expanded = [p for p in prompts for _ in range(num_return_sequences)]
    gen = None
    if temperature > 0:
        gen = torch.Generator(device=model.device).manual_seed(shift(seed or 0))
    was_training = model.training
    model.eval()
    out = []
    for start in range(0, len(expanded), batch_size):
        out.extend(_generate_batch(model, expanded[start:start + batch_size], max_new_tokens, temperature, gen))
    model.train(was_training)
    return out


def _generate_batch(model, prompts, max_new_tokens, temperature, gen):
    dev = model.device
    ids, mask = pad_batch([encode(p) for p in prompts], side="left")
    ids, mask = ids.to(dev), mask.to(dev)
    B = ids.shape[0]
    logits, cache = model(ids, attention_mask=mask, use_cache=True)
    next_logits = logits[:, -1]
    done = torch.zeros(B, dtype=torch.bool, device=dev)
    tokens, logps = [], []
    for step in range(max_new_tokens):
        logp = F.log_softmax(next_logits.float(), dim=-1)
        if temperature == 0:
            tok = logp.argmax(-1)
        else:
            probs = F.softmax(next_logits.float() / temperature, dim=-1)
            tok = torch.multinomial(probs, 1, generator=gen).squeeze(-1)
        tok = torch.where(done, torch.full_like(tok, PAD_ID), tok)
        tokens.append(tok)
        logps.append(logp.gather(-1, tok[:, None]).squeeze(-1))
        done = done | (tok == EOS_ID)
        if bool(done.all()) or step == max_new_tokens - 1:
            break
        mask = torch.cat([mask, (~done | (tok == EOS_ID)).long()[:, None]], dim=1)
        logits, cache = model(tok[:, None], attention_mask=mask, past_key_values=cache, use_cache=True)
        next_logits = logits[:, -1]
    toks = torch.stack(tokens, 1).tolist()
    lps = torch.stack(logps, 1).tolist()
    results = []
    for i, p in enumerate(prompts):
        text, lp, finished = [], [], False
        for t, l in zip(toks[i], lps[i]):
            lp.append(l)
            if t == EOS_ID:
                finished = True
                break
            text.append(t)
        results.append(Generation(prompt=p, text=decode(text), token_logprobs=lp, finished=finished))
    return results


def completion_batch(prompts: Sequence[str], completions: Sequence[str], add_eos: Sequence[bool]):
    """Right-padded ``(ids, attention_mask, completion_mask)`` of prompt + completion, with
    EOS appended to the completions whose ``add_eos`` entry is true. (B, T) each."""
    rows, comp_mask = [], []
    for p, c, e in zip(prompts, completions, add_eos):
        if not isinstance(p, str) or not isinstance(c, str):
            raise TypeError(f"prompt and completion must be str, got {type(p).__name__} and {type(c).__name__}")
        pi, ci = encode(p), encode(c + (EOS if e else ""))
        if not ci:
            raise ValueError(f"empty completion, and no EOS to score, for prompt {p!r}")
        if len(pi) + len(ci) > MAX_LEN:
            raise ValueError(f"prompt + completion of length {len(pi) + len(ci)} exceeds MAX_LEN={MAX_LEN}")
        rows.append(pi + ci)
        comp_mask.append([0] * len(pi) + [1] * len(ci))
    ids, attn = pad_batch(rows, side="right")
    cmask, _ = pad_batch(comp_mask, side="right", pad_id=0)
    return ids, attn, cmask


def sequence_logprob(
    model,
    prompts: Sequence[str],
    completions: Sequence[str],
    add_eos: bool = True,
    reduction: str = "sum",
) -> torch.Tensor:
    """log p(completion | prompt) for each pair, batched; differentiable.

    ``reduction="sum"`` gives the summed log-probability over completion tokens (what
    DPO and GRPO use), ``"mean"`` the per-token average (IPO's length-normalised form),
    ``"none"`` a ``(B, T)`` tensor that is zero outside the completion. With ``add_eos``
    the end marker counts as the completion's last token.
    """
    prompts = _check_prompts(prompts)
    if isinstance(completions, str) or len(completions) != len(prompts):
        raise ValueError(
            f"need one completion per prompt: {len(prompts)} prompts, "
            f"{'a str' if isinstance(completions, str) else len(completions)}"
            " completions"
        )
    if reduction not in ("sum", "mean", "none"):
        raise ValueError(
            f"reduction must be 'sum', 'mean' or 'none', got {reduction!r}"
        )
    ids, attn, cmask = completion_batch(prompts, completions, [add_eos] * len(prompts))
    ids, attn, cmask = (
        ids.to(model.device),
        attn.to(model.device),
        cmask.to(model.device),
    )
    logits = model(ids, attention_mask=attn)
    logp = (
        F.log_softmax(logits[:, :-1].float(), dim=-1)
        .gather(-1, ids[:, 1:, None])
        .squeeze(-1)
    )
    logp = (
        logp * cmask[:, 1:]
    )  # (B, T-1): token t+1's log-prob, kept on completion tokens only
    if reduction == "none":
        return logp
    total = logp.sum(-1)
    return total if reduction == "sum" else total / cmask[:, 1:].sum(-1)
