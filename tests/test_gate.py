"""ftlab.gate: slices scored per item, the release gate's three verdicts, the helpers."""
import math

import numpy as np
import pytest
import torch

import ftlab
from ftlab.gate import (BestCheckpoint, GateRule, SliceResult, check_gate_rule, evaluate_slices, items_needed,
                        make_slices, release_gate, simulated_judge)
from ftlab.model import GPTConfig, TinyGPT
from ftlab.tasks import Item


def _slice(name, correct, task="rev"):
    items = [Item(task, f"rev x{i}", "x") for i in range(len(correct))]
    return SliceResult(name, items, [""] * len(correct), list(map(bool, correct)))


def _results(target, off, safety):
    return {"target": _slice("target", target), "off_task": _slice("off_task", off), "safety": _slice("safety", safety)}


def test_make_slices_are_fixed_disjoint_from_training_and_complete():
    s = make_slices("rot", n_target=20, n_off_per_task=4, n_safety=10, n_replay=20, seed=0)
    assert set(s) == {"target", "off_task", "safety", "replay"}
    assert {it.task for it in s["target"]} == {"rot"} and {it.task for it in s["safety"]} == {"refuse"}
    assert "rot" not in {it.task for it in s["off_task"]} and "refuse" not in {it.task for it in s["off_task"]}
    assert sum(it.task == "rot" for it in s["replay"]) == 10 and len(s["replay"]) == 20
    assert s == make_slices("rot", n_target=20, n_off_per_task=4, n_safety=10, n_replay=20, seed=0)


def test_evaluate_slices_matches_score_per_item():
    torch.manual_seed(0)
    model = TinyGPT(GPTConfig()).eval()
    s = make_slices("rot", n_target=6, n_off_per_task=2, n_safety=4, n_replay=6, seed=0)
    res = evaluate_slices(model, s)
    ref = ftlab.score(model, "rot", items=s["target"])
    assert res["target"].outputs == ref.outputs and res["target"].correct == ref.correct
    assert len(res["off_task"].correct) == len(s["off_task"])
    assert set(res["off_task"].by_task()) == {it.task for it in s["off_task"]}


def test_gate_ships_rejects_and_abstains():
    rng = np.random.default_rng(0)
    n = 400
    base = _results(rng.random(n) < 0.2, rng.random(n) < 0.8, np.ones(n))
    good = _results(base["target"].correct[:0] + list(rng.random(n) < 0.7), base["off_task"].correct,
                    base["safety"].correct)
    v = release_gate(good, base)
    assert v.decision == "ship", v.reasons
    # off-task: 80 % of the items the base got right are now wrong
    off_bad = [c and rng.random() > 0.2 for c in base["off_task"].correct]
    v = release_gate({**good, "off_task": _slice("off_task", off_bad)}, base)
    assert v.decision == "reject" and any(r.startswith("off_task: fail") for r in v.reasons)
    # safety broken on 10 % of items
    v = release_gate({**good, "safety": _slice("safety", np.arange(n) % 10 != 0)}, base)
    assert v.decision == "reject" and v.checks["safety"][0] == "fail"
    # 40 items, a 5-point drop: the CI straddles the tolerance
    small_b = _results([0] * 40, [1] * 40, [1] * 40)
    small_c = _results([1] * 40, [1] * 38 + [0] * 2, [1] * 40)
    v = release_gate(small_c, small_b)
    assert v.decision == "undecided" and v.checks["off_task"][0] == "undecided", v.reasons


def test_gate_rule_thresholds():
    status, ci = GateRule("target", 0.05).judge([1] * 50 + [0] * 50, [0] * 100)
    assert status == "pass" and ci.low > 0.05
    assert GateRule("target", 0.05).judge([0] * 100, [0] * 100)[0] == "fail"


def test_gate_bad_input():
    base = _results([0] * 10, [1] * 10, [1] * 10)
    with pytest.raises(ValueError, match="off_task_tolerance"):
        release_gate(base, base, off_task_tolerance=5)
    with pytest.raises(ValueError, match="candidate has no 'safety'"):
        release_gate({k: v for k, v in base.items() if k != "safety"}, base)
    other = {**base, "off_task": SliceResult("off_task", [Item("add", "1+1", "2")] * 10, [""] * 10, [True] * 10)}
    with pytest.raises(ValueError, match="different items"):
        release_gate(other, base)
    with pytest.raises(ValueError, match="'target' slice"):
        release_gate({"safety": base["safety"]}, {"safety": base["safety"]})
    with pytest.raises(ValueError, match="n_target"):
        make_slices("rot", n_target=1)
    with pytest.raises(ValueError, match="off_tasks"):
        make_slices("rot", off_tasks=["rot", "add"])
    with pytest.raises(ValueError, match="unknown task"):
        make_slices("nope")
    with pytest.raises(ValueError, match="slices must be"):
        evaluate_slices(None, {})
    with pytest.raises(TypeError, match="expected ftlab.Item"):
        evaluate_slices(None, {"target": ["rot abc"]})


def test_items_needed_matches_the_textbook_numbers():
    # A 200-item slice at p = 0.5 has a 95 % half-width of 1.96 * 0.5 / sqrt(200) ≈ 0.069.
    assert abs(1.96 * 0.5 / math.sqrt(200) - 0.0693) < 1e-3
    assert items_needed(0.05, 0.5) == 385
    assert items_needed(0.0693, 0.5) in (200, 201)
    for bad in ((0, 0.5), (0.05, 0), (0.05, 2), (True, 0.5)):
        with pytest.raises(ValueError):
            items_needed(*bad)
    with pytest.raises(ValueError, match="level"):
        items_needed(0.05, 0.5, level=1.0)


def test_simulated_judge_has_its_error_rates():
    ok = [True] * 5000 + [False] * 5000
    kept = np.array(simulated_judge(ok, false_accept=0.2, false_reject=0.1, seed=0))
    assert abs(kept[5000:].mean() - 0.2) < 0.03 and abs(1 - kept[:5000].mean() - 0.1) < 0.03
    with pytest.raises(ValueError, match="false_accept"):
        simulated_judge(ok, 1.5, 0.1)


def test_best_checkpoint_keeps_the_best_weights():
    model = torch.nn.Linear(2, 1)
    values = iter([0.3, 0.7, 0.5])
    bc = BestCheckpoint(model, lambda: next(values))
    for step in range(3):
        with torch.no_grad():
            model.weight.fill_(step)
        bc()
    assert bc.best == 0.7 and bc.best_call == 2
    bc.restore()
    assert torch.all(model.weight == 1)
    with pytest.raises(ValueError, match="mode"):
        BestCheckpoint(model, lambda: 0.0, mode="up")
    with pytest.raises(ValueError, match="nothing to restore"):
        BestCheckpoint(model, lambda: 0.0).restore()


def _rule(diffs, tolerance, seed):
    ci = ftlab.gate.paired_binary_ci(diffs > 0, diffs < 0)
    return "pass" if ci.low > -tolerance else "fail" if ci.high < -tolerance else "undecided"


def _bootstrap_rule(diffs, tolerance, seed):
    ci = ftlab.paired_bootstrap(diffs, np.zeros_like(diffs), seed=seed)
    return "pass" if ci.low > -tolerance else "fail" if ci.high < -tolerance else "undecided"


def test_gate_rule_checker_accepts_a_right_rule_and_rejects_a_wrong_one():
    check_gate_rule(_rule)
    with pytest.raises(AssertionError, match="no disagreement"):
        check_gate_rule(_bootstrap_rule)  # zero width on ten identical items
    with pytest.raises(AssertionError):
        check_gate_rule(lambda d, t, s: "pass" if d.mean() > -t else "fail")  # ignores the CI
    with pytest.raises(TypeError):
        check_gate_rule(3)


def test_route_takes_each_item_from_the_model_it_is_sent_to():
    from ftlab.gate import route
    items = [Item("rev", "rev ab", "ba"), Item("add", "1+1", "2")]
    cand = {"s": SliceResult("s", items, ["ba", "3"], [True, False])}
    base = {"s": SliceResult("s", items, ["xx", "2"], [False, True])}
    r = route(cand, base, lambda it: it.task == "rev")
    assert r["s"].correct == [True, True] and r["s"].outputs == ["ba", "2"]
    with pytest.raises(TypeError, match="use_candidate"):
        route(cand, base, "rev")
    with pytest.raises(ValueError, match="different slices"):
        route(cand, {}, lambda it: True)


def test_greedy_correct_agrees_with_score():
    from ftlab.gate import greedy_correct, score_items
    torch.manual_seed(0)
    model = ftlab.load("base")
    items = [it for t in ("add", "rev", "pick", "refuse", "fact", "rot") for it in ftlab.get_task(t).items(6, seed=1)]
    fast = greedy_correct(model, items)
    ref = [c for t in ("add", "rev", "pick", "refuse", "fact", "rot")
           for c in ftlab.score(model, t, items=[it for it in items if it.task == t]).correct]
    assert fast == ref and score_items(model, items).correct == ref
    with pytest.raises(ValueError, match="empty"):
        greedy_correct(model, [])
    with pytest.raises(TypeError, match="ftlab.Item"):
        greedy_correct(model, ["rev ab"])
    with pytest.raises(TypeError, match="ftlab.Item"):
        score_items(model, ["rev ab"])


# --- paired pass/fail intervals and McNemar -------------------------------------------------
from ftlab.gate import _p21, mcnemar, paired_binary_ci  # noqa: E402


def test_zero_disagreement_does_not_pass_the_gate_on_few_items():
    # Review finding E-2: a bootstrap of identical results has zero width and "passed" any n.
    same = _results([1] * 10, [1] * 10, [1] * 10)
    v = release_gate(same, same, min_target_gain=-0.05)
    assert v.decision == "undecided" and v.checks["off_task"][0] == "undecided", v.reasons
    ci = v.checks["safety"][1]
    assert ci.low < -0.2 and ci.high > 0.2, ci
    # 100 clean safety items cannot certify a 2-point tolerance (exact bound 3.6 %) ...
    s100 = _slice("safety", [1] * 100)
    assert GateRule("safety", -0.02).judge(s100.correct, s100.correct)[0] == "undecided"
    # ... but enough clean items can (rule of three: about 3 / 0.02 = 150; the score bound needs ~190)
    s400 = [True] * 400
    assert GateRule("safety", -0.02).judge(s400, s400)[0] == "pass"


def test_paired_binary_ci_at_zero_disagreement_is_the_wilson_like_bound():
    z2 = 1.959963984540054 ** 2
    for n in (10, 100, 1000):
        ci = paired_binary_ci([True] * n, [True] * n)
        assert ci.diff == 0 and ci.gains == ci.losses == 0 and ci.n == n
        assert abs(-ci.low - z2 / (n + z2)) < 1e-6 and abs(ci.high - z2 / (n + z2)) < 1e-6, (n, ci)


def test_tango_restricted_mle_maximises_the_likelihood():
    for gains, losses, n, d in ((5, 2, 40, 0.1), (0, 3, 30, -0.2), (7, 7, 50, 0.05), (0, 0, 20, -0.1)):
        q = _p21(gains, losses, n, d)
        grid = np.linspace(max(0, -d) + 1e-9, (1 - d) / 2 - 1e-9, 200001)
        ll = (gains * np.log(grid + d + 1e-300) + losses * np.log(grid)
              + (n - gains - losses) * np.log(np.clip(1 - 2 * grid - d, 1e-300, None)))
        assert abs(q - grid[np.argmax(ll)]) < 1e-4, (gains, losses, n, d, q, grid[np.argmax(ll)])


def test_paired_binary_ci_excludes_zero_exactly_when_mcnemar_chi2_rejects():
    rng = np.random.default_rng(1)
    for _ in range(200):
        n = int(rng.integers(10, 300))
        base = rng.random(n) < rng.random()
        flip = rng.random(n) < rng.random() * 0.3
        cand = base ^ flip
        ci = paired_binary_ci(cand, base)
        g, l_ = int(np.sum(cand & ~base)), int(np.sum(~cand & base))
        chi = abs(g - l_) / math.sqrt(g + l_) if g + l_ else 0.0
        if abs(chi - 1.959964) > 1e-3:
            assert ci.excludes_zero == (chi > 1.959964), (g, l_, n, ci)
        assert ci.low <= ci.diff <= ci.high


def test_paired_binary_ci_covers_the_true_difference():
    rng = np.random.default_rng(2)
    for p_both, p_gain, p_loss, n in ((0.8, 0.02, 0.0, 60), (0.5, 0.1, 0.05, 100), (0.9, 0.0, 0.03, 200)):
        true = p_gain - p_loss
        hits = 0
        for _ in range(400):
            u = rng.random(n)
            cand = (u < p_both) | ((u >= p_both) & (u < p_both + p_gain))
            base = (u < p_both) | ((u >= p_both + p_gain) & (u < p_both + p_gain + p_loss))
            ci = paired_binary_ci(cand, base)
            hits += ci.low <= true <= ci.high
        assert hits / 400 > 0.92, (p_both, p_gain, p_loss, n, hits / 400)


def test_mcnemar_exact_values():
    cand = [1] * 10 + [0] * 2 + [1] * 50 + [0] * 38
    base = [0] * 10 + [1] * 2 + [1] * 50 + [0] * 38
    g, l_, p = mcnemar(cand, base)
    assert (g, l_) == (10, 2) and abs(p - 2 * (1 + 12 + 66) / 4096) < 1e-12
    assert mcnemar([1, 0], [1, 0]) == (0, 0, 1.0)
    assert mcnemar([1] * 6, [0] * 6)[2] == 2 / 64
    with pytest.raises(ValueError, match="same length"):
        mcnemar([1, 0], [1])
    with pytest.raises(ValueError, match="0/1"):
        paired_binary_ci([0.5, 1], [1, 1])
    with pytest.raises(ValueError, match="level"):
        paired_binary_ci([1, 0], [1, 1], level=95)


def test_gate_rule_uses_the_bootstrap_for_graded_scores():
    status, ci = GateRule("target", 0.0).judge([0.5, 0.7, 0.9, 0.8] * 10, [0.1, 0.2, 0.3, 0.2] * 10)
    assert status == "pass" and hasattr(ci, "level") and not hasattr(ci, "gains")


def test_gate_per_task_tripwire_and_required_slices():
    n_per, tasks = 20, ["add", "rev", "sort", "copy", "sub", "dashed", "pick", "lookup", "fact", "rot"]
    items = [Item(t, f"{t} {i}", "x") for t in tasks for i in range(n_per)]
    b_off = SliceResult("off_task", items, [""] * len(items), [True] * len(items))
    # one task collapses (20 of 200 items wrong): pooled drop 10 points
    c_corr = [it.task != "add" for it in items]
    c_off = SliceResult("off_task", items, [""] * len(items), c_corr)
    base = {**_results([0] * 400, [1] * 400, [1] * 400), "off_task": b_off}
    cand = {**_results([1] * 400, [1] * 400, [1] * 400), "off_task": c_off}
    v = release_gate(cand, base, off_task_tolerance=0.15)  # the pooled slice alone is undecided
    assert v.checks["off_task"][0] != "fail" and v.decision == "reject", v.reasons
    assert "off_task[add]" in v.checks and any(r.startswith("off_task[add]: fail") for r in v.reasons)
    assert release_gate(cand, base, off_task_tolerance=0.15, per_task_tolerance=None).decision != "reject"
    assert any("replay: not evaluated" in r for r in release_gate(cand, base).reasons)
    with pytest.raises(ValueError, match="safety"):
        release_gate({k: v for k, v in cand.items() if k != "safety"}, {k: v for k, v in base.items() if k != "safety"})
    with pytest.raises(ValueError, match="per_task_tolerance"):
        release_gate(cand, base, per_task_tolerance=2)


def test_greedy_correct_agrees_with_score_on_a_fine_tuned_model():
    # Review finding F-11: a fine-tune's outputs run on or collapse; the EOS condition must hold.
    from ftlab.forgetting import SECOND_LETTER
    from ftlab.gate import greedy_correct
    model = ftlab.load("base")
    ftlab.train(model, SECOND_LETTER.examples(256, seed=0, split="train"), steps=24, lr=3e-3, batch_size=16, seed=0)
    tasks = ("add", "rev", "fact", "copy", "sort")
    items = [it for t in tasks for it in ftlab.get_task(t).items(8, seed=2)] + SECOND_LETTER.items(16, seed=2)
    fast = greedy_correct(model, items, [SECOND_LETTER])
    ref = [c for t in tasks for c in ftlab.score(model, t, items=[it for it in items if it.task == t]).correct]
    ref += ftlab.score(model, SECOND_LETTER, items=[it for it in items if it.task == "second"]).correct
    assert fast == ref
    assert 0 < sum(fast) < len(fast)  # a mix of right and wrong answers, so the test can tell
