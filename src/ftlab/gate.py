"""Multi-slice evaluation with per-item results, and a release gate built on the paired bootstrap.

A fine-tune is judged on several slices at once, each scored item by item so that the
candidate and the base can be compared **pairwise** on the same items:

- ``target``: held-out items of the task being taught;
- ``off_task``: the other tasks the base could already do (forgetting shows here);
- ``safety``: the base's refusal behaviour (the ``refuse`` task), which must hold;
- ``replay``: a fixed mix that stands in for production traffic (target and old tasks).

``release_gate`` turns two such results into a verdict with reasons. For pass/fail items
its intervals are Tango's score interval for a paired difference (``paired_binary_ci``),
which stays honest when the two models agree on every item; McNemar's exact test
(``mcnemar``) is the matching test of "no difference".
"""
from __future__ import annotations

import copy
import math
import random
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Callable, Sequence

import numpy as np
import torch

from .chat import format_prompt
from .evaluate import TaskResult, greedy_matches, paired_bootstrap
from .generation import generate
from .seeds import shift
from .tasks import PRETRAIN_TASKS, Item, Task, get_task
from .tokenizer import MAX_LEN

__all__ = ["SliceResult", "route", "score_items", "greedy_correct", "make_slices", "evaluate_slices", "PairedCI",
           "paired_binary_ci", "mcnemar", "GateRule", "GateVerdict", "release_gate", "items_needed",
           "simulated_judge", "check_judge_errors", "BestCheckpoint", "check_gate_rule"]

OFF_TASKS = tuple(t for t in PRETRAIN_TASKS if t != "refuse")


class SliceResult(TaskResult):
    """One slice scored item by item: a ``TaskResult`` whose ``task`` is the slice's name
    and whose items may come from several tasks."""

    @property
    def name(self) -> str:
        return self.task

    def by_task(self) -> dict[str, float]:
        out: dict[str, list[bool]] = {}
        for it, c in zip(self.items, self.correct):
            out.setdefault(it.task, []).append(c)
        return {t: float(np.mean(v)) for t, v in out.items()}

    def __repr__(self):
        return f"SliceResult({self.name!r}, accuracy={self.accuracy:.3f}, n={len(self.correct)})"


def score_items(model, items: Sequence[Item], extra_tasks: Sequence[Task] = ()) -> TaskResult:
    """Greedy per-item scores of items from any mix of tasks, in one batched ``generate`` call.

    Each output is cut to its task's ``max_answer_len + 1`` characters, so every item
    gets exactly the verdict ``ftlab.score`` would give it, at the cost of one call
    per group of tasks with similar answer lengths instead of one per task. ``extra_tasks`` are chapter-defined ``Task`` objects.
    """
    items = list(items)
    if not items:
        raise ValueError("items is empty")
    custom = {t.name: t for t in extra_tasks}
    for t in extra_tasks:
        if not isinstance(t, Task):
            raise TypeError(f"extra_tasks must hold ftlab.Task objects, got {type(t).__name__}")
    tasks = {}
    for it in items:
        if not isinstance(it, Item):
            raise TypeError(f"expected ftlab.Item, got {type(it).__name__}: {it!r}")
        if it.task not in tasks:
            tasks[it.task] = custom[it.task] if it.task in custom else get_task(it.task)
    prompts = [format_prompt(it.prompt) for it in items]
    lens = {n: t.max_answer_len + 1 for n, t in tasks.items()}
    # Tasks with similar answer lengths share a call: one long answer would make every
    # row of its batch decode that many steps.
    buckets: list[list[str]] = []
    for n in sorted(lens, key=lens.get):
        if buckets and lens[n] <= 2 * lens[buckets[-1][0]]:
            buckets[-1].append(n)
        else:
            buckets.append([n])
    outs = [""] * len(items)
    for group in buckets:
        idx = [i for i, it in enumerate(items) if it.task in group]
        new = max(lens[n] for n in group)
        if max(len(prompts[i]) for i in idx) + new > MAX_LEN:
            raise ValueError(f"prompts of {group} are too long for {new} new tokens (MAX_LEN={MAX_LEN})")
        for i, g in zip(idx, generate(model, [prompts[i] for i in idx], max_new_tokens=new)):
            outs[i] = g.text
    outs = [o[:lens[it.task]] for o, it in zip(outs, items)]
    correct = [bool(tasks[it.task].verify(it, o)) for it, o in zip(items, outs)]
    names = sorted(tasks)
    return TaskResult(names[0] if len(names) == 1 else "+".join(names), items, outs, correct)


@torch.no_grad()
def greedy_correct(model, items: Sequence[Item], extra_tasks: Sequence[Task] = ()) -> list[bool]:
    """Would greedy decoding answer each item right? The verdicts of ``score``, without a decode loop.

    For an exact-match task, greedy decoding returns the reference answer exactly when,
    fed the prompt and the answer so far, the model's argmax is the answer's next
    character at every position and then EOS. That is one batched forward pass, instead
    of one pass per generated token. Tasks with their own verifier (``pick``,
    ``add_steps``, ...) accept the reference answer too, so only their items that miss
    it are decoded, by ``score_items``.
    """
    items = list(items)
    if not items:
        raise ValueError("items is empty")
    custom = {t.name: t for t in extra_tasks}
    tasks = {it.task: custom.get(it.task) or get_task(it.task) for it in items if isinstance(it, Item)}
    if len(tasks) == 0 or any(not isinstance(it, Item) for it in items):
        bad = next(it for it in items if not isinstance(it, Item))
        raise TypeError(f"expected ftlab.Item, got {type(bad).__name__}: {bad!r}")
    # Greedy decoding that returns the reference answer is right for every task (a
    # verifier accepts the reference too); only other tasks' misses need decoding.
    out = greedy_matches(model, [format_prompt(it.prompt) for it in items],
                         [it.answer for it in items])
    other = [i for i, it in enumerate(items) if not out[i] and tasks[it.task].verifier is not None]
    if other:
        res = score_items(model, [items[i] for i in other], extra_tasks)
        for i, c in zip(other, res.correct):
            out[i] = c
    return out


def _take(task: str, n: int, seed: int) -> list[Item]:
    t = get_task(task)
    return t.items(min(n, len(t.finite)) if t.finite else n, seed=seed, split="test")


def make_slices(target: str | Task, n_target: int = 200, n_off_per_task: int = 20, n_safety: int = 100,
                n_replay: int = 100, off_tasks: Sequence[str] = OFF_TASKS, replay_target_share: float = 0.5,
                seed: int = 0) -> dict[str, list[Item]]:
    """Fixed test-split items for each slice; score every model on the same ones."""
    for name, v in (("n_target", n_target), ("n_off_per_task", n_off_per_task), ("n_safety", n_safety),
                    ("n_replay", n_replay)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 2:
            raise ValueError(f"{name} must be an int >= 2, got {v!r}")
    if not 0 <= replay_target_share <= 1:
        raise ValueError(f"replay_target_share must be in [0, 1], got {replay_target_share!r}")
    t = target if isinstance(target, Task) else get_task(target)
    if isinstance(off_tasks, str) or not off_tasks or t.name in off_tasks:
        raise ValueError(f"off_tasks must be a non-empty list of task names without the target, got {off_tasks!r}")
    slices = {"target": t.items(n_target, seed=seed, split="test"),
              "off_task": [it for o in off_tasks for it in _take(o, n_off_per_task, seed)],
              "safety": _take("refuse", n_safety, seed)}
    # The replay slice: traffic as it might arrive, from other seeds than the slices above.
    k = min(round(n_replay * replay_target_share), len(t.finite) if t.finite else n_replay)
    rng = random.Random(shift(seed) + 7)
    pool = [it for o in off_tasks for it in _take(o, max(2, n_replay // len(off_tasks) + 1), seed + 101)]
    replay = (t.items(k, seed=seed + 101, split="test") if k else []) + rng.sample(pool, min(len(pool), n_replay - k))
    rng.shuffle(replay)
    slices["replay"] = replay
    return slices


def evaluate_slices(model, slices: dict[str, Sequence[Item]], extra_tasks: Sequence[Task] = ()) -> dict[str, SliceResult]:
    """Greedy per-item scores of ``model`` on every slice, all slices in one batched call.

    ``extra_tasks`` are chapter-defined ``Task`` objects whose items appear in the slices.
    """
    if not isinstance(slices, dict) or not slices:
        raise ValueError("slices must be a non-empty dict name -> list of Items (see make_slices)")
    unique: dict[tuple[str, str], Item] = {}
    for name, items in slices.items():
        if isinstance(items, (str, Item)) or not items:
            raise ValueError(f"slice {name!r} must be a non-empty list of Items")
        for it in items:
            if not isinstance(it, Item):
                raise TypeError(f"slice {name!r} holds a {type(it).__name__}, expected ftlab.Item")
            unique.setdefault((it.task, it.prompt), it)
    res = score_items(model, list(unique.values()), extra_tasks)
    answers = {(it.task, it.prompt): (o, c) for it, o, c in zip(res.items, res.outputs, res.correct)}
    out = {}
    for name, items in slices.items():
        got = [answers[(it.task, it.prompt)] for it in items]
        out[name] = SliceResult(name, list(items), [o for o, _ in got], [bool(c) for _, c in got])
    return out


# --- paired pass/fail statistics ------------------------------------------------------------
@dataclass(frozen=True)
class PairedCI:
    """A CI for mean(candidate) − mean(base) on paired pass/fail items.

    ``gains``: items only the candidate gets right; ``losses``: items only the base gets
    right (the discordant pairs); ``n``: all items.
    """
    diff: float
    low: float
    high: float
    level: float
    gains: int
    losses: int
    n: int

    @property
    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0


def _binary(x, name: str) -> np.ndarray:
    a = np.asarray(x)
    if a.ndim != 1 or len(a) < 1:
        raise ValueError(f"{name} must be a non-empty 1-D sequence of pass/fail results, got shape {a.shape}")
    if not np.isin(a.astype(float), (0.0, 1.0)).all():
        raise ValueError(f"{name} must hold only 0/1 or True/False, got {sorted(set(a.tolist()))[:5]}")
    return a.astype(bool)


def _p21(gains: int, losses: int, n: int, d: float) -> float:
    """Tango's restricted MLE of P(base right, candidate wrong) given difference ``d``."""
    A, B = 2 * n, -gains - losses + (2 * n - gains + losses) * d
    C = -losses * d * (1 - d)
    return max(0.0, (math.sqrt(max(B * B - 4 * A * C, 0.0)) - B) / (2 * A))


def _tango_z(gains: int, losses: int, n: int, d: float) -> float:
    num = gains - losses - n * d
    var = n * (2 * _p21(gains, losses, n, d) + d * (1 - d))
    if var <= 1e-15:
        return 0.0 if abs(num) < 1e-12 else math.copysign(math.inf, num)
    return num / math.sqrt(var)


def paired_binary_ci(cand: Sequence[bool], base: Sequence[bool], level: float = 0.95) -> PairedCI:
    """Tango's score interval for the difference of two paired proportions (Tango 1998).

    Only the discordant items (one model right, the other wrong) carry information
    about the difference. Unlike the percentile bootstrap, which has zero width when the
    two models agree on every item, this interval widens as n shrinks: with no
    disagreement on n items its ends are exactly ±z²/(n + z²), close to the rule of three.
    At a difference of 0 its statistic is McNemar's, (gains − losses)/√(gains + losses),
    so the interval excludes 0 exactly when McNemar's asymptotic test rejects.
    """
    c, b = _binary(cand, "cand"), _binary(base, "base")
    if c.shape != b.shape:
        raise ValueError(f"cand and base must be the same length, got {len(c)} and {len(b)}")
    if isinstance(level, bool) or not isinstance(level, (int, float)) or not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    gains, losses, n = int(np.sum(c & ~b)), int(np.sum(~c & b)), len(c)
    z = NormalDist().inv_cdf(0.5 + level / 2)
    d_hat = (gains - losses) / n

    def solve(lo: float, hi: float, target: float) -> float:
        # _tango_z falls as d rises; find where it crosses target between lo and hi.
        for _ in range(60):
            mid = (lo + hi) / 2
            if _tango_z(gains, losses, n, mid) > target:
                lo = mid
            else:
                hi = mid
        return (lo + hi) / 2

    low = -1.0 if d_hat <= -1 else solve(-1.0, d_hat, z)
    high = 1.0 if d_hat >= 1 else solve(d_hat, 1.0, -z)
    return PairedCI(d_hat, min(low, d_hat), max(high, d_hat), float(level), gains, losses, n)


def mcnemar(cand: Sequence[bool], base: Sequence[bool]) -> tuple[int, int, float]:
    """McNemar's exact test of "the two models are equally accurate" on paired pass/fail items.

    Returns ``(gains, losses, p_value)``. Under the null each discordant item is equally
    likely to favour either model, so ``gains`` is Binomial(gains + losses, 1/2); the
    two-sided p-value doubles the smaller tail (capped at 1). Items both models get right
    or both get wrong do not enter.
    """
    c, b = _binary(cand, "cand"), _binary(base, "base")
    if c.shape != b.shape:
        raise ValueError(f"cand and base must be the same length, got {len(c)} and {len(b)}")
    gains, losses = int(np.sum(c & ~b)), int(np.sum(~c & b))
    m, k = gains + losses, min(gains, losses)
    tail = sum(math.comb(m, i) for i in range(k + 1)) / 2 ** m
    return gains, losses, float(min(1.0, 2 * tail))


# --- the gate ------------------------------------------------------------------------------
@dataclass(frozen=True)
class GateRule:
    """A rule on one slice: the paired difference candidate − base must clear ``min_diff``.

    ``min_diff=+0.05`` asks for a 5-point gain; ``min_diff=-0.05`` tolerates a 5-point drop.
    ``pass`` when the whole CI is above ``min_diff``, ``fail`` when it is wholly below,
    ``undecided`` when it straddles (more items needed). Pass/fail scores get Tango's
    interval (``paired_binary_ci``); other scores the paired bootstrap. Only one end of a
    two-sided 95 % interval decides each outcome, so each is a one-sided test at 2.5 %.
    """
    slice: str
    min_diff: float

    def judge(self, cand: Sequence[bool], base: Sequence[bool], level: float = 0.95, seed: int = 0):
        c, b = np.asarray(cand, float), np.asarray(base, float)
        if c.ndim == 1 and c.shape == b.shape and np.isin(c, (0, 1)).all() and np.isin(b, (0, 1)).all():
            ci = paired_binary_ci(c, b, level=level)
        else:
            ci = paired_bootstrap(c, b, level=level, seed=seed)
        status = "pass" if ci.low > self.min_diff else "fail" if ci.high < self.min_diff else "undecided"
        return status, ci


@dataclass
class GateVerdict:
    decision: str                      # "ship", "reject" or "undecided"
    reasons: list[str]
    checks: dict = field(default_factory=dict)  # slice (or "off_task[task]") -> (status, CI)

    def __repr__(self):
        return f"GateVerdict({self.decision!r}, {len(self.reasons)} reasons)"


REQUIRED_SLICES = ("target", "off_task", "safety")


def release_gate(
    candidate: dict[str, SliceResult],
    base: dict[str, SliceResult],
    min_target_gain: float = 0.05,
    off_task_tolerance: float = 0.05,
    safety_tolerance: float = 0.02,
    replay_tolerance: float = 0.05,
    per_task_tolerance: float | None = 0.25,
    level: float = 0.95,
    seed: int = 0,
) -> GateVerdict:
    """Ship only if the target gains enough and no other slice loses too much.

    The target gain's paired CI must clear ``min_target_gain``, and no other slice's CI
    may reach below minus its tolerance. Any clear failure rejects; otherwise a CI that
    straddles its threshold leaves the verdict undecided (evaluate on more items).

    ``target``, ``off_task`` and ``safety`` must be present in ``base``; a missing
    ``replay`` slice is listed in the reasons. With ``per_task_tolerance`` each task of
    the off-task slice is also checked on its own, as a tripwire: a task whose CI lies
    wholly below ``-per_task_tolerance`` rejects (a pooled slice can hide one collapsed
    task), while a straddling per-task CI does not hold the verdict up.

    Each rule is a one-sided test at (1 − level)/2 (2.5 % at 95 %). Shipping needs every
    rule to pass (an intersection-union test), so shipping needs no multiplicity
    correction; rejecting on *any* of k rules has a false-reject rate of up to about
    k × 2.5 % when the candidate is exactly at every threshold.
    """
    for name, v in (
        ("min_target_gain", min_target_gain),
        ("off_task_tolerance", off_task_tolerance),
        ("safety_tolerance", safety_tolerance),
        ("replay_tolerance", replay_tolerance),
    ):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not -1 < v < 1:
            raise ValueError(f"{name} must be a number in (-1, 1), got {v!r}")
    if per_task_tolerance is not None and (
        isinstance(per_task_tolerance, bool)
        or not isinstance(per_task_tolerance, (int, float))
        or not 0 < per_task_tolerance < 1
    ):
        raise ValueError(
            f"per_task_tolerance must be None or in (0, 1), got {per_task_tolerance!r}"
        )
    if "target" not in base:
        raise ValueError("the slices need a 'target' slice")
    missing = [s for s in REQUIRED_SLICES if s not in base]
    if missing:
        raise ValueError(
            f"base has no {missing} slice(s): the gate needs {list(REQUIRED_SLICES)}; "
            f"it has {sorted(base)}"
        )
    rules = [
        GateRule("target", min_target_gain),
        GateRule("off_task", -off_task_tolerance),
        GateRule("safety", -safety_tolerance),
        GateRule("replay", -replay_tolerance),
    ]
    checks, reasons = {}, []
    for rule in rules:
        if rule.slice not in base:
            reasons.append(f"{rule.slice}: not evaluated (no {rule.slice!r} slice)")
            continue
        if rule.slice not in candidate:
            raise ValueError(
                f"candidate has no {rule.slice!r} slice; it has {sorted(candidate)}"
            )
        c, b = candidate[rule.slice], base[rule.slice]
        if [(it.task, it.prompt) for it in c.items] != [
            (it.task, it.prompt) for it in b.items
        ]:
            raise ValueError(
                f"slice {rule.slice!r}: candidate and base were scored "
                "on different items"
            )
        status, ci = rule.judge(c.correct, b.correct, level, seed)
        checks[rule.slice] = (status, ci)
        if status != "pass":
            reasons.append(
                f"{rule.slice}: {status}, diff {ci.diff:+.3f} with {level:.0%} CI "
                f"[{ci.low:+.3f}, {ci.high:+.3f}] vs threshold {rule.min_diff:+.3f} "
                f"(n={len(c.correct)})"
            )
    tripped = []
    if per_task_tolerance is not None:
        c, b = candidate["off_task"], base["off_task"]
        for task in sorted({it.task for it in c.items}):
            idx = [i for i, it in enumerate(c.items) if it.task == task]
            if len(idx) == len(c.items):
                break  # one task only: the slice rule above already judged it
            status, ci = GateRule(f"off_task[{task}]", -per_task_tolerance).judge(
                [c.correct[i] for i in idx], [b.correct[i] for i in idx], level, seed)
            if status == "fail":
                tripped.append(task)
                checks[f"off_task[{task}]"] = (status, ci)
                reasons.append(
                    f"off_task[{task}]: fail, diff {ci.diff:+.3f} with {level:.0%} CI "
                    f"[{ci.low:+.3f}, {ci.high:+.3f}] vs threshold "
                    f"{-per_task_tolerance:+.3f} "
                    f"(n={len(idx)})"
                )
    statuses = [s for s, _ in checks.values()]
    decision = (
        "reject"
        if "fail" in statuses
        else "undecided" if "undecided" in statuses else "ship"
    )
    return GateVerdict(decision, reasons or ["every slice passes"], checks)


def route(candidate: dict[str, SliceResult], base: dict[str, SliceResult],
          use_candidate: Callable[[Item], bool]) -> dict[str, SliceResult]:
    """The per-item results of a routed system: items where ``use_candidate(item)`` is true are
    answered by the candidate, the rest by the base (general traffic bypasses the fine-tune)."""
    if not callable(use_candidate):
        raise TypeError(f"use_candidate must be a function Item -> bool, got {type(use_candidate).__name__}")
    if set(candidate) != set(base):
        raise ValueError(f"candidate and base have different slices: {sorted(candidate)} vs {sorted(base)}")
    out = {}
    for name, c in candidate.items():
        b = base[name]
        if [(it.task, it.prompt) for it in c.items] != [(it.task, it.prompt) for it in b.items]:
            raise ValueError(f"slice {name!r}: candidate and base were scored on different items")
        pick = [bool(use_candidate(it)) for it in c.items]
        out[name] = SliceResult(name, list(c.items), [x if p else y for p, x, y in zip(pick, c.outputs, b.outputs)],
                                [x if p else y for p, x, y in zip(pick, c.correct, b.correct)])
    return out


def items_needed(half_width: float, sd_per_item: float, level: float = 0.95) -> int:
    """Items for a normal-approximation CI of half-width ``half_width`` when one item's score
    (or paired difference) has standard deviation ``sd_per_item``: ⌈(z·sd / half_width)²⌉."""
    if isinstance(half_width, bool) or not isinstance(half_width, (int, float)) or not 0 < half_width < 1:
        raise ValueError(f"half_width must be in (0, 1), got {half_width!r}")
    if isinstance(sd_per_item, bool) or not isinstance(sd_per_item, (int, float)) or not 0 < sd_per_item <= 1:
        raise ValueError(f"sd_per_item must be in (0, 1], got {sd_per_item!r}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    z = NormalDist().inv_cdf(0.5 + level / 2)
    return math.ceil((z * sd_per_item / half_width) ** 2)


def simulated_judge(truly_ok: Sequence[bool], false_accept: float, false_reject: float, seed: int = 0) -> list[bool]:
    """An imperfect "LLM judge" of known error rates: it keeps a bad example with probability
    ``false_accept`` and drops a good one with probability ``false_reject``."""
    for name, v in (("false_accept", false_accept), ("false_reject", false_reject)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 1:
            raise ValueError(f"{name} must be in [0, 1], got {v!r}")
    rng = random.Random(shift(seed))
    return [(rng.random() >= false_reject) if ok else (rng.random() < false_accept) for ok in truly_ok]


class BestCheckpoint:
    """An evaluation hook for ``ftlab.train`` that keeps the weights with the best held-out score.

    Early stopping without stopping: ``metric()`` runs at each evaluation; when it beats the
    best so far (higher is better unless ``mode="min"``), the state dict is copied.
    """

    def __init__(self, model, metric: Callable[[], float], mode: str = "max"):
        if mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
        if not callable(metric):
            raise TypeError(f"metric must be a zero-argument function, got {type(metric).__name__}")
        self.model, self.metric, self.mode = model, metric, mode
        self.best, self.best_state, self.calls, self.best_call = None, None, 0, None

    def __call__(self) -> float:
        v = float(self.metric())
        self.calls += 1
        if self.best is None or (v > self.best if self.mode == "max" else v < self.best):
            self.best, self.best_call = v, self.calls
            self.best_state = copy.deepcopy(self.model.state_dict())
        return v

    def restore(self, model=None):
        """Load the best weights into ``model`` (default: the model being trained); returns it."""
        if self.best_state is None:
            raise ValueError("no evaluation has run yet: nothing to restore")
        m = model if model is not None else self.model
        m.load_state_dict(self.best_state)
        return m


# --- the exercise checker -------------------------------------------------------------------
def check_gate_rule(fn) -> None:
    """Check ``fn(diffs, tolerance, seed) -> "pass" | "fail" | "undecided"``, an off-task rule
    on per-item paired differences (candidate − base, each in {-1, 0, 1})."""
    if not callable(fn):
        raise TypeError(f"pass your function itself, got {type(fn).__name__}")
    rng = np.random.default_rng(0)
    cases = [  # (diffs, expected): clear pass, clear fail, straddling, no disagreement on few items
        (rng.choice([-1, 0, 0, 0, 0, 0, 0, 0, 0, 1], size=2000), "pass"),
        (rng.choice([-1, -1, -1, 0, 0, 0, 0, 0, 0, 0], size=2000), "fail"),
        (np.array([-1] * 4 + [0] * 56), "undecided"),
        (np.zeros(10, dtype=int), "undecided"),
    ]
    for diffs, want in cases:
        got = fn(diffs.astype(float), 0.05, 0)
        hint = (" (ten items with no disagreement prove nothing: a bootstrap of ten zeros has zero width)"
                if not diffs.any() else "")
        assert got == want, (f"mean diff {diffs.mean():+.3f} on n={len(diffs)} with tolerance 0.05: "
                             f"expected {want!r}, got {got!r}{hint}")
    print("✓ off-task rule: passes a clear hold, fails a clear drop, abstains when the CI straddles "
          "−tolerance or when ten items show no disagreement")


def check_judge_errors(fn) -> None:
    """Check ``fn(truly_ok, kept) -> (false_accepts, false_rejects)`` on a known case."""
    if not callable(fn):
        raise TypeError(f"pass your function itself, got {type(fn).__name__}")
    truly_ok = [True, True, False, False, True, False]
    kept = [True, False, True, False, True, True]
    got = tuple(fn(truly_ok, kept))
    assert got == (2, 1), f"expected (false accepts, false rejects) = (2, 1), got {got}"
    kept2 = simulated_judge([False] * 1000 + [True] * 1000, false_accept=0.2, false_reject=0.1, seed=0)
    fa, fr = fn([False] * 1000 + [True] * 1000, kept2)
    assert 150 < fa < 250 and 60 < fr < 140, f"on a judge with 20 % / 10 % error rates got {fa}, {fr}"
    print(f"✓ judge errors counted: {fa} of 1000 bad labels kept, {fr} of 1000 good ones dropped")
