"""ftlab.sft: majority vote, sampled evaluation and rejection sampling."""
import numpy as np
import pytest
import torch

import ftlab
from ftlab.chat import Example
from ftlab.evaluate import pass_at_k
from ftlab.sft import majority_vote, rejection_sample, sample_eval
from ftlab.tasks import Item, get_task


def test_majority_vote():
    assert majority_vote(["⟨a⟩12", "⟨b⟩13", "⟨c⟩12"]) == "12"
    assert majority_vote(["7", "8"]) == "7", "ties go to the first answer seen"
    assert majority_vote(["ab", "AB", "ab "], key=lambda s: s.strip().lower()) == "ab"
    with pytest.raises(ValueError, match="empty"):
        majority_vote([])
    with pytest.raises(TypeError, match="single str"):
        majority_vote("12")
    with pytest.raises(TypeError, match="must be a str"):
        majority_vote(["1", 2])


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return ftlab.TinyGPT(ftlab.GPTConfig(n_layer=1, d_model=32, n_head=2)).eval()


def test_sample_eval_and_rejection_sample(model):
    items = get_task("add").items(6, seed=0)
    ev = sample_eval(model, items, k=4, seed=1)
    assert ev.correct.shape == (6, 4) and ev.vote_correct.shape == (6,)
    assert len(ev.outputs) == 6 and all(len(r) == 4 for r in ev.outputs)
    assert 0 <= ev.pass1 <= ev.pass_at(4) <= 1
    # everything accepted by a permissive verifier, one distinct sample per item at most
    exs, _ = rejection_sample(model, items, k=4, seed=1, verify=lambda it, o: True)
    assert len(exs) == 6 and all(isinstance(e, Example) and e.prompt.startswith("▶") for e in exs)
    exs, _ = rejection_sample(model, items, k=4, seed=1, verify=lambda it, o: True, max_per_item=4)
    assert 6 <= len(exs) <= 24
    exs, _ = rejection_sample(model, items, k=4, seed=1, verify=lambda it, o: False)
    assert exs == []


def test_vote_and_pass_at_k_parity():
    """The vote is right iff the plurality final answer is right; pass@k is the Codex formula."""
    it = Item("add_steps", "show 10+12", "⟨0+2=2,1+1=2⟩22")
    t = get_task("add_steps")
    assert t.verify(it, "⟩" + majority_vote(["⟨x⟩22", "⟨y⟩21", "⟨z⟩22"]))
    from ftlab.sft import SampleEval
    c = np.array([[True, False, False, False], [False] * 4])
    ev = SampleEval([it, it], [["a"] * 4] * 2, c, np.array([False, False]))
    assert ev.pass_at(2) == pytest.approx((pass_at_k(4, 1, 2) + 0) / 2)
    assert ev.pass1 == pytest.approx(1 / 8)


def test_bad_input(model):
    items = get_task("add").items(2, seed=0)
    with pytest.raises(ValueError, match="items is empty"):
        sample_eval(model, [])
    with pytest.raises(TypeError, match="single"):
        sample_eval(model, items[0])
    with pytest.raises(TypeError, match="ftlab.Item"):
        sample_eval(model, ["1+2"])
    with pytest.raises(ValueError, match="k must be"):
        sample_eval(model, items, k=0)
    with pytest.raises(ValueError, match="temperature"):
        sample_eval(model, items, temperature=0)
    with pytest.raises(ValueError, match="max_per_item"):
        rejection_sample(model, items, max_per_item=0)
    with pytest.raises(TypeError, match="verify"):
        rejection_sample(model, items, verify="yes")


def test_checkers_accept_a_right_answer_and_reject_a_wrong_one():
    from ftlab.sft import check_keep_verified, check_majority_vote
    check_majority_vote(majority_vote)
    with pytest.raises(AssertionError):
        check_majority_vote(lambda outs: outs[0].split("⟩")[-1])
    t = get_task("add3_steps")

    def keep(item, samples, max_keep):
        out = []
        for s in dict.fromkeys(samples):
            if len(out) < max_keep and t.verify(item, s):
                out.append(s)
        return out
    check_keep_verified(keep)
    with pytest.raises(AssertionError):
        check_keep_verified(lambda item, samples, k: [s for s in samples if t.verify(item, s)][:k])
