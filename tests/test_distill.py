"""ftlab.distill: the KL formulas against hand-computed cases, T² scaling, masking, the
GKD interpolation, the teacher-labelling helper, the fallback router and bad input."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ftlab.chat import chat_prompt
from ftlab.distill import (check_kd_loss, check_threshold, cheapest_route, confidence, distillation_loss,
                           fallback_curve, generalized_jsd, kd_grad_limit, kd_grad_norms, kd_loss, reverse_kl,
                           route, soft_targets, teacher_label, train_kd, weight_bytes)
from ftlab.generation import Generation
from ftlab.model import GPTConfig, TinyGPT
from ftlab.tasks import get_task


def kl(p, q):
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q) if pi > 0)


def test_kd_loss_matches_hand_computed_kl():
    # Logits log(p) give softmax p exactly, so at T=1 the loss is KL(p ‖ q) by hand.
    p, q = [0.7, 0.2, 0.1], [0.4, 0.4, 0.2]
    t, s = torch.tensor([p]).log(), torch.tensor([q]).log()
    assert float(kd_loss(s, t, T=1.0)) == pytest.approx(kl(p, q), abs=1e-6)
    assert float(reverse_kl(s, t, T=1.0)) == pytest.approx(kl(q, p), abs=1e-6)
    assert kl(p, q) != pytest.approx(kl(q, p), abs=1e-3)  # the two directions really differ here


def test_kd_loss_temperature_and_t_squared():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(4, 9, generator=g), torch.randn(4, 9, generator=g)
    for T in (0.5, 2.0, 4.0):
        ps, pt = F.softmax(s / T, -1), F.softmax(t / T, -1)
        want = T * T * (pt * (pt.log() - ps.log())).sum(-1).mean()
        assert float(kd_loss(s, t, T=T)) == pytest.approx(float(want), rel=1e-5)
    # equals PyTorch's kl_div with batchmean on the flattened rows, times T²
    ref = F.kl_div(F.log_softmax(s / 2, -1), F.log_softmax(t / 2, -1), reduction="batchmean", log_target=True) * 4
    assert float(kd_loss(s, t, T=2.0)) == pytest.approx(float(ref), rel=1e-5)
    assert float(kd_loss(t, t, T=3.0)) == pytest.approx(0.0, abs=1e-6)


def test_kd_loss_flattens_before_averaging_and_masks():
    g = torch.Generator().manual_seed(1)
    s, t = torch.randn(2, 5, 6, generator=g), torch.randn(2, 5, 6, generator=g)
    mask = torch.tensor([[1, 1, 0, 0, 0], [1, 1, 1, 1, 0]])
    rows = [(b, i) for b in range(2) for i in range(5) if mask[b, i]]
    want = np.mean([float(kd_loss(s[b, i:i + 1], t[b, i:i + 1], T=2.0)) for b, i in rows])
    assert float(kd_loss(s, t, T=2.0, mask=mask)) == pytest.approx(want, rel=1e-5)
    # Masked-out positions do not matter at all.
    s2 = s.clone()
    s2[0, 3] += 100.0
    assert float(kd_loss(s2, t, T=2.0, mask=mask)) == pytest.approx(float(kd_loss(s, t, T=2.0, mask=mask)))
    # Unmasked: the mean over all B·T positions, not a sum divided by B.
    all_rows = np.mean([float(kd_loss(s[b, i:i + 1], t[b, i:i + 1])) for b in range(2) for i in range(5)])
    assert float(kd_loss(s, t)) == pytest.approx(all_rows, rel=1e-5)


def test_teacher_gets_no_gradient():
    s = torch.randn(3, 5, requires_grad=True)
    t = torch.randn(3, 5, requires_grad=True)
    kd_loss(s, t).backward()
    assert s.grad is not None and t.grad is None


def test_generalized_jsd_limits_and_symmetry():
    g = torch.Generator().manual_seed(2)
    s, t = torch.randn(6, 8, generator=g), torch.randn(6, 8, generator=g)
    assert float(generalized_jsd(s, t, beta=0.0)) == pytest.approx(float(kd_loss(s, t, T=1.0)), rel=1e-5)
    assert float(generalized_jsd(s, t, beta=1.0)) == pytest.approx(float(reverse_kl(s, t)), rel=1e-5)
    # Near the ends, divided by beta (or 1 - beta), it approaches the two KLs (GKD's limits);
    # beta=0.5 is the symmetric JSD, bounded by log 2.
    assert float(generalized_jsd(s, t, beta=1e-4)) / 1e-4 == pytest.approx(float(kd_loss(s, t, T=1.0)), rel=1e-2)
    assert float(generalized_jsd(s, t, beta=1 - 1e-4)) / 1e-4 == pytest.approx(float(reverse_kl(s, t)), rel=1e-2)
    mid = float(generalized_jsd(s, t, beta=0.5))
    assert mid == pytest.approx(float(generalized_jsd(t, s, beta=0.5)), rel=1e-5)
    assert 0 < mid <= math.log(2)
    # by hand for one pair
    p, q = np.array([0.7, 0.2, 0.1]), np.array([0.4, 0.4, 0.2])
    m = 0.5 * (p + q)
    want = 0.5 * kl(q, m) + 0.5 * kl(p, m)
    got = generalized_jsd(torch.tensor(q[None]).log(), torch.tensor(p[None]).log(), beta=0.5)
    assert float(got) == pytest.approx(want, abs=1e-6)
    # and at an asymmetric beta, where the weights' order matters: teacher p, student q
    m = 0.2 * p + 0.8 * q
    want = 0.2 * kl(p, m) + 0.8 * kl(q, m)
    got = generalized_jsd(torch.tensor(q[None]).log(), torch.tensor(p[None]).log(), beta=0.2)
    assert float(got) == pytest.approx(want, abs=1e-6)


def test_distillation_loss_mixes_hard_and_soft():
    g = torch.Generator().manual_seed(3)
    s, t = torch.randn(2, 4, 6, generator=g), torch.randn(2, 4, 6, generator=g)
    labels = torch.randint(0, 6, (2, 4), generator=g)
    ce = float(F.cross_entropy(s.reshape(-1, 6), labels.reshape(-1)))
    assert float(distillation_loss(s, t, labels, alpha=0.0)) == pytest.approx(ce, rel=1e-5)
    assert float(distillation_loss(s, t, labels, T=3.0, alpha=1.0)) == pytest.approx(float(kd_loss(s, t, 3.0)),
                                                                                      rel=1e-5)
    mix = 0.3 * float(kd_loss(s, t, 2.0)) + 0.7 * ce
    assert float(distillation_loss(s, t, labels, T=2.0, alpha=0.3)) == pytest.approx(mix, rel=1e-5)


def test_t_squared_keeps_gradient_scale():
    g = torch.Generator().manual_seed(4)
    s, t = torch.randn(50, 20, generator=g), torch.randn(50, 20, generator=g)
    norms = kd_grad_norms(s, t, [1, 2, 4, 8, 32])
    raw = [norms[T][0] for T in (1, 2, 4, 8, 32)]
    scaled = [norms[T][1] for T in (1, 2, 4, 8, 32)]
    assert all(a > b for a, b in zip(raw, raw[1:])), raw            # the raw gradient shrinks with T
    limit = kd_grad_limit(s, t)
    assert scaled[-1] == pytest.approx(limit, rel=0.02), (scaled, limit)
    assert abs(scaled[-1] - limit) < abs(scaled[0] - limit)


def test_soft_targets_flatten_with_temperature():
    logits = torch.tensor([4.0, 1.0, 0.0])
    p1, p4 = soft_targets(logits, 1.0), soft_targets(logits, 4.0)
    assert float(p1.sum()) == pytest.approx(1.0) and float(p4.max()) < float(p1.max())


@pytest.mark.parametrize("T", [0, -1.0, float("nan"), float("inf"), "2", True])
def test_bad_temperature(T):
    s = torch.randn(2, 3)
    with pytest.raises(ValueError, match="T"):
        kd_loss(s, s, T=T)
    with pytest.raises(ValueError, match="T"):
        reverse_kl(s, s, T=T)


def test_bad_shapes_and_types():
    with pytest.raises(ValueError, match="differ in shape"):
        kd_loss(torch.randn(2, 3, 5), torch.randn(2, 3, 6))
    with pytest.raises(ValueError, match="mask has shape"):
        kd_loss(torch.randn(2, 3, 5), torch.randn(2, 3, 5), mask=torch.ones(2, 4))
    with pytest.raises(ValueError, match="no position"):
        kd_loss(torch.randn(2, 3, 5), torch.randn(2, 3, 5), mask=torch.zeros(2, 3))
    with pytest.raises(ValueError, match=r"\(N, V\) or \(B, T, V\)"):
        kd_loss(torch.randn(5), torch.randn(5))
    with pytest.raises(TypeError, match="torch.Tensor"):
        kd_loss([[1.0, 2.0]], torch.randn(1, 2))
    with pytest.raises(TypeError, match="floating point"):
        kd_loss(torch.ones(2, 3, dtype=torch.long), torch.randn(2, 3))
    with pytest.raises(ValueError, match="beta"):
        generalized_jsd(torch.randn(2, 3), torch.randn(2, 3), beta=1.5)
    with pytest.raises(ValueError, match="alpha"):
        distillation_loss(torch.randn(2, 3), torch.randn(2, 3), torch.zeros(2, dtype=torch.long), alpha=-0.1)
    with pytest.raises(ValueError, match="labels"):
        distillation_loss(torch.randn(2, 3), torch.randn(2, 3), torch.zeros(3, dtype=torch.long))


@pytest.fixture(scope="module")
def tiny_pair():
    torch.manual_seed(0)
    return TinyGPT(GPTConfig(d_model=32, n_layer=1)).eval(), TinyGPT(GPTConfig(d_model=32, n_layer=2)).eval()


def test_teacher_label_keeps_or_strips_steps(tiny_pair):
    teacher, _ = tiny_pair
    items = get_task("add3_steps").items(4, seed=0, split="train")
    full = teacher_label(teacher, [it.prompt for it in items], max_new_tokens=8)
    for ex in full:  # a random model: some outputs never end and are dropped
        assert ex.prompt.startswith(chat_prompt("show "))
    short = teacher_label(teacher, [it.prompt for it in items], max_new_tokens=8, keep_steps=False,
                          student_prompts=[it.prompt.removeprefix("show ") for it in items])
    assert len(short) == len(full)
    for a, b in zip(full, short):
        assert b.completion == a.completion.rsplit("⟩", 1)[-1]
        assert "show" not in b.prompt
    with pytest.raises(TypeError):
        teacher_label(teacher, "show 1+2")
    with pytest.raises(ValueError, match="student_prompts"):
        teacher_label(teacher, ["a", "b"], student_prompts=["a"])


def test_train_kd_moves_student_towards_teacher(tiny_pair):
    teacher, student0 = tiny_pair
    import copy
    student = copy.deepcopy(student0)
    data = get_task("rev").examples(32, seed=0)
    from ftlab.chat import sft_tensors
    ids, mask = sft_tensors(data)
    with torch.no_grad():
        before = float(kd_loss(student(ids)[:, :-1], teacher(ids)[:, :-1], 1.0, mask[:, 1:]))
    hist = train_kd(student, teacher, data, steps=30, lr=3e-3, T=1.0, batch_size=16, seed=0)
    with torch.no_grad():
        after = float(kd_loss(student(ids)[:, :-1], teacher(ids)[:, :-1], 1.0, mask[:, 1:]))
    assert len(hist.loss) == 30 and after < 0.5 * before, (before, after)
    for kw, match in [(dict(divergence="up"), "divergence"), (dict(steps=0), "steps"), (dict(lr=0), "lr"),
                      (dict(alpha=2), "alpha"), (dict(T=0), "T")]:
        args = dict(steps=1, lr=1e-3) | kw
        with pytest.raises(ValueError, match=match):
            train_kd(student, teacher, data, **args)
    with pytest.raises(ValueError, match="vocabularies"):
        train_kd(student, TinyGPT(GPTConfig(d_model=32, n_layer=1, vocab_size=70)), data, steps=1, lr=1e-3)


def test_router_curve_and_cheapest_point():
    conf = [0.9, 0.8, 0.3, 0.2]
    s = [True, True, False, True]
    t = [True, True, True, False]
    a, b = route(conf, s, t, 0.0), route(conf, s, t, 0.1)
    assert (a.fallback_rate, a.accuracy) == (b.fallback_rate, b.accuracy) == (0.0, 0.75)
    p = route(conf, s, t, 0.5)          # student keeps the two confident ones, teacher takes the rest
    assert p.fallback_rate == 0.5 and p.accuracy == 0.75
    curve = fallback_curve(conf, s, t)
    assert curve[0].fallback_rate == 0.0 and curve[-1].fallback_rate == 1.0
    assert curve[-1].accuracy == 0.75   # all teacher
    best = cheapest_route(curve, 0.75)
    assert best.fallback_rate == 0.0    # the student alone already reaches 0.75
    assert cheapest_route(curve, 0.99) is None
    with pytest.raises(ValueError, match="length"):
        route(conf, s[:3], t, 0.5)
    with pytest.raises(ValueError, match="1-D"):
        route([], [], [], 0.5)
    with pytest.raises(TypeError, match="threshold"):
        route(conf, s, t, "high")


def test_confidence_is_the_weakest_token():
    gens = [Generation("p", "ab", [math.log(0.9), math.log(0.5), math.log(0.99)]), Generation("p", "", [0.0])]
    assert confidence(gens) == pytest.approx([0.5, 1.0])
    with pytest.raises(ValueError):
        confidence([])


def test_weight_bytes_counts_block_linears_separately():
    m = TinyGPT(GPTConfig(d_model=32, n_layer=2))
    n = m.num_params()
    lin = sum(p.numel() for k, p in m.named_parameters() if k.startswith("layers.") and k.endswith("_proj.weight"))
    assert lin == 2 * (4 * 32 * 32 + 2 * 4 * 32 * 32)
    assert weight_bytes(m) == 2 * n
    assert weight_bytes(m, 4, 16) == pytest.approx(lin / 2 + (n - lin) * 2)
    with pytest.raises(ValueError, match="linear_bits"):
        weight_bytes(m, 0)


def test_checkers_accept_the_reference_and_reject_mistakes():
    check_kd_loss(lambda s, t, T, m: kd_loss(s, t, T, m))
    with pytest.raises(AssertionError):
        check_kd_loss(lambda s, t, T, m: kd_loss(s, t, T, m) / (T * T))        # forgot T²
    with pytest.raises(AssertionError):
        check_kd_loss(lambda s, t, T, m: reverse_kl(s, t, T, m))               # wrong direction

    def good(conf, s, t, target):
        return cheapest_route(fallback_curve(conf, s, t), target).threshold
    check_threshold(good)
    with pytest.raises(AssertionError):
        check_threshold(lambda conf, s, t, target: 2.0)                        # always the teacher: too costly


def test_reduction_none_gives_one_value_per_position():
    g = torch.Generator().manual_seed(5)
    s, t = torch.randn(2, 3, 4, generator=g), torch.randn(2, 3, 4, generator=g)
    mask = torch.tensor([[1, 0, 1], [1, 1, 0]])
    for fn in (kd_loss, reverse_kl, generalized_jsd):
        per = fn(s, t, mask=mask, reduction="none")
        assert per.shape == (2, 3) and float(per[0, 1]) == 0.0
        assert float(per.sum() / mask.sum()) == pytest.approx(float(fn(s, t, mask=mask)), rel=1e-5)
        with pytest.raises(ValueError, match="reduction"):
            fn(s, t, reduction="sum")


def test_answer_only_and_carries():
    from ftlab.chat import Example
    from ftlab.distill import answer_only, n_carries
    ex = Example(chat_prompt("show 47+85"), "⟨7+5=12,4+8+1=13⟩132")
    assert answer_only(ex) == Example(chat_prompt("47+85"), "132")
    with pytest.raises(ValueError, match="prefix"):
        answer_only(Example(chat_prompt("47+85"), "132"))
    with pytest.raises(TypeError):
        answer_only(("a", "b"))
    assert [n_carries(*p) for p in [(100, 200), (47, 85), (999, 1), (555, 445), (0, 0)]] == [0, 2, 3, 3, 0]
    with pytest.raises(ValueError):
        n_carries(-1, 3)


def test_trl_configs_shown_in_chapter_06_construct(tmp_path):
    """The TRL snippets in chapter 06 use argument names the installed TRL accepts."""
    trl = pytest.importorskip("trl")
    gkd = pytest.importorskip("trl.experimental.gkd")
    trl.SFTConfig(output_dir=str(tmp_path / "sft"), num_train_epochs=2, learning_rate=2e-5, use_cpu=True)
    args = gkd.GKDConfig(output_dir=str(tmp_path / "gkd"), beta=0.0, lmbda=0.0, temperature=0.9,
                         learning_rate=2e-5, use_cpu=True)
    assert (args.beta, args.lmbda, args.temperature) == (0.0, 0.0, 0.9)
    d = gkd.GKDConfig(output_dir=str(tmp_path / "g2"), use_cpu=True)   # the defaults chapter 06 quotes
    assert (d.beta, d.lmbda, d.temperature) == (0.5, 0.5, 0.9)
    dist = trl.DistillationConfig(output_dir=str(tmp_path / "dist"), use_cpu=True)
    assert dist.beta == 1.0                                            # chapter 06: reverse KL by default


def test_generalized_jsd_matches_trl_gkd_loss():
    """ftlab's GKD loss equals TRL's GKDTrainer.generalized_jsd_loss at T = 1 (its docstring's claim)."""
    gkd = pytest.importorskip("trl.experimental.gkd")
    from ftlab.distill import generalized_jsd
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(3, 5, 11, generator=g) * 2, torch.randn(3, 5, 11, generator=g) * 2
    labels = torch.randint(0, 11, (3, 5), generator=g)
    labels[0, :2] = -100
    labels[2, 4] = -100
    mask = (labels != -100).long()
    for beta in (0.0, 0.1, 0.5, 0.9, 1.0):
        ref = gkd.GKDTrainer.generalized_jsd_loss(s, t, labels=labels, beta=beta, temperature=1.0)
        ours = generalized_jsd(s, t, beta=beta, T=1.0, mask=mask)
        assert float(ours) == pytest.approx(float(ref), rel=1e-5, abs=1e-7), beta
