"""ftlab.decide: the decision tree, the break-even, the checkers, and their refusals of bad input."""
import math

import matplotlib
import pytest

import ftlab
from ftlab.decide import (ACTIONS, FAILURES, MIN_EXAMPLES, Recommendation, break_even_requests_per_day,
                          check_break_even, check_swap_break_even, check_triage, cost_per_request, decide, draw_tree, plot_break_even,
                          with_retrieved_context, yearly_fixed_usd)
from ftlab.tokenizer import CONTEXT

matplotlib.use("Agg")


def test_each_failure_gets_its_rung():
    assert decide("unmeasured").action == "measure"
    assert decide("instructions", labelled_examples=10_000).action == "prompt"  # data does not make FT right
    for fresh in ("static", "monthly", "daily"):
        rec = decide("knowledge", labelled_examples=10_000, freshness=fresh)
        assert rec.action == "rag" and fresh in rec.reason
    assert decide("behaviour", labelled_examples=MIN_EXAMPLES - 1).action == "collect data"
    assert decide("behaviour", labelled_examples=MIN_EXAMPLES).action == "fine-tune"


def test_cost_depends_on_volume_and_data():
    assert decide("cost", 5000, requests_per_day=1e4, break_even_per_day=5e4).action == "prompt"
    assert decide("cost", 5000, requests_per_day=1e5, break_even_per_day=5e4).action == "fine-tune"
    assert decide("cost", 10, requests_per_day=1e5, break_even_per_day=5e4).action == "collect data"
    # Without a break-even (the default, infinity) a cost failure never justifies a fine-tune.
    assert decide("cost", 5000, requests_per_day=1e9).action == "prompt"


def test_every_recommendation_has_a_known_action_and_a_reason():
    for failure in FAILURES:
        rec = decide(failure, labelled_examples=500, requests_per_day=1e6, break_even_per_day=1e5)
        assert isinstance(rec, Recommendation) and rec.action in ACTIONS and len(rec.reason) > 20
        assert str(rec).startswith(rec.action + ": ")


def test_break_even_formula():
    # 3,500 tokens saved at $2.50/M is $0.00875 a request; $50k a year of fine-tune ownership.
    be = break_even_requests_per_day(4000, 500, 2.5, 2.5, 30_000, 5_000, 4)
    assert be == pytest.approx(50_000 / (365 * 3500 * 2.5e-6))
    assert yearly_fixed_usd(30_000, 5_000, 4) == 50_000
    assert cost_per_request(1e6, 2.5) == pytest.approx(2.5)
    # Doubling the saving halves the break-even; a fine-tune that costs more per request never pays.
    assert break_even_requests_per_day(7500, 500, 2.5, 2.5, 50_000) == pytest.approx(be / 2)
    assert break_even_requests_per_day(1000, 1000, 1.0, 2.0, 1_000) == math.inf
    assert break_even_requests_per_day(1000, 100, 1.0, 1.0, 0) == 0


def test_prompt_caching_and_serving_raise_the_break_even():
    plain = break_even_requests_per_day(4000, 500, 2.5, 2.5, 30_000, 5_000, 4)
    # 3,500 of the 4,000 tokens are a static prefix billed at half price: the saving per
    # request is (500 + 3,500 / 2 - 500) tokens instead of 3,500, so the break-even doubles.
    cached = break_even_requests_per_day(4000, 500, 2.5, 2.5, 30_000, 5_000, 4, cached_tokens_before=3500)
    assert cached == pytest.approx(2 * plain)
    # At Anthropic's 0.1x cache-read price it is 10x.
    tenth = break_even_requests_per_day(4000, 500, 2.5, 2.5, 30_000, 5_000, 4, cached_tokens_before=3500,
                                        cached_price_ratio=0.1)
    assert tenth == pytest.approx(10 * plain)
    # Serving a self-hosted model 24/7 is a yearly cost like the re-tunes.
    served = break_even_requests_per_day(4000, 500, 2.5, 2.5, 30_000, 5_000, 4, serving_usd_per_year=50_000)
    assert served == pytest.approx(2 * plain)
    assert yearly_fixed_usd(30_000, 5_000, 4, serving_usd_per_year=17_520) == 67_520


def test_break_even_agrees_with_a_year_of_bills():
    # Just below the break-even, keeping the long prompt is cheaper; just above, tuning is.
    be = break_even_requests_per_day(4000, 500, 2.5, 2.5, 30_000, 5_000, 4)

    def yearly_bill(per_day, tokens, usd_per_mtok, fixed=0.0):
        return fixed + 365 * per_day * tokens * usd_per_mtok / 1e6

    for f, keep_cheaper in ((0.9, True), (1.1, False)):
        keep = yearly_bill(f * be, 4000, 2.5)
        tune = yearly_bill(f * be, 500, 2.5, fixed=30_000 + 4 * 5_000)
        assert (keep < tune) == keep_cheaper, (f, keep, tune)


def test_output_tokens_count_only_when_their_price_changes():
    base = break_even_requests_per_day(1500, 1500, 2.5, 0.30, 50_000)
    same = break_even_requests_per_day(1500, 1500, 2.5, 0.30, 50_000, out_tokens=300,
                                       out_usd_per_mtok_before=10.0,
                                       out_usd_per_mtok_after=10.0)
    assert same == pytest.approx(base)
    swap = break_even_requests_per_day(1500, 1500, 2.5, 0.30, 50_000, out_tokens=300,
                                       out_usd_per_mtok_before=10.0,
                                       out_usd_per_mtok_after=1.20)
    assert swap == pytest.approx(50_000 / (365 * (1500 * 2.2 + 300 * 8.8) / 1e6))


def test_swap_checker_accepts_the_reference_and_rejects_input_only():
    def ref(i, o, ib, ob, ia, oa, fixed):
        return break_even_requests_per_day(i, i, ib, ia, fixed, out_tokens=o,
                                           out_usd_per_mtok_before=ob,
                                           out_usd_per_mtok_after=oa)
    check_swap_break_even(ref)
    with pytest.raises(AssertionError):
        check_swap_break_even(lambda i, o, ib, ob, ia, oa, f: ref(i, 0, ib, ob, ia, oa, f))


def test_break_even_plot_draws_offline():
    ax = plot_break_even({"$2.50/M": 2.5}, 500, dict(fine_tune_usd=30_000))
    assert len(ax.lines) == 2 and ax.get_xscale() == "log"


def test_checkers_accept_the_reference_and_reject_wrong_answers():
    check_break_even(break_even_requests_per_day)
    with pytest.raises(AssertionError):
        check_break_even(lambda *a: break_even_requests_per_day(*a) * 30)  # monthly instead of yearly
    with pytest.raises(AssertionError):
        check_break_even(lambda tb, ta, pb, pa, f, r, k: (f + r * k) / (365 * max((tb * pb - ta * pa) / 1e6, 1e-12)))

    def triage(acc_prompt, acc_rag, target):
        if not (0 <= acc_prompt <= 1 and 0 <= acc_rag <= 1 and 0 < target <= 1):
            raise ValueError("bad accuracy")
        return "prompt" if acc_prompt >= target else "rag" if acc_rag >= target else "fine-tune"

    check_triage(triage)
    with pytest.raises(AssertionError):
        check_triage(lambda p, r, t: "rag" if r >= t else "prompt" if p >= t else "fine-tune")  # skips a rung
    with pytest.raises(AssertionError):
        check_triage(lambda p, r, t: "prompt" if p >= t else "rag" if r >= t else "fine-tune")  # no validation


def test_tree_figure_draws_offline():
    ax = draw_tree()
    labels = {t.get_text() for t in ax.texts}
    assert {"MEASURE", "PROMPT", "RAG", "FINE-TUNE", "COLLECT DATA"} <= labels


def test_retrieved_context_holds_the_fact_among_distractors():
    items = ftlab.get_task("newfact_reverse").items(48, seed=0)
    prompts = with_retrieved_context(items, ftlab.NEW_FACTS, n_distractors=2, seed=0)
    assert prompts == with_retrieved_context(items, ftlab.NEW_FACTS, n_distractors=2, seed=0)  # seeded
    for it, p in zip(items, prompts):
        block = p.split(CONTEXT)[1]
        facts = [tuple(f.split(":")) for f in block.split(";")]
        assert len(facts) == 3 and (it.meta["name"], it.meta["city"]) in facts
        assert p.endswith(ftlab.chat_prompt(it.prompt)[1:]) and len(p) <= ftlab.MAX_LEN
    # The fact is not always in the same slot, or position alone would answer.
    slots = {[f.split(":")[0] for f in p.split(CONTEXT)[1].split(";")].index(it.meta["name"])
             for it, p in zip(items, prompts)}
    assert slots == {0, 1, 2}


@pytest.mark.parametrize("call, exc, match", [
    (lambda: with_retrieved_context(ftlab.get_task("fact").items(2), ftlab.NEW_FACTS, n_distractors=48),
     ValueError, "n_distractors.*48"),
    (lambda: with_retrieved_context(ftlab.get_task("fact").items(2), ftlab.NEW_FACTS, n_distractors=1.5),
     ValueError, "1.5"),
    (lambda: with_retrieved_context(ftlab.get_task("add").items(2), ftlab.NEW_FACTS), ValueError, "not a fact item"),
    (lambda: decide("hallucination"), ValueError, "'hallucination'"),
    (lambda: decide(None), ValueError, "None"),
    (lambda: decide("behaviour", labelled_examples=-5), ValueError, "labelled_examples.*-5"),
    (lambda: decide("behaviour", labelled_examples=500.0), TypeError, "500.0"),
    (lambda: decide("behaviour", labelled_examples=True), TypeError, "True"),
    (lambda: decide("cost", requests_per_day=-1), ValueError, "requests_per_day.*-1"),
    (lambda: decide("cost", requests_per_day="100k"), TypeError, "'100k'"),
    (lambda: decide("knowledge", freshness="weekly"), ValueError, "'weekly'"),
    (lambda: decide("cost", break_even_per_day=0), ValueError, "break_even_per_day.*0"),
    (lambda: decide("cost", break_even_per_day=float("nan")), ValueError, "nan"),
    (lambda: cost_per_request(-10, 2.5), ValueError, "tokens.*-10"),
    (lambda: cost_per_request(100, float("inf")), ValueError, "usd_per_mtok.*inf"),
    (lambda: yearly_fixed_usd("30k"), TypeError, "'30k'"),
    (lambda: break_even_requests_per_day(4000, 500, 2.5, 2.5, 30_000, retunes_per_year=-1),
     ValueError, "retunes_per_year.*-1"),
    (lambda: break_even_requests_per_day(4000, 500, 2.5, 2.5, 30_000, out_tokens=-3),
     ValueError, "out_tokens.*-3"),
    (lambda: break_even_requests_per_day(4000, 500, 2.5, 2.5, 30_000,
                                         out_usd_per_mtok_after="1.2"),
     TypeError, "out_usd_per_mtok_after"),
    (lambda: break_even_requests_per_day(4000, 500, 2.5, 2.5, 30_000, cached_tokens_before=5000),
     ValueError, "cached_tokens_before=5000"),
    (lambda: break_even_requests_per_day(4000, 500, 2.5, 2.5, 30_000, cached_price_ratio=2),
     ValueError, "cached_price_ratio.*2"),
    (lambda: yearly_fixed_usd(30_000, serving_usd_per_year=-1), ValueError, "serving_usd_per_year.*-1"),
])
def test_bad_input_raises_naming_the_value(call, exc, match):
    with pytest.raises(exc, match=match):
        call()
