"""Evaluation: exact match per task, the unbiased pass@k, and a paired bootstrap CI.

Every function returns per-item results where it can, so two models measured on the
same items can be compared pairwise (the paired bootstrap needs exactly that).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from .chat import format_prompt
from .generation import generate
from .tokenizer import EOS_ID, encode, pad_batch
from .seeds import shift
from .tasks import Item, Task, get_task


def _task(task) -> Task:
    """A task given by name, or a ``Task`` a chapter defined for itself."""
    return task if isinstance(task, Task) else get_task(task)


@dataclass
class TaskResult:
    task: str
    items: list[Item]
    outputs: list[str]
    correct: list[bool]

    @property
    def accuracy(self) -> float:
        return float(np.mean(self.correct))

    def __repr__(self):
        return f"TaskResult({self.task!r}, accuracy={self.accuracy:.3f}, n={len(self.correct)})"


def _items_and_prompts(t: Task, items, n, seed, split, template, prompts):
    """The items to score (given, or ``n`` drawn from ``split``) and their prompts."""
    if items is None:
        items = t.items(min(n, len(t.finite)) if t.finite else n, seed=seed, split=split)
    items = list(items)
    if prompts is None:
        prompts = [format_prompt(it.prompt, template) for it in items]
    elif len(prompts) != len(items):
        raise ValueError(f"{len(prompts)} prompts for {len(items)} items")
    return items, prompts


def score(model, task: str | Task, items: Sequence[Item] | None = None, n: int = 200, seed: int = 0,
          split: str = "test", template: str = "chat", prompts: Sequence[str] | None = None) -> TaskResult:
    """Greedy exact match (by the task's verifier) of ``model`` on ``task``.

    Pass ``items`` to score fixed items, or let it draw ``n`` from ``split``. ``prompts``
    overrides the formatted prompts (to test retrieval or a changed template).
    """
    t = _task(task)
    items, prompts = _items_and_prompts(t, items, n, seed, split, template, prompts)
    outs = [g.text for g in generate(model, prompts, max_new_tokens=t.max_answer_len + 1)]
    return TaskResult(t.name, items, outs, [t.verify(it, o) for it, o in zip(items, outs)])


@torch.no_grad()
def greedy_matches(model, prompts: Sequence[str], answers: Sequence[str]) -> list[bool]:
    """Would greedy decoding after each prompt give exactly its answer and then EOS?

    One forward pass over prompt + answer instead of a decode loop: greedy decoding
    returns the answer exactly when the model's argmax, fed the prompt and the answer
    so far, is the answer's next character at every position and then EOS. Rows of
    similar length share a batch, so there is little padding.
    """
    if isinstance(prompts, str) or isinstance(answers, str) or len(prompts) != len(answers):
        raise ValueError("need lists of prompts and answers of the same length")
    p_ids = [encode(p) for p in prompts]
    a_ids = [encode(a) + [EOS_ID] for a in answers]
    order = sorted(range(len(p_ids)), key=lambda k: len(p_ids[k]) + len(a_ids[k]))
    out = [False] * len(p_ids)
    was_training = model.training
    model.eval()
    for lo in range(0, len(order), 64):
        chunk = order[lo:lo + 64]
        ids, _ = pad_batch([p_ids[k] + a_ids[k] for k in chunk], side="right")
        # (B, T): the greedy next token at every position
        pred = model(ids.to(model.device)).argmax(-1).cpu()
        for row, k in enumerate(chunk):
            start = len(p_ids[k]) - 1  # the position that predicts the answer's first token
            out[k] = pred[row, start:start + len(a_ids[k])].tolist() == a_ids[k]
    model.train(was_training)
    return out


def exact_match(model, task: str | Task, items: Sequence[Item] | None = None, n: int = 200,
                seed: int = 0, split: str = "test", template: str = "chat",
                prompts: Sequence[str] | None = None) -> float:
    """Greedy accuracy on ``task``; arguments as for ``score``.

    The verdicts are those ``score`` would give, from ``greedy_matches`` (one forward
    pass): greedy decoding that returns the reference answer is right. A task with its
    own verifier accepts other answers too, so its misses are decoded by ``score``.
    """
    t = _task(task)
    items, prompts = _items_and_prompts(t, items, n, seed, split, template, prompts)
    hits = greedy_matches(model, prompts, [it.answer for it in items])
    misses = [k for k, h in enumerate(hits) if not h]
    if t.verifier is not None and misses:  # a miss may still be an answer the verifier accepts
        res = score(model, t, items=[items[k] for k in misses], prompts=[prompts[k] for k in misses])
        for k, c in zip(misses, res.correct):
            hits[k] = c
    return float(np.mean(hits))


def sample_accuracy(model, task: str | Task, n: int = 128, k: int = 4, temperature: float = 1.0, seed: int = 0,
                    split: str = "test", template: str = "chat") -> float:
    """pass@1 estimated from ``k`` samples per item at ``temperature``: the mean correctness."""
    return float(np.mean(sample_correct(model, task, n, k, temperature, seed, split, template)))


def sample_correct(model, task: str | Task, n: int = 128, k: int = 4, temperature: float = 1.0, seed: int = 0,
                   split: str = "test", template: str = "chat") -> np.ndarray:
    """(n, k) boolean array: whether sample j of item i is right."""
    t = _task(task)
    items = t.items(n, seed=seed, split=split)
    gens = generate(model, [format_prompt(it.prompt, template) for it in items], max_new_tokens=t.max_answer_len + 1,
                    temperature=temperature, seed=seed, num_return_sequences=k)
    return np.array([t.verify(items[i // k], g.text) for i, g in enumerate(gens)]).reshape(n, k)


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c are correct (Chen et al. 2021, Codex):
    1 - C(n-c, k) / C(n, k), computed as a stable product."""
    for name, v in (("n", n), ("c", c), ("k", k)):
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool):
            raise TypeError(f"{name} must be an int, got {v!r}")
    if n < 1 or not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(
            f"need n >= 1, 0 <= c <= n and 1 <= k <= n; got n={n}, c={c}, k={k}"
        )
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


@dataclass
class BootstrapCI:
    diff: float   # mean(a) - mean(b)
    low: float
    high: float
    level: float

    @property
    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0


def paired_bootstrap(a: Sequence[float], b: Sequence[float], n_boot: int = 2000, level: float = 0.95,
                     seed: int = 0) -> BootstrapCI:
    """CI for mean(a) - mean(b) where a[i] and b[i] are two models' scores on the same item i.

    Resampling items (not the two models separately) keeps the pairing, so the shared
    difficulty of each item cancels and the interval is far tighter than an unpaired one.
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.ndim != 1 or a.shape != b.shape or len(a) < 2:
        raise ValueError(f"a and b must be 1-D, the same length and at least 2 long; got {a.shape} and {b.shape}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    if not isinstance(n_boot, int) or n_boot < 100:
        raise ValueError(f"n_boot must be an int >= 100, got {n_boot!r}")
    rng = np.random.default_rng(shift(seed))
    d = a - b
    idx = rng.integers(0, len(d), size=(n_boot, len(d)))
    means = d[idx].mean(1)
    lo, hi = np.quantile(means, [(1 - level) / 2, 1 - (1 - level) / 2])
    return BootstrapCI(float(d.mean()), float(lo), float(hi), level)


# --- the checkpoints' published figures ---------------------------------------------
FIGURE_TASKS = ("add", "sub", "add_steps", "rev", "sort", "copy", "dashed", "fact", "lookup", "pick", "refuse",
                "add3_steps", "rot", "json")
FIGURE_N = 200


def checkpoint_figures(names: Sequence[str] | None = None) -> dict:
    """Greedy test-split accuracy of each checkpoint on each task (what the README quotes)."""
    from .checkpoints import CHECKPOINTS, load
    out = {}
    for name in names or CHECKPOINTS:
        model = load(name)
        template = "raw" if name == "base-raw" else "chat"
        with torch.no_grad():
            out[name] = {t: round(exact_match(model, t, n=FIGURE_N, seed=0, template=template), 3)
                         for t in FIGURE_TASKS}
            if name == "math-weak":
                out[name]["add3_steps_pass@1_T1"] = round(
                    sample_accuracy(model, "add3_steps", n=128, k=4, seed=0), 3)
    return out
