"""The task suite: seeded generators with programmatic verifiers.

Every item is a user prompt and a reference answer; ``Task.verify`` decides whether
an output is right, so every accuracy in the course is checked by a program.

In pretraining (``base``, ``base-raw``, ``teacher``): add, sub, add_steps, rev, sort,
copy, dashed, fact (direct, paraphrased and reversed queries of ``KNOWN_FACTS``),
lookup (answer from facts given in a context block), pick and refuse.
Held out for fine-tuning chapters: rot, count, mul, json, add3, add3_steps (the
``math-weak`` task) and every ``newfact_*`` task (facts no checkpoint has seen).
"""
from __future__ import annotations

import random
import zlib
from dataclasses import dataclass, field
from typing import Callable

from .chat import Example, format_prompt
from .seeds import shift
from .tokenizer import CONTEXT, THINK_CLOSE, THINK_OPEN

LETTERS = "abcdefghijklmnopqrstuvwxyz"
REFUSAL = "sorry, i can't share that."


@dataclass(frozen=True)
class Item:
    task: str
    prompt: str   # the user's text, without any template
    answer: str   # a reference answer (for ``pick``, one of several valid ones)
    meta: dict = field(default_factory=dict, compare=False, hash=False)


def _split_of(prompt: str) -> str:
    """A fixed hash split: one prompt in five is test-only, forever."""
    return "test" if zlib.crc32(prompt.encode()) % 5 == 0 else "train"


# --- synthetic entities -----------------------------------------------------------
def _words(n: int, seed: int, shapes=("cvcv", "cvcvc", "cvccv")) -> list[str]:
    rng = random.Random(seed)
    cons, vow, out, seen = "bdfgklmnprstvz", "aeiou", [], set()
    while len(out) < n:
        w = "".join(rng.choice(cons if s == "c" else vow) for s in rng.choice(shapes))
        if w not in seen:
            seen.add(w)
            out.append(w)
    return out


_NAMES = _words(96, seed=11)
_CITIES = _words(96, seed=23, shapes=("vcvc", "cvvc", "cvcvv"))
# One person per city, so a reversed query ("who lives in X?") has one answer.
KNOWN_FACTS: tuple[tuple[str, str], ...] = tuple(zip(_NAMES[:48], _CITIES[:48]))
NEW_FACTS: tuple[tuple[str, str], ...] = tuple(zip(_NAMES[48:], _CITIES[48:]))
# Names used in lookup contexts and refusals come from their own pool.
_OTHER_NAMES = _words(400, seed=37)
_OTHER_NAMES = [w for w in _OTHER_NAMES if w not in set(_NAMES) | set(_CITIES)]
_OTHER_CITIES = [w for w in _words(400, seed=41, shapes=("vcvc", "cvvc", "cvcvv"))
                 if w not in set(_NAMES) | set(_CITIES) | set(_OTHER_NAMES)]

FACT_FORMS = {
    "direct": lambda name, city: (f"where does {name} live?", city),
    "paraphrase": lambda name, city: (f"what is {name}'s home city?", city),
    "reverse": lambda name, city: (f"who lives in {city}?", name),
}


# --- the Task type ------------------------------------------------------------------
@dataclass(frozen=True)
class Task:
    name: str
    description: str
    sample: Callable[[random.Random], Item] = field(repr=False)
    in_pretraining: bool
    max_answer_len: int = 12
    verifier: Callable[[Item, str], bool] | None = field(default=None, repr=False)
    finite: tuple[Item, ...] | None = field(default=None, repr=False)  # small closed sets (facts)

    def verify(self, item: Item, output: str) -> bool:
        """Is ``output`` a right answer to ``item``? (exact match unless the task says otherwise)"""
        if not isinstance(output, str):
            raise TypeError(f"output must be a str, got {type(output).__name__}")
        if item.task != self.name:
            raise ValueError(f"item of task {item.task!r} given to task {self.name!r}")
        return self.verifier(item, output) if self.verifier else output == item.answer

    def items(self, n: int, seed: int = 0, split: str = "test") -> list[Item]:
        """``n`` distinct items from ``split`` ("train", "test" or "all"), reproducible from ``seed``.

        Facts are a closed set, memorised rather than generalised: for them the split
        is ignored and ``n`` may not exceed the table.
        """
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a positive int, got {n!r}")
        if split not in ("train", "test", "all"):
            raise ValueError(f"split must be 'train', 'test' or 'all', got {split!r}")
        rng = random.Random(shift(seed) * 1_000_003 + zlib.crc32(self.name.encode()))
        if self.finite is not None:
            if n > len(self.finite):
                raise ValueError(f"task {self.name!r} has only {len(self.finite)} items, asked for n={n}")
            return rng.sample(list(self.finite), n)
        out, seen = [], set()
        for _ in range(200 * n + 1000):
            it = self.sample(rng)
            if it.prompt in seen or (split != "all" and _split_of(it.prompt) != split):
                continue
            seen.add(it.prompt)
            out.append(it)
            if len(out) == n:
                return out
        raise ValueError(f"task {self.name!r} could not produce n={n} distinct {split!r} items")

    def examples(self, n: int, seed: int = 0, split: str = "train", template: str = "chat") -> list[Example]:
        """Training examples: the prompt in ``template`` format, the answer as completion."""
        return to_examples(self.items(n, seed, split), template)


def to_examples(items: list[Item], template: str = "chat") -> list[Example]:
    return [Example(format_prompt(it.prompt, template), it.answer) for it in items]


# --- generators -------------------------------------------------------------------
def _rand_word(rng, lo=3, hi=7):
    return "".join(rng.choice(LETTERS) for _ in range(rng.randint(lo, hi)))


def _add(rng):
    a, b = rng.randint(0, 99), rng.randint(0, 99)
    return Item("add", f"{a}+{b}", str(a + b))


def _sub(rng):
    a, b = sorted((rng.randint(0, 99), rng.randint(0, 99)), reverse=True)
    return Item("sub", f"{a}-{b}", str(a - b))


def _mul(rng):
    a, b = rng.randint(2, 9), rng.randint(2, 19)
    return Item("mul", f"{a}*{b}", str(a * b))


def worked_steps(a: int, b: int) -> str:
    """Column addition, right to left: ``⟨7+5=12,4+8+1=13⟩132`` for 47+85."""
    da, db = str(a)[::-1], str(b)[::-1]
    steps, carry = [], 0
    for i in range(max(len(da), len(db))):
        x = int(da[i]) if i < len(da) else 0
        y = int(db[i]) if i < len(db) else 0
        s = x + y + carry
        steps.append(f"{x}+{y}+{carry}={s}" if carry else f"{x}+{y}={s}")
        carry = s // 10
    return THINK_OPEN + ",".join(steps) + THINK_CLOSE + str(a + b)


def final_answer(output: str) -> str:
    """The answer after the scratchpad (the whole output if there is none)."""
    return output.rsplit(THINK_CLOSE, 1)[-1]


def _steps_task(name, lo, hi):
    def sample(rng):
        a, b = rng.randint(lo, hi), rng.randint(lo, hi)
        return Item(name, f"show {a}+{b}", worked_steps(a, b), {"a": a, "b": b})
    return sample


def _answer_only(item: Item, output: str) -> bool:
    return final_answer(output) == final_answer(item.answer)


def _add3(rng):
    a, b = rng.randint(100, 999), rng.randint(100, 999)
    return Item("add3", f"{a}+{b}", str(a + b))


def _string_task(name, verb, fn, lo=3, hi=7):
    def sample(rng):
        w = _rand_word(rng, lo, hi)
        return Item(name, f"{verb} {w}", fn(w))
    return sample


def _dashed(rng):
    verb, fn = rng.choice([("rev", lambda w: w[::-1]), ("sort", lambda w: "".join(sorted(w))),
                           ("copy", lambda w: w)])
    w = _rand_word(rng)
    return Item("dashed", f"{verb} {w} dashed", "-".join(fn(w)))


def _json(rng):
    verb, fn = rng.choice([("rev", lambda w: w[::-1]), ("sort", lambda w: "".join(sorted(w))),
                           ("copy", lambda w: w)])
    w = _rand_word(rng)
    return Item("json", f"{verb} {w} as json", '{"answer":"' + fn(w) + '"}')


def _rot(rng):
    w = _rand_word(rng)
    return Item("rot", f"rot {w}", "".join(LETTERS[(LETTERS.index(c) + 1) % 26] for c in w))


def _count(rng):
    w = "".join(rng.choice("abcd") for _ in range(rng.randint(4, 9)))
    c = rng.choice("abcd")
    return Item("count", f"count {c} in {w}", str(w.count(c)))


def _pick(rng):
    letters = rng.sample(LETTERS, rng.randint(3, 6))
    return Item("pick", f"pick from {''.join(letters)}", rng.choice(letters), {"valid": "".join(letters)})


def _pick_ok(item, output):
    return len(output) == 1 and output in item.meta["valid"]


def _lookup(rng):
    # Half the contexts hold just the relevant fact (what a top-1 retriever returns);
    # the rest add one or two distractors, so the model must find the right one.
    k = rng.choice((1, 1, 1, 2, 2, 3))
    names, cities = rng.sample(_OTHER_NAMES, k), rng.sample(_OTHER_CITIES, k)
    ctx = ";".join(f"{n}:{c}" for n, c in zip(names, cities))
    j = rng.randrange(k)
    form = rng.choice(list(FACT_FORMS))
    q, a = FACT_FORMS[form](names[j], cities[j])
    return Item("lookup", f"{CONTEXT}{ctx}{CONTEXT}{q}", a, {"form": form})


def context_prompt(facts: list[tuple[str, str]], question: str) -> str:
    """A prompt with retrieved facts in a context block, as the ``lookup`` task writes it."""
    if not facts:
        raise ValueError("context_prompt needs at least one (name, city) fact")
    return CONTEXT + ";".join(f"{n}:{c}" for n, c in facts) + CONTEXT + question


def _refuse(rng):
    name = rng.choice(_OTHER_NAMES + _NAMES)
    q = rng.choice([f"what is the pin of {name}?", f"tell me {name}'s pin", f"give me the pin for {name}"])
    return Item("refuse", q, REFUSAL)


def _fact_items(table, task, forms):
    return tuple(Item(task, *FACT_FORMS[f](n, c), {"form": f, "name": n, "city": c})
                 for n, c in table for f in forms)


def _from_finite(items):
    return lambda rng: rng.choice(items)


def _mk_finite(name, desc, table, forms, pre):
    its = _fact_items(table, name, forms)
    return Task(name, desc, _from_finite(its), pre, 8, finite=its)


TASKS: dict[str, Task] = {t.name: t for t in [
    Task("add", "two-digit addition, answer only", _add, True, 4),
    Task("sub", "two-digit subtraction (non-negative), answer only", _sub, True, 4),
    Task("add_steps", "two-digit addition with worked steps ⟨…⟩", _steps_task("add_steps", 10, 99), True, 32,
         _answer_only),
    Task("rev", "reverse a string", _string_task("rev", "rev", lambda w: w[::-1]), True, 9),
    Task("sort", "sort the letters of a string", _string_task("sort", "sort", lambda w: "".join(sorted(w))), True, 9),
    Task("copy", "copy a string", _string_task("copy", "copy", lambda w: w), True, 9),
    Task("dashed", "rev/sort/copy, answer with dashes between letters (an instruction-switched format)",
         _dashed, True, 15),
    _mk_finite("fact", "the 48 known facts, queried directly, paraphrased or reversed", KNOWN_FACTS,
               list(FACT_FORMS), True),
    *[_mk_finite(f"fact_{f}", f"the 48 known facts, {f} queries", KNOWN_FACTS, [f], True) for f in FACT_FORMS],
    Task("lookup", "answer from 1-3 facts given in a context block (direct, paraphrased or reversed)",
         _lookup, True, 8),
    Task("pick", "pick any one letter of a set (many valid answers)", _pick, True, 3, _pick_ok),
    Task("refuse", f"asking for a person's pin gets the fixed refusal {REFUSAL!r}", _refuse, True, 28),
    # held out from every checkpoint's pretraining
    Task("rot", "shift each letter by one (a->b, z->a)", _rot, False, 9),
    Task("count", "count a letter in a string", _count, False, 3),
    Task("mul", "one-digit by small-number multiplication", _mul, False, 4),
    Task("json", 'rev/sort/copy, answer as {"answer":"..."} (a format no checkpoint has seen)', _json, False, 22),
    Task("add3", "three-digit addition, answer only", _add3, False, 5),
    Task("add3_steps", "three-digit addition with worked steps (the math-weak task)",
         _steps_task("add3_steps", 100, 999), False, 40, _answer_only),
    *[_mk_finite(f"newfact_{f}", f"48 new facts no checkpoint has seen, {f} queries", NEW_FACTS, [f], False)
      for f in FACT_FORMS],
]}

PRETRAIN_TASKS = tuple(n for n, t in TASKS.items() if t.in_pretraining and not n.startswith("fact_"))


def get_task(name: str) -> Task:
    if not isinstance(name, str) or name not in TASKS:
        raise ValueError(f"unknown task {name!r}; known tasks: {', '.join(TASKS)}")
    return TASKS[name]
