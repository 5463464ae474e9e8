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
    ci = ftlab.paired_bootstrap(diffs, np.zeros_like(diffs), seed=seed)
    return "pass" if ci.low > -tolerance else "fail" if ci.high < -tolerance else "undecided"


def test_gate_rule_checker_accepts_a_right_rule_and_rejects_a_wrong_one():
    check_gate_rule(_rule)
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
