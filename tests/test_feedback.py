"""ftlab.feedback: simulated user logs and the preference pairs built from them."""
import random
from collections import Counter

import numpy as np
import pytest

from ftlab.feedback import (ACTIONS, LogEvent, PreferencePair, UserModel, edit_distance, logs_to_pairs,
                            normalize_text, pair_is_correct, pair_precision, simulate_logs, trivial_edit)
from ftlab.tasks import Item, get_task


def test_edit_distance_matches_known_values():
    for a, b, d in [("", "", 0), ("abc", "", 3), ("kitten", "sitting", 3), ("flaw", "lawn", 2),
                    ("46", "47", 1), ("abc", "abc", 0), ("ab", "ba", 2)]:
        assert edit_distance(a, b) == d == edit_distance(b, a)


def test_normalize_removes_only_cosmetics():
    rng = random.Random(0)
    for s in ["46", "cba", "sorry, i can't share that.", "⟨7+5=12⟩132"]:
        for _ in range(10):
            assert normalize_text(trivial_edit(s, rng)) == normalize_text(s)
    assert normalize_text("46") != normalize_text("47")


def test_logs_follow_the_user_model_and_are_reproducible():
    items = get_task("add").items(400, seed=0)
    logs = simulate_logs(items, p_correct=0.5, seed=3)
    assert logs == simulate_logs(items, p_correct=0.5, seed=3)
    assert logs != simulate_logs(items, p_correct=0.5, seed=4)
    assert len(logs) == 400 and {e.action for e in logs} <= set(ACTIONS)
    right = [e for e in logs if e.correct]
    wrong = [e for e in logs if not e.correct]
    assert 150 < len(right) < 250
    assert all(e.action != "edit" for e in right), "nobody rewrites a right answer into the same answer"
    for e in wrong:
        if e.action == "edit":
            it = next(i for i in items if i.prompt == e.prompt)
            assert e.final == it.answer and get_task("add").verify(it, e.final)
    c = Counter(e.action for e in right)
    assert c["accept"] / len(right) > 0.6


def test_mistaken_edits():
    items = get_task("add").items(400, seed=0)
    users = UserModel(good_accept=0.65, good_edit=0.10, bad_edit_still_wrong=0.3)
    logs = simulate_logs(items, p_correct=0.5, users=users, seed=3)
    task = get_task("add")
    by_prompt = {i.prompt: i for i in items}
    edits = [e for e in logs if e.action == "edit"]
    good_edits = [e for e in edits if e.correct]
    bad_edits = [e for e in edits if not e.correct]
    # a right answer edited by a mistaken user ends wrong, and differs from what was shown
    assert good_edits and all(not task.verify(by_prompt[e.prompt], e.final) for e in good_edits)
    assert all(e.final != e.output for e in edits)
    still_wrong = np.mean([not task.verify(by_prompt[e.prompt], e.final) for e in bad_edits])
    assert 0.15 < still_wrong < 0.45, still_wrong
    # the edit pairs are no longer all right, but normalising still removes the cosmetic noise
    clean = pair_precision(logs_to_pairs(logs, use_accept_reject=False), items)
    raw = pair_precision(logs_to_pairs(logs, normalize=False, use_accept_reject=False), items)
    assert 0.5 < clean < 0.95 and clean > raw + 0.1, (clean, raw)


def test_given_outputs_are_used_in_order():
    items = get_task("rev").items(3, seed=0)
    outs = [it.answer for it in items for _ in range(2)]
    outs[1] = "zzz"
    logs = simulate_logs(items, outputs=outs, samples_per_prompt=2, seed=0)
    assert [e.output for e in logs] == outs
    assert [e.correct for e in logs] == [True, False, True, True, True, True]


def test_filters():
    items = get_task("add").items(300, seed=0)
    logs = simulate_logs(items, samples_per_prompt=2, seed=0)
    raw = logs_to_pairs(logs, normalize=False, use_accept_reject=False)
    clean = logs_to_pairs(logs, use_accept_reject=False)
    n_edit = sum(e.action == "edit" for e in logs)
    n_triv = sum(e.action == "trivial_edit" for e in logs)
    assert len(raw) == n_edit + n_triv and len(clean) == n_edit
    assert pair_precision(clean, items) == 1.0
    assert pair_precision(raw, items) < 0.8
    ar = logs_to_pairs(logs, use_edits=False)
    assert ar and all(p.source == "accept_reject" for p in ar)
    assert all(p.chosen != p.rejected for p in ar)
    # a ratio filter also throws away real one-digit fixes of long answers
    steps = get_task("add_steps").items(100, seed=0)
    slogs = simulate_logs(steps, seed=0)
    kept = logs_to_pairs(slogs, min_ratio=0.3, use_accept_reject=False)
    assert len(logs_to_pairs(slogs, use_accept_reject=False)) > 10 and kept == []


def test_pair_api():
    p = PreferencePair("rev ab", "ba", "ab", "rev", "edit")
    assert p.chat_prompt == "▶rev ab◆"
    it = Item("rev", "rev ab", "ba")
    assert pair_is_correct(p, it) and not pair_is_correct(PreferencePair("rev ab", "ab", "ba", "rev"), it)


def test_bad_input():
    items = get_task("add").items(5, seed=0)
    with pytest.raises(ValueError, match="items is empty"):
        simulate_logs([])
    with pytest.raises(TypeError, match="ftlab.Item"):
        simulate_logs(["1+2"])
    with pytest.raises(ValueError, match="p_correct"):
        simulate_logs(items, p_correct=1.5)
    with pytest.raises(ValueError, match="samples_per_prompt"):
        simulate_logs(items, samples_per_prompt=0)
    with pytest.raises(ValueError, match="outputs must hold"):
        simulate_logs(items, outputs=["1"])
    with pytest.raises(TypeError, match="UserModel"):
        simulate_logs(items, users={"good_accept": 1})
    with pytest.raises(ValueError, match="sum to 1"):
        UserModel(good_accept=0.9)
    with pytest.raises(ValueError, match="bad_edit"):
        UserModel(bad_edit=-0.1)
    with pytest.raises(ValueError, match="min_distance"):
        logs_to_pairs([], min_distance=-1)
    with pytest.raises(ValueError, match="min_ratio"):
        logs_to_pairs([], min_ratio=2)
    with pytest.raises(ValueError, match="bad_edit_still_wrong"):
        UserModel(bad_edit_still_wrong=1.5)
    with pytest.raises(ValueError, match="sum to 1"):
        UserModel(good_edit=0.1)
    with pytest.raises(TypeError, match="LogEvent"):
        logs_to_pairs([("a", "b")])
    with pytest.raises(ValueError, match="unknown action"):
        logs_to_pairs([LogEvent("a", "b", "click", None, "add", True)])
    with pytest.raises(TypeError, match="two str"):
        edit_distance("a", 1)
    with pytest.raises(ValueError, match="not the pair's prompt"):
        pair_is_correct(PreferencePair("x", "a", "b", "rev"), Item("rev", "rev ab", "ba"))
    with pytest.raises(ValueError, match="pairs is empty"):
        pair_precision([], items)


def test_edit_distance_checker():
    from ftlab.feedback import check_edit_distance
    check_edit_distance(edit_distance)
    with pytest.raises(AssertionError):
        check_edit_distance(lambda a, b: sum(x != y for x, y in zip(a, b)) + abs(len(a) - len(b)))
