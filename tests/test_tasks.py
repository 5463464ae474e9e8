import pytest

from ftlab.tasks import (KNOWN_FACTS, NEW_FACTS, PRETRAIN_TASKS, REFUSAL, TASKS, Item, _split_of, get_task,
                         worked_steps)


def test_items_are_seeded_distinct_and_split():
    t = get_task("rev")
    a, b = t.items(50, seed=1), t.items(50, seed=1)
    assert a == b and len({i.prompt for i in a}) == 50
    assert all(_split_of(i.prompt) == "test" for i in a)
    assert all(_split_of(i.prompt) == "train" for i in t.items(50, seed=1, split="train"))


@pytest.mark.parametrize("name", list(TASKS))
def test_every_task_verifies_its_own_answers(name):
    t = TASKS[name]
    items = t.items(min(20, len(t.finite)) if t.finite else 20, seed=0, split="all")
    assert all(t.verify(it, it.answer) for it in items)
    assert not any(t.verify(it, it.answer + "x") for it in items)


def test_worked_steps_and_answer_only_verifier():
    assert worked_steps(47, 85) == "⟨7+5=12,4+8+1=13⟩132"
    t = get_task("add_steps")
    it = Item("add_steps", "show 47+85", worked_steps(47, 85))
    assert t.verify(it, "⟨wrong steps⟩132") and not t.verify(it, "⟨7+5=12,4+8+1=13⟩131")


def test_facts_are_one_to_one_and_new_facts_are_new():
    for table in (KNOWN_FACTS, NEW_FACTS):
        assert len({n for n, _ in table}) == len({c for _, c in table}) == len(table) == 48
    assert not {n for n, _ in KNOWN_FACTS} & {n for n, _ in NEW_FACTS}


def test_pick_accepts_any_listed_letter():
    t = get_task("pick")
    it = t.items(1, seed=0)[0]
    assert all(t.verify(it, ch) for ch in it.meta["valid"]) and not t.verify(it, "ab")


def test_refusal_and_pretraining_lists():
    assert get_task("refuse").items(3)[0].answer == REFUSAL
    assert "rot" not in PRETRAIN_TASKS and "lookup" in PRETRAIN_TASKS


@pytest.mark.parametrize("call,match", [
    (lambda: get_task("nope"), "'nope'"),
    (lambda: get_task("rev").items(0), "got 0"),
    (lambda: get_task("rev").items(3, split="dev"), "'dev'"),
    (lambda: get_task("fact_direct").items(49), "n=49"),
    (lambda: get_task("rev").verify(get_task("add").items(1)[0], "1"), "'add'"),
])
def test_bad_input_is_named(call, match):
    with pytest.raises(ValueError, match=match):
        call()
