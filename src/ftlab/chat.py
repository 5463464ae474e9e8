"""The chat template: the one function that turns a conversation into text.

Rendered, one exchange reads ``▶{user}◆{assistant}■``. ``base-raw`` never saw
these markers; it completes plain text of the form ``{prompt}={answer}■``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .tokenizer import ASSISTANT, EOS, MAX_LEN, USER, encode

ROLES = ("user", "assistant")


def apply_chat_template(
    messages: list[dict], add_generation_prompt: bool = False
) -> str:
    """Render ``[{"role": "user"|"assistant", "content": str}, ...]`` as one string.

    With ``add_generation_prompt`` the string ends with the assistant marker, ready
    for the model to answer, as in Hugging Face's method of the same name.
    """
    if not isinstance(messages, (list, tuple)) or not messages:
        raise ValueError(
            f"messages must be a non-empty list of dicts, got {messages!r}"
        )
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or set(m) != {"role", "content"}:
            raise ValueError(
                f"message {i} must be a dict with keys 'role' and 'content', got {m!r}"
            )
        role, content = m["role"], m["content"]
        if role != ROLES[i % 2]:
            raise ValueError(
                f"message {i} has role {role!r}; turns must alternate "
                "user, assistant, ..."
            )
        if not isinstance(content, str):
            raise TypeError(
                f"message {i} content must be a str, got {type(content).__name__}"
            )
        for marker in (USER, ASSISTANT, EOS):
            if marker in content:
                raise ValueError(
                    f"message {i} content {content!r} contains the template "
                    f"marker {marker!r}"
                )
        out.append(USER + content if role == "user" else ASSISTANT + content + EOS)
    if add_generation_prompt:
        if messages[-1]["role"] != "user":
            raise ValueError(
                "add_generation_prompt needs the last message to be the user's"
            )
        out.append(ASSISTANT)
    return "".join(out)


def chat_prompt(user: str) -> str:
    """``▶{user}◆``: a single-turn prompt ready for generation."""
    return apply_chat_template([{"role": "user", "content": user}], add_generation_prompt=True)


def raw_prompt(user: str) -> str:
    """``{user}=``: the plain-completion format of ``base-raw`` (no chat markers)."""
    return user + "="


def format_prompt(user: str, template: str = "chat") -> str:
    """The prompt for ``user`` in the named format: ``"chat"`` or ``"raw"``."""
    if template == "chat":
        return chat_prompt(user)
    if template == "raw":
        return raw_prompt(user)
    raise ValueError(f"template must be 'chat' or 'raw', got {template!r}")


@dataclass(frozen=True)
class Example:
    """One supervised example: the model sees ``prompt`` and learns ``completion`` + EOS."""

    prompt: str
    completion: str


def sft_tensors(examples: list[Example], mask_prompt: bool = True):
    """Tokenize examples into right-padded ``(ids, loss_mask)`` tensors of shape (N, T).

    ``loss_mask[i, t] = 1`` where token t of example i is a training target. With
    ``mask_prompt`` only the completion and its EOS are targets, as in chat SFT.
    """
    if not examples:
        raise ValueError("sft_tensors needs at least one example")
    rows, masks = [], []
    for ex in examples:
        if not isinstance(ex, Example):
            raise TypeError(f"expected ftlab.Example, got {type(ex).__name__}: {ex!r}")
        p, c = encode(ex.prompt), encode(ex.completion + EOS)
        if len(p) + len(c) > MAX_LEN:
            raise ValueError(
                f"example of length {len(p) + len(c)} exceeds MAX_LEN={MAX_LEN}: {ex!r}"
            )
        rows.append(p + c)
        masks.append([0 if mask_prompt else 1] * len(p) + [1] * len(c))
    T = max(len(r) for r in rows)
    # padded as lists, then one tensor each: far faster than a tensor per row
    ids = torch.tensor([r + [0] * (T - len(r)) for r in rows], dtype=torch.long)
    loss_mask = torch.tensor([m + [0] * (T - len(m)) for m in masks], dtype=torch.long)
    return ids, loss_mask
