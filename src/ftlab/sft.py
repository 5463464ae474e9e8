"""Supervised fine-tuning helpers: rejection-sampling SFT with a verifier, and self-consistency.

Rejection sampling (the "RFT" of Yuan et al. 2023, the filtering step of STaR, Zelikman
et al. 2022): sample ``k`` completions per prompt, keep the ones a program verifies,
and fine-tune on them. Self-consistency (Wang et al. 2022): sample ``k`` reasoning
paths and answer with the most common final answer.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from .chat import Example, format_prompt
from .evaluate import pass_at_k
from .generation import generate
from .tasks import Item, Task, final_answer, get_task

__all__ = ["majority_vote", "SampleEval", "sample_eval", "rejection_sample", "check_majority_vote",
           "check_keep_verified"]


def _task(task) -> Task:
    return task if isinstance(task, Task) else get_task(task)


def _items(items) -> list[Item]:
    if isinstance(items, (str, Item)):
        raise TypeError(f"items must be a list of ftlab.Item, got a single {type(items).__name__}")
    items = list(items)
    if not items:
        raise ValueError("items is empty")
    for it in items:
        if not isinstance(it, Item):
            raise TypeError(f"items must be ftlab.Item, got {type(it).__name__}: {it!r}")
    return items


def _check_k(k, temperature):
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or temperature <= 0:
        raise ValueError(f"temperature must be > 0 (sampling), got {temperature!r}")


def majority_vote(outputs: Sequence[str], key: Callable[[str], str] = final_answer) -> str:
    """The most common ``key(output)`` (by default the answer after the ⟨…⟩ steps).

    Ties go to the answer seen first, so the vote is deterministic.
    """
    if isinstance(outputs, str):
        raise TypeError("outputs must be a list of str, not a single str")
    outputs = list(outputs)
    if not outputs:
        raise ValueError("outputs is empty: nothing to vote on")
    answers = []
    for o in outputs:
        if not isinstance(o, str):
            raise TypeError(f"every output must be a str, got {type(o).__name__}: {o!r}")
        answers.append(key(o))
    counts = Counter(answers)
    best = max(counts.values())
    return next(a for a in answers if counts[a] == best)


@dataclass
class SampleEval:
    """``k`` samples per item: their correctness and the majority vote's."""

    items: list[Item]
    outputs: list[list[str]]    # (n, k)
    correct: np.ndarray         # (n, k) bool: sample j of item i verified right
    vote_correct: np.ndarray    # (n,) bool: the majority answer of item i is right

    @property
    def pass1(self) -> float:
        """pass@1 estimated from all k samples (the mean correctness)."""
        return float(self.correct.mean())

    def pass_at(self, k: int) -> float:
        """The unbiased pass@k (Chen et al. 2021), averaged over items."""
        n = self.correct.shape[1]
        return float(np.mean([pass_at_k(n, int(c), k) for c in self.correct.sum(1)]))

    @property
    def vote_accuracy(self) -> float:
        return float(self.vote_correct.mean())


def sample_eval(model, items: Sequence[Item], k: int = 8, temperature: float = 1.0, seed: int = 0,
                task: str | Task | None = None, template: str = "chat") -> SampleEval:
    """Sample ``k`` completions per item (one batched call) and score each and their majority vote."""
    items = _items(items)
    _check_k(k, temperature)
    t = _task(task if task is not None else items[0].task)
    gens = generate(model, [format_prompt(it.prompt, template) for it in items], max_new_tokens=t.max_answer_len + 1,
                    temperature=temperature, seed=seed, num_return_sequences=k)
    outs = [[g.text for g in gens[i * k:(i + 1) * k]] for i in range(len(items))]
    correct = np.array([[t.verify(it, o) for o in row] for it, row in zip(items, outs)], dtype=bool)
    # the vote is over final answers; verifying "⟨⟩" + answer reuses the task's own checker
    votes = np.array([t.verify(it, "⟩" + majority_vote(row)) if "⟩" in it.answer else
                      t.verify(it, majority_vote(row)) for it, row in zip(items, outs)], dtype=bool)
    return SampleEval(items, outs, correct, votes)


def rejection_sample(
    model,
    items: Sequence[Item],
    k: int = 8,
    temperature: float = 1.0,
    seed: int = 0,
    task: str | Task | None = None,
    template: str = "chat",
    max_per_item: int = 1,
    verify: Callable[[Item, str], bool] | None = None,
) -> tuple[list[Example], SampleEval]:
    """Rejection-sampling SFT data: ``k`` samples per item, keep up to ``max_per_item``
    distinct ones that ``verify`` (default: the task's verifier) accepts.

    Returns ``(examples, sampled)``: the verified examples, ready for ``ftlab.train``,
    and the ``SampleEval`` of the round (its ``pass1`` is the round's yield).
    """
    if (
        isinstance(max_per_item, bool)
        or not isinstance(max_per_item, int)
        or max_per_item < 1
    ):
        raise ValueError(f"max_per_item must be a positive int, got {max_per_item!r}")
    if verify is not None and not callable(verify):
        raise TypeError(
            "verify must be a function (item, output) -> bool, "
            f"got {type(verify).__name__}"
        )
    sampled = sample_eval(model, items, k, temperature, seed, task, template)
    t = _task(task if task is not None else sampled.items[0].task)
    check = verify or t.verify
    out = []
    for it, row in zip(sampled.items, sampled.outputs):
        kept = []
        for o in dict.fromkeys(row):
            if len(kept) < max_per_item and check(it, o):
                kept.append(o)
        out.extend(Example(format_prompt(it.prompt, template), o) for o in kept)
    return out, sampled


# --- exercise checkers ---------------------------------------------------------------
def check_majority_vote(fn) -> None:
    """``fn(outputs) -> str``: the most common final answer (after ⟩), ties to the first seen."""
    cases = [(["⟨a⟩12", "⟨b⟩13", "⟨c⟩12"], "12"), (["7", "8"], "7"), (["⟨x⟩5"], "5"),
             (["⟨1⟩9", "⟨2⟩8", "⟨3⟩8", "⟨4⟩9"], "9"), (["⟨p⟩1⟩2", "2", "⟨q⟩3"], "2"), (["⟨a⟩1", "⟨b⟩2", "⟨c⟩2"], "2")]
    for outs, want in cases:
        got = fn(list(outs))
        assert got == want, f"for {outs}: expected {want!r}, got {got!r}"
    for outs in (["⟨a⟩12", "⟨b⟩13", "⟨c⟩12", "⟨d⟩13"], ["1", "2", "3"]):
        assert fn(outs) == majority_vote(outs), f"for {outs}: a tie goes to the answer seen first"
    print("✓ majority vote: final answers counted, ties to the first seen")


def check_keep_verified(fn) -> None:
    """``fn(item, samples, max_keep) -> list[str]``: distinct verified samples, in order, at most ``max_keep``."""
    it = Item("add3_steps", "show 100+200", "⟨0+0=0,0+0=0,1+2=3⟩300")
    good, other_good, bad = "⟨0+0=0,0+0=0,1+2=3⟩300", "⟨⟩300", "⟨0+0=0,0+0=0,1+2=3⟩301"
    cases = [([bad, good, good, other_good], 4, [good, other_good]), ([bad, bad], 4, []),
             ([good, other_good, good], 1, [good])]
    for samples, k, want in cases:
        got = list(fn(it, list(samples), k))
        assert got == want, f"samples {samples}, max_keep={k}: expected {want}, got {got}"
    print("✓ keep verified: distinct, verified by the task, capped")
