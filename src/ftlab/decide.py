"""Prompt, retrieve or fine-tune? The decision tree of chapter 01, its cost break-even, and its checkers.

``decide`` names the cheapest rung of the ladder (prompt → RAG → fine-tune) that can fix a
*named, measured* failure, and says why. ``break_even_requests_per_day`` is the volume at
which a fine-tune that shortens each request pays for itself and its re-tunes.

The thresholds are stated assumptions, not laws; each carries the source it leans on.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

FAILURES = {
    "instructions": "ignores an instruction or format it can follow when asked clearly",
    "knowledge": "lacks facts: private, recent or customer-specific content",
    "behaviour": "cannot hit a format, style or policy even with a saturated prompt",
    "cost": "quality is fine, but the prompt or the model is too slow or too expensive",
    "unmeasured": "no named failure on an eval set yet ('we want our own model')",
}
FRESHNESS = ("static", "monthly", "daily")
ACTIONS = ("measure", "prompt", "rag", "collect data", "fine-tune")

# Labelled examples before a first SFT run is worth launching. OpenAI's fine-tuning guide
# accepts 10 and reports clear gains from 50-100; LIMA (Zhou et al. 2023) aligned a 65B model
# with 1,000. We ask for 100 clean examples plus a held-out eval set.
MIN_EXAMPLES = 100


@dataclass(frozen=True)
class Recommendation:
    action: str   # one of ACTIONS
    reason: str   # one sentence you could say in the room

    def __str__(self) -> str:
        return f"{self.action}: {self.reason}"


def _check_int(name: str, value, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {value!r} ({type(value).__name__})")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return value


def _check_number(name: str, value, allow_zero: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {value!r} ({type(value).__name__})")
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{name} must be finite and {'>= 0' if allow_zero else '> 0'}, got {value!r}")
    return float(value)


def decide(failure: str, labelled_examples: int = 0, requests_per_day: float = 0,
           freshness: str = "static",
           break_even_per_day: float = math.inf) -> Recommendation:
    """The cheapest rung that can fix ``failure``, given the signals, with its reason.

    failure             a key of ``FAILURES``
    labelled_examples   clean input/output pairs you already have
    requests_per_day    production volume
    freshness           how often the facts change: "static", "monthly" or "daily"
    break_even_per_day  the volume at which a fine-tune pays back
                        (``break_even_requests_per_day``)
    """
    if not isinstance(failure, str) or failure not in FAILURES:
        raise ValueError(f"failure must be one of {', '.join(FAILURES)}; "
                         f"got {failure!r}")
    n = _check_int("labelled_examples", labelled_examples)
    volume = _check_number("requests_per_day", requests_per_day)
    if freshness not in FRESHNESS:
        raise ValueError(f"freshness must be one of {', '.join(FRESHNESS)}; "
                         f"got {freshness!r}")
    be = break_even_per_day
    if (isinstance(be, bool) or not isinstance(be, (int, float))
            or math.isnan(be) or be <= 0):
        raise ValueError("break_even_per_day must be a number > 0 (math.inf "
                         f"allowed), got {be!r}")

    if failure == "unmeasured":
        return Recommendation("measure", "no failure is named yet: build a held-out "
                              "eval of real requests, then see which rung it points to")
    if failure == "instructions":
        return Recommendation("prompt", "the model already has the skill; a clearer "
                              "instruction, an example or constrained decoding "
                              "switches it on in minutes")
    if failure == "knowledge":
        why = {"daily": "the facts change daily, faster than any retraining loop",
               "monthly": "the facts change monthly, and each change would mean a "
                          "re-tune",
               "static": "even static facts are unreliable in the weights: without "
                         "many paraphrases recall is brittle, reversed questions "
                         "fail, and aggressive runs overwrite old facts"}[freshness]
        return Recommendation("rag", f"put the facts in the context: {why}; "
                              "retrieval also gives citations")
    if failure == "behaviour":
        if n < MIN_EXAMPLES:
            return Recommendation("collect data", "a fine-tune can teach a new format "
                                  f"or style, but {n} labelled examples is under "
                                  f"{MIN_EXAMPLES}: label more and build the eval "
                                  "set first")
        return Recommendation("fine-tune", "a saturated prompt cannot teach a "
                              f"behaviour the model never saw; {n} examples are "
                              "enough for a LoRA run, checked on a held-out eval")
    # failure == "cost"
    if volume < be:
        return Recommendation("prompt", f"{volume:,.0f} requests/day is below the "
                              f"break-even of {be:,.0f}: turn on prompt caching, trim "
                              "the prompt, or try a smaller model with the same prompt")
    if n < MIN_EXAMPLES:
        return Recommendation("collect data", "the volume pays for a fine-tune, but "
                              f"{n} examples is under {MIN_EXAMPLES}: log the current "
                              "model's outputs as labels first")
    return Recommendation("fine-tune", f"{volume:,.0f} requests/day is above the "
                          f"break-even of {be:,.0f}: a tuned model that is cheaper "
                          "per request (a shorter prompt or a smaller model) pays "
                          "back; keep the old one as fallback")


# --- retrieval, the toy way ---------------------------------------------------------

def with_retrieved_context(items, table, n_distractors: int = 2,
                           seed: int = 0) -> list[str]:
    """Chat prompts that put each item's fact, shuffled among ``n_distractors``
    others from ``table``, into the context block: what a retriever with imperfect
    precision returns.

    ``items`` are fact items (their ``meta`` names the person and city), ``table`` is
    a list of (name, city) pairs such as ``ftlab.NEW_FACTS``.
    """
    import random

    from .chat import chat_prompt
    from .seeds import shift
    from .tasks import context_prompt

    table = list(table)
    if (isinstance(n_distractors, bool) or not isinstance(n_distractors, int)
            or not 0 <= n_distractors < len(table)):
        raise ValueError(f"n_distractors must be an int in [0, {len(table) - 1}], "
                         f"got {n_distractors!r}")
    rng = random.Random(shift(seed))
    prompts = []
    for it in items:
        if "name" not in it.meta or "city" not in it.meta:
            raise ValueError(f"item {it.prompt!r} of task {it.task!r} is not a fact "
                             "item (no name/city in meta)")
        fact = (it.meta["name"], it.meta["city"])
        others = rng.sample([f for f in table if f != fact], n_distractors)
        facts = others + [fact]
        rng.shuffle(facts)
        prompts.append(chat_prompt(context_prompt(facts, it.prompt)))
    return prompts


# --- the break-even --------------------------------------------------------------------

def cost_per_request(tokens: float, usd_per_mtok: float) -> float:
    """Dollars for one request of ``tokens`` tokens at ``usd_per_mtok`` dollars per million tokens."""
    return _check_number("tokens", tokens) * _check_number("usd_per_mtok", usd_per_mtok) / 1e6


def yearly_fixed_usd(fine_tune_usd: float, retune_usd: float = 0.0, retunes_per_year: float = 0.0,
                     serving_usd_per_year: float = 0.0) -> float:
    """What owning the fine-tune costs in a year: the first run, every re-tune at a base
    upgrade, and (if you host the tuned model yourself) the GPUs that serve it."""
    return (_check_number("fine_tune_usd", fine_tune_usd)
            + _check_number("retune_usd", retune_usd) * _check_number("retunes_per_year", retunes_per_year)
            + _check_number("serving_usd_per_year", serving_usd_per_year))


def _request_usd(tokens: float, usd_per_mtok: float, cached: float, ratio: float, side: str) -> float:
    tokens = _check_number(f"tokens_{side}", tokens)
    cached = _check_number(f"cached_tokens_{side}", cached)
    if cached > tokens:
        raise ValueError(f"cached_tokens_{side}={cached!r} exceeds tokens_{side}={tokens!r}")
    return cost_per_request(tokens - cached, usd_per_mtok) + cost_per_request(cached, usd_per_mtok) * ratio


def break_even_requests_per_day(tokens_before: float, tokens_after: float,
                                usd_per_mtok_before: float, usd_per_mtok_after: float,
                                fine_tune_usd: float, retune_usd: float = 0.0,
                                retunes_per_year: float = 0.0, *,
                                cached_tokens_before: float = 0.0,
                                cached_tokens_after: float = 0.0,
                                cached_price_ratio: float = 0.5,
                                serving_usd_per_year: float = 0.0,
                                out_tokens: float = 0.0,
                                out_usd_per_mtok_before: float = 0.0,
                                out_usd_per_mtok_after: float = 0.0) -> float:
    """Requests per day at which a year of savings pays for a year of the fine-tune.

    saving per request = cost_before − cost_after; each is input tokens × input price
                         (the ``cached_tokens_*``, a static prefix the provider has
                         cached, at ``cached_price_ratio`` × price) plus
                         ``out_tokens`` × output price
    break-even         = yearly_fixed_usd / (365 · saving per request)

    The yearly cost amortises the first fine-tune over one year. The answer is as long
    before and after, so ``out_tokens`` matters only when the output price changes (a
    swap to a smaller model); left at 0, the break-even counts input alone.

    ``cached_price_ratio``: OpenAI bills cached input at 0.5× on GPT-4o and GPT-4o mini
    (automatic for prompts of 1,024 tokens or more, "Prompt Caching in the API", Oct
    2024); Anthropic bills cache reads at 0.1× the input price. A tuned model can cost
    *more* per token (hosted fine-tunes often do); if the saving is zero or negative the
    fine-tune never pays back and the answer is ``math.inf``.
    """
    ratio = _check_number("cached_price_ratio", cached_price_ratio)
    if ratio > 1:
        raise ValueError("cached_price_ratio is a fraction of the full price, so at "
                         f"most 1; got {cached_price_ratio!r}")
    out = _check_number("out_tokens", out_tokens)
    saving = (_request_usd(tokens_before, usd_per_mtok_before, cached_tokens_before,
                           ratio, "before")
              - _request_usd(tokens_after, usd_per_mtok_after, cached_tokens_after,
                             ratio, "after")
              + cost_per_request(out, _check_number("out_usd_per_mtok_before",
                                                    out_usd_per_mtok_before))
              - cost_per_request(out, _check_number("out_usd_per_mtok_after",
                                                    out_usd_per_mtok_after)))
    fixed = yearly_fixed_usd(fine_tune_usd, retune_usd, retunes_per_year,
                             serving_usd_per_year)
    if saving <= 0:
        return math.inf
    return fixed / (365 * saving)


def plot_break_even(prices: dict, tokens_after: float, own: dict, ax=None, source_line: float = 100_000):
    """Break-even requests/day against prompt tokens saved, one curve per price (dollars per
    million tokens, keyed by a label); ``own`` is passed on to ``break_even_requests_per_day``."""
    import matplotlib.pyplot as plt
    import numpy as np

    if ax is None:
        _, ax = plt.subplots(figsize=(6.5, 3.2))
    saved = np.logspace(2, 4, 60)
    for label, price in prices.items():
        ax.plot(saved, [break_even_requests_per_day(s + tokens_after, tokens_after, price, price, **own)
                        for s in saved], label=label)
    ax.axhline(source_line, color="#777777", ls="--", lw=1)
    ax.text(110, source_line * 1.15, f"the source's {source_line:,.0f} requests/day", fontsize=8, color="#555555")
    fixed = yearly_fixed_usd(own["fine_tune_usd"], own.get("retune_usd", 0), own.get("retunes_per_year", 0),
                             own.get("serving_usd_per_year", 0))
    ax.set(xscale="log", yscale="log", xlabel="prompt tokens saved per request",
           ylabel="break-even requests/day", title=f"break-even, owning the fine-tune for ${fixed:,.0f}/year")
    ax.legend()
    return ax


# --- exercise checkers -------------------------------------------------------------------

def _ok(msg: str) -> None:
    print(f"✓ {msg}")


def check_break_even(fn) -> None:
    """``fn(tokens_before, tokens_after, usd_before, usd_after, fine_tune_usd, retune_usd, retunes_per_year)``."""
    cases = [
        (4000, 500, 2.5, 2.5, 30_000, 5_000, 4),
        (3000, 300, 0.15, 0.30, 10_000, 0, 0),
        (2000, 2000, 2.5, 0.25, 50_000, 10_000, 2),
        (1000, 100, 1.0, 1.0, 0, 0, 0),
    ]
    for args in cases:
        want = break_even_requests_per_day(*args)
        got = float(fn(*args))
        assert math.isclose(got, want, rel_tol=1e-6), f"for {args}: expected {want:,.1f} requests/day, got {got:,.1f}"
    args = (1000, 1000, 1.0, 2.0, 20_000, 0, 0)
    got = fn(*args)
    assert got == math.inf, f"a tuned model that costs more per request never pays back: expected inf, got {got!r}"
    _ok("break-even matches yearly cost / (365 · saving per request), and a negative saving never pays back")


def check_swap_break_even(fn) -> None:
    """``fn(in_tokens, out_tokens, in_before, out_before, in_after, out_after,
    yearly_usd)``: the break-even of moving a request of fixed length to a cheaper model."""
    cases = [
        (1500, 300, 2.5, 10.0, 0.30, 1.20, 50_000),
        (1500, 300, 2.5, 10.0, 0.0, 0.0, 85_040),
        (1500, 0, 2.5, 10.0, 0.30, 1.20, 50_000),   # no output: input alone
        (800, 200, 1.0, 4.0, 1.0, 1.0, 20_000),     # only the output price falls
    ]
    for i, o, ib, ob, ia, oa, fixed in cases:
        want = break_even_requests_per_day(i, i, ib, ia, fixed, out_tokens=o,
                                           out_usd_per_mtok_before=ob,
                                           out_usd_per_mtok_after=oa)
        got = float(fn(i, o, ib, ob, ia, oa, fixed))
        assert math.isclose(got, want, rel_tol=1e-6), (
            f"for {(i, o, ib, ob, ia, oa, fixed)}: expected {want:,.1f} requests/day, "
            f"got {got:,.1f}")
    got = fn(1000, 100, 1.0, 2.0, 1.5, 2.0, 10_000)
    assert got == math.inf, ("a swap that makes requests dearer never pays back: "
                             f"expected inf, got {got!r}")
    _ok("the swap break-even counts input and output savings, and a dearer swap never "
        "pays back")


def check_triage(fn) -> None:
    """``fn(acc_prompt, acc_rag, target) -> 'prompt' | 'rag' | 'fine-tune'``: climb only as far as needed."""
    cases = [((0.95, 0.97, 0.9), "prompt"), ((0.5, 0.93, 0.9), "rag"), ((0.5, 0.6, 0.9), "fine-tune"),
             ((0.9, 0.95, 0.9), "prompt"), ((0.2, 0.9, 0.9), "rag"), ((0.0, 0.0, 0.5), "fine-tune")]
    for args, want in cases:
        got = fn(*args)
        assert got == want, f"acc_prompt={args[0]}, acc_rag={args[1]}, target={args[2]}: expected {want!r}, got {got!r}"
    for bad in [(1.2, 0.5, 0.9), (0.5, -0.1, 0.9), (0.5, 0.5, 0.0)]:
        try:
            fn(*bad)
        except ValueError:
            continue
        raise AssertionError(f"{bad}: accuracies must lie in [0, 1] and the target in (0, 1]; raise ValueError")
    _ok("triage picks the cheapest rung that meets the target, and refuses impossible accuracies")


# --- the picture ---------------------------------------------------------------------------

def draw_tree(ax=None):
    """Draw the decision tree with matplotlib (renders offline, no graphviz).

    The leaves are not typed in: each one is ``decide(...)`` called on that branch, so the
    picture cannot drift from the code.
    """
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(8.2, 4.2))
    ax.set_axis_off()
    ax.set_xlim(0, 10)
    ax.set_ylim(0.2, 6.3)
    fill = {"measure": "#DDDDDD", "prompt": "#C9D7EC", "rag": "#EFE6C2", "collect data": "#F3D9C4",
            "fine-tune": "#F0C8C9"}

    def box(x, y, text, color="white", bold=False):
        ax.text(x, y, text, ha="center", va="center", fontsize=8, fontweight="bold" if bold else "normal",
                bbox=dict(boxstyle="round,pad=0.35", fc=color, ec="#555555", lw=0.8))

    def arrow(x0, y0, x1, y1, label=""):
        ax.annotate("", xy=(x1, y1), xytext=(x0, y0),
                    arrowprops=dict(arrowstyle="-|>", color="#555555", lw=0.8, shrinkA=10, shrinkB=10))
        if label:
            ax.text((x0 + x1) / 2, (y0 + y1) / 2, label, ha="center", va="center", fontsize=7, color="#333333",
                    bbox=dict(boxstyle="round,pad=0.1", fc="white", ec="none", alpha=0.9))

    def leaf(x, y, rec: Recommendation):
        box(x, y, rec.action.upper(), fill[rec.action], bold=True)

    box(5.0, 5.9, "What fails on the held-out eval?", bold=True)
    level1 = [(0.8, "nothing named yet"), (2.75, "an instruction\nit can follow"), (4.7, "missing facts"),
              (6.75, "a behaviour it\nnever saw"), (8.95, "too slow or\ntoo costly")]
    for x, label in level1:
        arrow(5.0, 5.9, x, 4.6)
        box(x, 4.6, label)
    for x in (0.8, 2.75, 4.7, 6.75, 8.95):
        arrow(x, 4.6, x, 3.3)
    leaf(0.8, 3.3, decide("unmeasured"))
    leaf(2.75, 3.3, decide("instructions"))
    leaf(4.7, 3.3, decide("knowledge", freshness="daily"))
    ax.text(4.7, 2.55, "even static facts:\ntuned-in recall is\nbrittle, not reversed,\ncan erase old ones",
            ha="center", va="top", fontsize=7, color="#333333")
    box(6.75, 3.3, f"≥ {MIN_EXAMPLES} labelled\nexamples?")
    leaf(6.15, 1.5, decide("behaviour", labelled_examples=MIN_EXAMPLES))
    leaf(7.45, 0.6, decide("behaviour", labelled_examples=0))
    arrow(6.75, 3.3, 6.15, 1.5, "yes")
    arrow(6.75, 3.3, 7.45, 0.6, "no")
    box(8.95, 3.3, "volume above\nbreak-even?")
    leaf(9.45, 1.5, decide("cost", labelled_examples=MIN_EXAMPLES, requests_per_day=2, break_even_per_day=1))
    leaf(8.75, 0.6, decide("cost", requests_per_day=1, break_even_per_day=2))
    arrow(8.95, 3.3, 9.45, 1.5, "yes")
    arrow(8.95, 3.3, 8.75, 0.6, "no")
    return ax
