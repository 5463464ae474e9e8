"""ftlab.forgetting: replay mixing, the EWC Fisher and penalty, the KL-to-base penalty."""
import copy

import pytest
import torch
import torch.nn as nn

import ftlab
from ftlab.chat import Example, chat_prompt
from ftlab.forgetting import (EWC, KLToBase, check_ewc_penalty, ewc_penalty, fisher_diagonal, general_examples,
                              mix_replay)
from ftlab.generation import sequence_logprob
from ftlab.model import GPTConfig, TinyGPT
from ftlab.tasks import PRETRAIN_TASKS, get_task

PROMPTS = [chat_prompt(p) for p in ("rev abc", "12+3", "sort dcb", "copy xy")]


@pytest.fixture
def tiny():
    torch.manual_seed(0)
    return TinyGPT(GPTConfig(n_layer=1, d_model=32, n_head=2)).eval()


def test_general_examples_cover_every_pretraining_task():
    ex = general_examples(len(PRETRAIN_TASKS) * 3, seed=0)
    assert len(ex) == 3 * len(PRETRAIN_TASKS)
    tasks = {p.prompt for p in ex}
    assert any("pin" in p for p in tasks) and any("+" in p for p in tasks)
    assert general_examples(30, seed=0) == general_examples(30, seed=0)
    with pytest.raises(ValueError, match="n must be"):
        general_examples(0)
    with pytest.raises(ValueError, match="tasks"):
        general_examples(5, tasks="add")


def test_mix_replay_hits_the_ratio_and_keeps_all_new_data():
    new = get_task("rot").examples(80, seed=0)
    old = general_examples(200, seed=0)
    mix = mix_replay(new, old, 0.2, seed=0)
    assert len(mix) == 100 and sum(e in set(old) for e in mix) == 20
    assert set(new) <= set(mix)
    assert mix_replay(new, old, 0.0) == mix_replay(new, [], 0.0) and len(mix_replay(new, old, 0.0)) == 80
    assert len(mix_replay(new, old[:5], 0.5)) == 160  # too few old examples: they repeat
    for bad in (1.0, -0.1, "0.2", True):
        with pytest.raises(ValueError, match="ratio"):
            mix_replay(new, old, bad)
    with pytest.raises(ValueError, match="old is empty"):
        mix_replay(new, [], 0.3)
    with pytest.raises(ValueError, match="new is empty"):
        mix_replay([], old, 0.3)
    with pytest.raises(TypeError, match="ftlab.Example"):
        mix_replay(["rot abc"], old, 0.3)


def test_fisher_is_the_mean_of_squared_per_sample_gradients(tiny):
    """The parity test: the Fisher equals E[(∇ log p(y|x))²] with y sampled from the model."""
    fisher = fisher_diagonal(tiny, PROMPTS[:2], samples_per_prompt=2, max_new_tokens=6, seed=3, normalize=False)
    gens = ftlab.generate(tiny, PROMPTS[:2], max_new_tokens=6, temperature=1.0, seed=3, num_return_sequences=2)
    want = {n: torch.zeros_like(p) for n, p in tiny.named_parameters()}
    for g in gens:
        m = copy.deepcopy(tiny)
        sequence_logprob(m, [g.prompt], [g.text], add_eos=g.finished or not g.text).sum().backward()
        for n, p in m.named_parameters():
            want[n] += p.grad ** 2 / len(gens)
    for n in want:
        torch.testing.assert_close(fisher[n], want[n])
    # normalised: mean entry 1
    fn = fisher_diagonal(tiny, PROMPTS[:2], samples_per_prompt=2, max_new_tokens=6, seed=3)
    assert abs(torch.cat([f.flatten() for f in fn.values()]).mean().item() - 1) < 1e-5
    assert all(p.grad is None for p in tiny.parameters()), "the Fisher pass must leave no gradients behind"


def test_fisher_is_not_the_squared_mean_gradient(tiny):
    fisher = fisher_diagonal(tiny, PROMPTS, max_new_tokens=6, seed=0, normalize=False)
    gens = ftlab.generate(tiny, PROMPTS, max_new_tokens=6, temperature=1.0, seed=0)
    m = copy.deepcopy(tiny)
    (sequence_logprob(m, [g.prompt for g in gens], [g.text for g in gens]).mean()).backward()
    sq_mean = sum((p.grad ** 2).sum() for p in m.parameters())
    assert sum(f.sum() for f in fisher.values()) > 1.5 * sq_mean  # Jensen: E[g²] ≥ E[g]²


def test_ewc_penalty_formula_and_gradient():
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    anchor = {n: p.detach().clone() for n, p in model.named_parameters()}
    fisher = {n: torch.rand_like(p) for n, p in model.named_parameters()}
    assert ewc_penalty(model, fisher, anchor, 10.0).item() == 0
    with torch.no_grad():
        model.weight.add_(1.0)
    pen = ewc_penalty(model, fisher, anchor, 10.0)
    assert torch.isclose(pen, 0.5 * 10.0 * fisher["weight"].sum())
    pen.backward()  # d/dθ = λ F (θ − θ*)
    torch.testing.assert_close(model.weight.grad, 10.0 * fisher["weight"])
    check_ewc_penalty(lambda m, f, a, lam: ewc_penalty(m, f, a, lam))
    with pytest.raises(AssertionError, match="1/2"):
        check_ewc_penalty(lambda m, f, a, lam: 2 * ewc_penalty(m, f, a, lam))


def test_ewc_bad_input(tiny):
    anchor = {n: p.detach().clone() for n, p in tiny.named_parameters()}
    fisher = {n: torch.ones_like(p) for n, p in tiny.named_parameters()}
    with pytest.raises(ValueError, match="lam"):
        ewc_penalty(tiny, fisher, anchor, -1)
    with pytest.raises(ValueError, match="different parameters"):
        ewc_penalty(tiny, fisher, {}, 1.0)
    with pytest.raises(ValueError, match="lacks"):
        ewc_penalty(tiny, {"nope": torch.ones(1)}, {"nope": torch.ones(1)}, 1.0)
    with pytest.raises(TypeError, match="nn.Module"):
        ewc_penalty("model", fisher, anchor, 1.0)
    with pytest.raises(ValueError, match="prompts"):
        fisher_diagonal(tiny, "▶rev abc◆")
    with pytest.raises(ValueError, match="lam"):
        EWC(tiny, PROMPTS, lam="big")


def test_ewc_holds_weights_that_matter(tiny):
    """With a huge λ the fine-tuned weights stay near θ*; without it they move freely."""
    data = get_task("rot").examples(64, seed=0)
    moved = {}
    for lam in (0.0, 1e4):
        m = copy.deepcopy(tiny)
        ewc = EWC(m, PROMPTS, lam=lam, seed=0)
        ftlab.train(m, data, steps=15, lr=3e-3, batch_size=16, warmup=0, extra_loss=ewc, seed=0)
        moved[lam] = sum(((p - ewc.anchor[n]) ** 2 * ewc.fisher[n]).sum().item() for n, p in m.named_parameters())
    assert moved[1e4] < 0.2 * moved[0.0], moved


def test_kl_to_base_is_zero_at_the_base_and_positive_after_drift(tiny):
    kl = KLToBase(tiny, PROMPTS, beta=1.0, batch_size=4, max_new_tokens=6, seed=0)
    assert abs(kl(tiny).item()) < 1e-5
    drifted = copy.deepcopy(tiny)
    with torch.no_grad():
        drifted.lm_head.weight.add_(torch.randn_like(drifted.lm_head.weight))
    val = kl(drifted)
    assert val.item() > 0.01 and val.requires_grad
    val.backward()
    assert drifted.lm_head.weight.grad is not None
    with pytest.raises(ValueError, match="beta"):
        KLToBase(tiny, PROMPTS, beta=-1)
    with pytest.raises(ValueError, match="prompts"):
        KLToBase(tiny, [], beta=1.0)
    with pytest.raises(TypeError, match="nn.Module"):
        KLToBase("base", PROMPTS, beta=1.0)


def test_second_letter_task():
    from ftlab.forgetting import SECOND_LETTER
    items = SECOND_LETTER.items(20, seed=0)
    assert all(it.answer == it.prompt.split()[1][1] for it in items)
    assert SECOND_LETTER.verify(items[0], items[0].answer) and not SECOND_LETTER.in_pretraining


def test_at_matched_interpolates_at_the_first_crossing():
    from ftlab.forgetting import at_matched
    new, old = [0.0, 0.2, 0.6, 1.0], [1.0, 0.8, 0.4, 0.0]
    assert at_matched(new, old, 0.4) == pytest.approx(0.6)   # halfway from 0.2 to 0.6
    assert at_matched(new, old, 0.0) == 1.0
    assert at_matched(new, old, 1.0) == 0.0
    assert at_matched([0.0, 0.3], [1.0, 0.5], 0.5) is None   # never reached
    assert at_matched([0.0, 0.6, 0.3, 0.7], [1, 0.5, 0.4, 0.1], 0.6) == 0.5  # first crossing, not a later one
    with pytest.raises(ValueError, match="same length"):
        at_matched([0.1], [0.1, 0.2], 0.5)
    with pytest.raises(ValueError, match="level"):
        at_matched([0.1], [0.1], 1.5)


def test_read_points_give_at_matched_the_same_answer():
    # Chapters 07 and 07d score the old tasks only at read_points; the comparison must
    # not change. Random curves, non-monotone ones included, at the pages' levels.
    import numpy as np
    from ftlab.forgetting import at_matched, read_points
    rng = np.random.default_rng(0)
    levels = (0.4, 0.7, 0.9)
    for _ in range(500):
        n = int(rng.integers(1, 10))
        new = np.clip(np.cumsum(rng.normal(0.12, 0.15, n)), 0, 1).tolist()
        old = rng.random(n).tolist()
        keep = read_points(new, levels)
        assert keep[0] == 0 and keep[-1] == n - 1 and keep == sorted(set(keep))
        for lv in levels:
            assert at_matched([new[i] for i in keep], [old[i] for i in keep], lv) == at_matched(new, old, lv)
    assert read_points([0.0, 0.1, 0.5, 0.8, 0.95, 1.0, 1.0], levels) == [0, 1, 2, 3, 4, 6]
    with pytest.raises(ValueError, match="empty"):
        read_points([], levels)
    with pytest.raises(ValueError, match="level"):
        read_points([0.5], (1.5,))


def test_interpolate_is_wise_ft():
    from ftlab.forgetting import interpolate
    torch.manual_seed(0)
    a, b = TinyGPT(GPTConfig(n_layer=1, d_model=32, n_head=2)), TinyGPT(GPTConfig(n_layer=1, d_model=32, n_head=2))
    for alpha in (0.0, 0.3, 1.0):
        m = interpolate(a, b, alpha)
        for (n, pa), pb, pm in zip(a.named_parameters(), b.parameters(), m.parameters()):
            assert torch.allclose(pm, (1 - alpha) * pa + alpha * pb, atol=1e-6), (n, alpha)
    assert all(torch.equal(p, q) for p, q in zip(interpolate(a, b, 0.0).parameters(), a.parameters()))
    out = copy.deepcopy(a)
    assert interpolate(a, b, 0.5, out=out) is out
    with pytest.raises(ValueError, match="alpha"):
        interpolate(a, b, 1.5)
    with pytest.raises(ValueError, match="different parameters"):
        interpolate(a, TinyGPT(GPTConfig(n_layer=2, d_model=32, n_head=2)), 0.5)
    with pytest.raises(TypeError, match="nn.Module"):
        interpolate(a, "b", 0.5)
