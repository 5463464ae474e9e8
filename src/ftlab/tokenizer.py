"""The course's one character-level vocabulary, fixed for every chapter.

Special tokens are single characters, so a sequence prints as readable text:

    ▶rev abc◆cba■          a chat turn: user marker, prompt, assistant marker, answer, end
    ▶§kel:omsa§where does kel live?◆omsa■      a context (retrieval) block inside §…§
    ▶show 47+85◆⟨7+5=12,4+8+1=13⟩132■          worked steps inside the scratchpad ⟨…⟩
"""
from __future__ import annotations

from typing import Iterable, Sequence

import torch

PAD = "·"          # padding; never trained on, never generated
EOS = "■"          # end of an assistant turn (or of a raw completion)
USER = "▶"         # start of the user's turn
ASSISTANT = "◆"    # start of the assistant's turn
CONTEXT = "§"      # opens and closes a block of retrieved context
THINK_OPEN = "⟨"   # opens the scratchpad of worked steps
THINK_CLOSE = "⟩"  # closes it; the final answer follows

SPECIALS = (PAD, EOS, USER, ASSISTANT, CONTEXT, THINK_OPEN, THINK_CLOSE)
# Everything a task, a refusal or a JSON-style answer can contain.
CHARS = " abcdefghijklmnopqrstuvwxyz0123456789+-*=,.?!:;'\"(){}[]"
VOCAB: tuple[str, ...] = SPECIALS + tuple(CHARS)
STOI = {ch: i for i, ch in enumerate(VOCAB)}
PAD_ID, EOS_ID = STOI[PAD], STOI[EOS]
VOCAB_SIZE = len(VOCAB)
# Longest sequence in the course: a context of four facts, a question and an answer,
# or a three-digit sum with its worked steps, with room to spare.
MAX_LEN = 96

assert len(set(VOCAB)) == VOCAB_SIZE, "duplicate character in the vocabulary"


def encode(text: str) -> list[int]:
    """Map a string to token ids; a character outside the vocabulary is an error."""
    if not isinstance(text, str):
        raise TypeError(f"encode expects a str, got {type(text).__name__}: {text!r}")
    try:
        return [STOI[ch] for ch in text]
    except KeyError:
        bad = sorted({ch for ch in text if ch not in STOI})
        raise ValueError(
            f"characters {bad!r} in {text!r} are not in the course vocabulary "
            f"(lower-case letters, digits and {CHARS[37:]!r})"
        ) from None


def decode(ids: Iterable[int] | torch.Tensor) -> str:
    """Map token ids back to a string."""
    if isinstance(ids, torch.Tensor):
        ids = ids.tolist()
    out = []
    for i in ids:
        if not 0 <= int(i) < VOCAB_SIZE:
            raise ValueError(f"token id {i} is outside the vocabulary of size {VOCAB_SIZE}")
        out.append(VOCAB[int(i)])
    return "".join(out)


def check_length(text: str, max_len: int = MAX_LEN) -> None:
    if len(text) > max_len:
        raise ValueError(f"sequence of length {len(text)} exceeds MAX_LEN={max_len}: {text!r}")


def pad_batch(seqs: Sequence[Sequence[int]], side: str = "right", pad_id: int = PAD_ID):
    """Pad id lists to one length. Returns (ids, attention_mask), both (B, T) long tensors."""
    if side not in ("left", "right"):
        raise ValueError(f"side must be 'left' or 'right', got {side!r}")
    if len(seqs) == 0:
        raise ValueError("pad_batch needs at least one sequence")
    T = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), T), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), T), dtype=torch.long)
    for i, s in enumerate(seqs):
        if len(s) == 0:
            continue
        t = torch.as_tensor(list(s), dtype=torch.long)
        if side == "right":
            ids[i, : len(s)], mask[i, : len(s)] = t, 1
        else:
            ids[i, T - len(s):], mask[i, T - len(s):] = t, 1
    return ids, mask
