"""Implicit user feedback turned into preference pairs.

A deployed assistant shows an output; the user accepts it, rejects it, edits it into
something else, or makes a trivial (cosmetic) edit. ``simulate_logs`` writes such a log
for task items, with a known truth behind every event, so a chapter can measure how
clean the pairs are that ``logs_to_pairs`` builds from it.

Stable API (the alignment chapter imports it):

    PreferencePair(prompt, chosen, rejected, task="", source="")
    UserModel(...)                          how users react to right and wrong outputs
    LogEvent(prompt, output, action, final, task, correct)
    simulate_logs(items, outputs=None, samples_per_prompt=1, p_correct=0.5, users=UserModel(), seed=0)
    logs_to_pairs(logs, min_distance=1, normalize=True, min_ratio=None, use_edits=True, use_accept_reject=True)
    edit_distance(a, b), normalize_text(s), pair_is_correct(pair, item), pair_precision(pairs, items)

``prompt`` is always the user's text without a template (like ``Item.prompt``); use
``ftlab.format_prompt(pair.prompt, "chat")`` (or ``pair.chat_prompt``) before scoring.
"""
from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass
from typing import Sequence

from .chat import format_prompt
from .data import corrupt_answer
from .seeds import shift
from .tasks import Item, Task, get_task

__all__ = ["ACTIONS", "PreferencePair", "UserModel", "LogEvent", "simulate_logs", "logs_to_pairs",
           "edit_distance", "normalize_text", "pair_is_correct", "pair_precision", "trivial_edit",
           "check_edit_distance"]

ACTIONS = ("accept", "reject", "edit", "trivial_edit")
# What a cosmetic edit touches: spacing and end punctuation, never the content.
_COSMETIC = " .!"


@dataclass(frozen=True)
class PreferencePair:
    """One preference: for ``prompt`` (the user's text, no template), ``chosen`` beats ``rejected``."""

    prompt: str
    chosen: str
    rejected: str
    task: str = ""      # the task the prompt came from ("" if unknown)
    source: str = ""    # "edit" or "accept_reject": which signal produced the pair

    @property
    def chat_prompt(self) -> str:
        """The prompt in the chat template, ready for ``generate`` or ``sequence_logprob``."""
        return format_prompt(self.prompt, "chat")


@dataclass(frozen=True)
class UserModel:
    """How simulated users react. Each row of probabilities must sum to 1.

    A right output is mostly accepted; a wrong one is edited, rejected, or (a lazy user)
    accepted anyway. Any output can get a cosmetic edit. The defaults make every real
    edit a correct fix; ``good_edit`` (a right answer edited into a wrong one) and
    ``bad_edit_still_wrong`` (a fix that lands on another wrong answer) model users who
    make mistakes, and both default to 0 so that older chapters' logs do not change.
    """

    # reactions to a RIGHT output: accept, reject (noise), trivial edit, edit into a wrong answer
    good_accept: float = 0.75
    good_reject: float = 0.05
    good_trivial: float = 0.20
    good_edit: float = 0.0
    # reactions to a WRONG output: edit, reject, accept anyway, trivial edit
    bad_edit: float = 0.45
    bad_reject: float = 0.30
    bad_accept: float = 0.15
    bad_trivial: float = 0.10
    # of the edits to a WRONG output, the share that is still wrong afterwards
    bad_edit_still_wrong: float = 0.0

    def __post_init__(self):
        for name in ("good_accept", "good_reject", "good_trivial", "good_edit", "bad_edit", "bad_reject",
                     "bad_accept", "bad_trivial", "bad_edit_still_wrong"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 1:
                raise ValueError(f"UserModel.{name} must be a probability in [0, 1], got {v!r}")
        for label, total in (("good_*", self.good_accept + self.good_reject + self.good_trivial + self.good_edit),
                             ("bad_*", self.bad_edit + self.bad_reject + self.bad_accept + self.bad_trivial)):
            if abs(total - 1) > 1e-9:
                raise ValueError(f"UserModel {label} probabilities must sum to 1, got {total:.4f}")


@dataclass(frozen=True)
class LogEvent:
    """One logged interaction. ``correct`` is the hidden truth a real log never has."""

    prompt: str          # the user's text, no template
    output: str          # what the model showed
    action: str          # one of ACTIONS
    final: str | None    # the text the user kept after an edit; None for accept / reject
    task: str
    correct: bool        # was ``output`` right (by the task's verifier)?


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance: the fewest single-character inserts, deletes and substitutions."""
    if not isinstance(a, str) or not isinstance(b, str):
        raise TypeError(f"edit_distance needs two str, got {type(a).__name__} and {type(b).__name__}")
    if len(a) < len(b):
        a, b = b, a
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def normalize_text(s: str) -> str:
    """``s`` without cosmetic differences: spaces collapsed, end punctuation and case dropped."""
    if not isinstance(s, str):
        raise TypeError(f"normalize_text needs a str, got {type(s).__name__}")
    return " ".join(s.lower().split()).rstrip(".!").strip()


def trivial_edit(text: str, rng: random.Random) -> str:
    """A cosmetic change a user makes without changing the content: a space or end punctuation."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    kind = rng.randrange(3)
    if kind == 0:
        return text + rng.choice(".!")
    if kind == 1:
        return text + " "
    return " " + text


def _wrong_edit(answer: str, shown: str, rng: random.Random) -> str:
    """A user's mistaken edit: a wrong answer, different from the one shown when possible."""
    for _ in range(20):
        final = corrupt_answer(answer, rng)
        if final != shown:
            return final
    return final


def _task(task) -> Task:
    return task if isinstance(task, Task) else get_task(task)


def simulate_logs(items: Sequence[Item], outputs: Sequence[str] | None = None, samples_per_prompt: int = 1,
                  p_correct: float = 0.5, users: UserModel | None = None, seed: int = 0,
                  task: Task | None = None) -> list[LogEvent]:
    """A seeded log of user reactions to model outputs on ``items``.

    ``outputs``: what the model showed, ``len(items) * samples_per_prompt`` strings with
    the samples of one item next to each other (the layout of ``generate(...,
    num_return_sequences=k)``). Without it, each output is the reference answer with
    probability ``p_correct`` and otherwise a plausible wrong answer (one character off,
    as ``ftlab.data.corrupt_answer`` makes). ``task`` overrides ``get_task(item.task)``
    for chapter-defined tasks. Returns one ``LogEvent`` per output, in order.
    """
    items = list(items)
    if not items:
        raise ValueError("items is empty")
    if not all(isinstance(it, Item) for it in items):
        bad = next(it for it in items if not isinstance(it, Item))
        raise TypeError(f"items must be ftlab.Item, got {type(bad).__name__}: {bad!r}")
    if isinstance(samples_per_prompt, bool) or not isinstance(samples_per_prompt, int) or samples_per_prompt < 1:
        raise ValueError(f"samples_per_prompt must be a positive int, got {samples_per_prompt!r}")
    if isinstance(p_correct, bool) or not isinstance(p_correct, (int, float)) or not 0 <= p_correct <= 1:
        raise ValueError(f"p_correct must be in [0, 1], got {p_correct!r}")
    users = UserModel() if users is None else users
    if not isinstance(users, UserModel):
        raise TypeError(f"users must be a ftlab.feedback.UserModel, got {type(users).__name__}")
    expanded = [it for it in items for _ in range(samples_per_prompt)]
    rng = random.Random(shift(seed))
    if outputs is None:
        outputs = [it.answer if rng.random() < p_correct else corrupt_answer(it.answer, rng) for it in expanded]
    else:
        if isinstance(outputs, str) or len(outputs) != len(expanded):
            got = "a str" if isinstance(outputs, str) else len(outputs)
            raise ValueError(f"outputs must hold len(items) * samples_per_prompt = {len(expanded)} strings, got {got}")
        outputs = list(outputs)
        for o in outputs:
            if not isinstance(o, str):
                raise TypeError(f"every output must be a str, got {type(o).__name__}: {o!r}")
    logs = []
    for it, out in zip(expanded, outputs):
        ok = (task or _task(it.task)).verify(it, out)
        u = rng.random()
        if ok:
            g = users.good_accept + users.good_reject + users.good_trivial
            action = ("accept" if u < users.good_accept else
                      "reject" if u < users.good_accept + users.good_reject else
                      "trivial_edit" if u < g else "edit")
        else:
            action = ("edit" if u < users.bad_edit else
                      "reject" if u < users.bad_edit + users.bad_reject else
                      "accept" if u < users.bad_edit + users.bad_reject + users.bad_accept else "trivial_edit")
        final = trivial_edit(out, rng) if action == "trivial_edit" else None
        if action == "edit":
            # The random draw happens only when the option is on, so default logs stay the same.
            mistaken = ok or (users.bad_edit_still_wrong > 0 and rng.random() < users.bad_edit_still_wrong)
            final = _wrong_edit(it.answer, out, rng) if mistaken else it.answer
        logs.append(LogEvent(it.prompt, out, action, final, it.task, bool(ok)))
    return logs


def logs_to_pairs(
    logs: Sequence[LogEvent],
    min_distance: int = 1,
    normalize: bool = True,
    min_ratio: float | None = None,
    use_edits: bool = True,
    use_accept_reject: bool = True,
) -> list[PreferencePair]:
    """(chosen, rejected) pairs from a log.

    Edits: the user's text beats the model's (``source="edit"``), kept only if the two
    differ by at least ``min_distance`` characters, measured after ``normalize_text``
    when ``normalize`` (so cosmetic edits count as distance 0). ``min_ratio``, if set,
    keeps only edits whose distance divided by the longer text's length is at least
    ``min_ratio`` (the "edit ratio > x" filter some pipelines use). Accept vs reject:
    for a prompt with an accepted and a rejected output that differ, accepted beats
    rejected (``source="accept_reject"``), one pair per (accepted, rejected)
    combination.
    """
    logs = list(logs)
    for e in logs:
        if not isinstance(e, LogEvent):
            raise TypeError(
                f"logs must hold ftlab.feedback.LogEvent, got {type(e).__name__}: {e!r}"
            )
        if e.action not in ACTIONS:
            raise ValueError(f"unknown action {e.action!r}; expected one of {ACTIONS}")
    if (
        isinstance(min_distance, bool)
        or not isinstance(min_distance, int)
        or min_distance < 0
    ):
        raise ValueError(f"min_distance must be an int >= 0, got {min_distance!r}")
    if min_ratio is not None and (
        isinstance(min_ratio, bool)
        or not isinstance(min_ratio, (int, float))
        or not 0 <= min_ratio <= 1
    ):
        raise ValueError(f"min_ratio must be None or in [0, 1], got {min_ratio!r}")
    pairs = []
    if use_edits:
        for e in logs:
            if e.action not in ("edit", "trivial_edit"):
                continue
            a, b = (
                (normalize_text(e.final), normalize_text(e.output))
                if normalize
                else (e.final, e.output)
            )
            d = edit_distance(a, b)
            if d < min_distance or d == 0:
                continue
            if min_ratio is not None and d / max(len(a), len(b), 1) < min_ratio:
                continue
            pairs.append(PreferencePair(e.prompt, e.final, e.output, e.task, "edit"))
    if use_accept_reject:
        by_prompt: dict[tuple[str, str], dict[str, list[str]]] = defaultdict(
            lambda: {"accept": [], "reject": []}
        )
        for e in logs:
            if e.action in ("accept", "reject"):
                by_prompt[(e.task, e.prompt)][e.action].append(e.output)
        for (task, prompt), seen in by_prompt.items():
            for good in dict.fromkeys(seen["accept"]):
                for bad in dict.fromkeys(seen["reject"]):
                    if good != bad:
                        pairs.append(
                            PreferencePair(prompt, good, bad, task, "accept_reject")
                        )
    return pairs


def pair_is_correct(pair: PreferencePair, item: Item, task: Task | None = None) -> bool:
    """Ground truth for a pair: its chosen output is right for ``item`` and its rejected one is not."""
    if not isinstance(pair, PreferencePair):
        raise TypeError(f"pair must be a PreferencePair, got {type(pair).__name__}")
    if not isinstance(item, Item):
        raise TypeError(f"item must be a ftlab.Item, got {type(item).__name__}")
    if item.prompt != pair.prompt:
        raise ValueError(f"item prompt {item.prompt!r} is not the pair's prompt {pair.prompt!r}")
    t = task or _task(item.task)
    return t.verify(item, pair.chosen) and not t.verify(item, pair.rejected)


def pair_precision(pairs: Sequence[PreferencePair], items: Sequence[Item], task: Task | None = None) -> float:
    """The fraction of ``pairs`` whose preference is right, looking each prompt up in ``items``."""
    pairs = list(pairs)
    if not pairs:
        raise ValueError("pairs is empty")
    by_prompt = {(it.task, it.prompt): it for it in items}
    missing = [p.prompt for p in pairs if (p.task, p.prompt) not in by_prompt]
    if missing:
        raise ValueError(f"{len(missing)} pair prompts are not in items, e.g. {missing[0]!r}")
    return sum(pair_is_correct(p, by_prompt[(p.task, p.prompt)], task) for p in pairs) / len(pairs)


def check_edit_distance(fn) -> None:
    """``fn(a, b) -> int``: the Levenshtein distance."""
    rng = random.Random(0)
    cases = [("", "", 0), ("abc", "", 3), ("", "ab", 2), ("kitten", "sitting", 3), ("flaw", "lawn", 2),
             ("46", "47", 1), ("ab", "ba", 2)]
    cases += [(a, b, edit_distance(a, b)) for a, b in
              (("".join(rng.choice("abc") for _ in range(rng.randint(0, 9))),
                "".join(rng.choice("abc") for _ in range(rng.randint(0, 9)))) for _ in range(30))]
    for a, b, want in cases:
        got = fn(a, b)
        assert got == want, f"edit distance of {a!r} and {b!r}: expected {want}, got {got}"
    print("✓ edit distance: matches Levenshtein on fixed and random cases")
