"""ftlab.align against the papers' formulas on hand-computed cases, and its errors on bad input."""
import math
import random

import pytest
import torch
import torch.nn.functional as F

import ftlab
from ftlab import align
from ftlab.feedback import PreferencePair

t = torch.tensor


# --- Bradley–Terry and the reward model ---------------------------------------------
def test_bradley_terry_by_hand():
    # -log σ(1) = log(1 + e^-1); -log σ(-2) = log(1 + e^2); the mean of both.
    got = align.bradley_terry_loss(t([1.0, 0.0]), t([0.0, 2.0]))
    want = (math.log(1 + math.exp(-1)) + math.log(1 + math.exp(2))) / 2
    assert got.item() == pytest.approx(want, abs=1e-6)


def test_reward_model_reads_the_last_real_token_whatever_the_padding():
    torch.manual_seed(0)
    rm = align.RewardModel(ftlab.TinyGPT(ftlab.GPTConfig(n_layer=1, d_model=32)))
    p = [ftlab.chat_prompt("rev ab"), ftlab.chat_prompt("rev abcdef")]
    both = rm.score(p, ["ba", "fedcba"])
    alone = torch.stack([rm.score([p[0]], ["ba"])[0], rm.score([p[1]], ["fedcba"])[0]])
    assert both.shape == (2,)
    torch.testing.assert_close(both, alone)
    assert rm.body.lm_head.out_features == 1


def test_reward_model_learns_a_separable_preference():
    torch.manual_seed(0)
    rm = align.RewardModel(ftlab.TinyGPT(ftlab.GPTConfig(n_layer=1, d_model=32)))
    pairs = [PreferencePair(f"rev {w}", w[::-1], w) for w in ["abc", "xyz", "kelo", "mira", "tupo", "vand"]]
    losses = align.train_reward_model(rm, pairs, steps=60, lr=3e-3, batch_size=6, seed=0)
    assert losses[-1] < losses[0]
    assert align.reward_accuracy(rm, pairs) == 1.0


# --- DPO and IPO --------------------------------------------------------------------
def test_dpo_loss_by_hand():
    # h = (−2 − −3) − (−6 − −4) = 1 + 2 = 3; loss = −log σ(0.5·3)
    loss, cr, rr = align.dpo_loss(t([-2.0]), t([-6.0]), t([-3.0]), t([-4.0]), beta=0.5)
    assert loss.item() == pytest.approx(math.log(1 + math.exp(-1.5)), abs=1e-6)
    assert cr.item() == pytest.approx(0.5) and rr.item() == pytest.approx(-1.0)


def test_dpo_loss_is_log2_at_the_reference_and_averages_pairs():
    z = torch.full((5,), -4.0)
    loss, cr, rr = align.dpo_loss(z, z - 1, z, z - 1, beta=0.1)
    assert loss.item() == pytest.approx(math.log(2), abs=1e-6)
    assert torch.all(cr == 0) and torch.all(rr == 0)


def test_ipo_loss_by_hand():
    # h = 3, β = 0.5: (3 − 1/(2·0.5))² = 4
    loss, _, _ = align.ipo_loss(t([-2.0]), t([-6.0]), t([-3.0]), t([-4.0]), beta=0.5)
    assert loss.item() == pytest.approx(4.0)


def test_dpo_gradient_raises_chosen_and_lowers_rejected():
    pc, pr = t([-3.0], requires_grad=True), t([-3.0], requires_grad=True)
    loss, _, _ = align.dpo_loss(pc, pr, t([-3.0]), t([-3.0]), beta=0.1)
    loss.backward()
    assert pc.grad.item() < 0 < pr.grad.item()
    # at the reference the gradient is β·σ(0) = β/2 in size
    assert pc.grad.item() == pytest.approx(-0.05)


def test_optimal_policy_and_dpo_bandit_agree():
    r, ref = t([1.0, 0.0, -0.5, 0.3]), t([0.1, 0.4, 0.3, 0.2])
    for beta in (0.5, 2.0):
        p_star = align.optimal_policy(r, ref, beta)
        want = ref * torch.exp(r / beta)
        torch.testing.assert_close(p_star, want / want.sum())
        p = align.dpo_bandit(r, ref, beta, steps=600)
        assert (p - p_star).abs().sum() / 2 < 0.01


def test_train_dpo_moves_the_margin():
    torch.manual_seed(0)
    policy = ftlab.TinyGPT(ftlab.GPTConfig(n_layer=1, d_model=32))
    ref = align._ref_copy(policy)
    pairs = [PreferencePair(f"rev {w}", w[::-1], w) for w in ["abc", "xyz", "kelo", "mira"]]
    hist = align.train_dpo(policy, ref, pairs, steps=20, lr=3e-3, beta=0.5, batch_size=4, seed=0)
    assert hist.loss[-1] < hist.loss[0] and hist.margin[-1] > 0


def test_dpop_by_hand_and_equal_to_dpo_when_chosen_rises():
    # chosen log-ratio −2 − (−1) = −1, rejected −6 − (−4) = −2, h = 1; penalty λ·max(0, 1) = 5
    # loss = −log σ(0.5·(1 − 5)) = log(1 + e^2)
    loss, cr, rr = align.dpo_loss(t([-2.0]), t([-6.0]), t([-1.0]), t([-4.0]), beta=0.5, loss_type="dpop",
                                  dpop_lambda=5.0)
    assert loss.item() == pytest.approx(math.log(1 + math.exp(2)), abs=1e-6)
    assert cr.item() == pytest.approx(-0.5) and rr.item() == pytest.approx(-1.0)
    # when the chosen log-ratio is >= 0 the penalty is zero and DPOP is DPO
    args = (t([-1.0, -2.0]), t([-5.0, -3.0]), t([-2.0, -2.0]), t([-4.0, -4.0]))
    dpop, _, _ = align.dpo_loss(*args, beta=0.1, loss_type="dpop", dpop_lambda=50.0)
    dpo, _, _ = align.dpo_loss(*args, beta=0.1)
    assert dpop.item() == pytest.approx(dpo.item(), abs=1e-7)


def _tiny_dpo(**kw):
    torch.manual_seed(0)
    policy = ftlab.TinyGPT(ftlab.GPTConfig(n_layer=1, d_model=32))
    ref = align._ref_copy(policy)
    # near-miss pairs, one character apart: the setting where DPO can lower log π(chosen)
    pairs = [PreferencePair(f"rev {w}", w[::-1], w[::-1][:-1] + "z") for w in ["abc", "xyw", "kelo", "mira"]]
    hist = align.train_dpo(policy, ref, pairs, steps=30, lr=3e-3, beta=0.1, batch_size=4, seed=0, **kw)
    with torch.no_grad():
        c, _ = align.pair_logps(policy, pairs)
        c_ref, _ = align.pair_logps(ref, pairs)
    return hist, (c - c_ref).mean().item()


def test_dpop_and_rpo_keep_the_chosen_answers_up():
    _, plain = _tiny_dpo()
    _, dpop = _tiny_dpo(loss_type="dpop", dpop_lambda=20.0)
    _, rpo = _tiny_dpo(rpo_alpha=1.0)
    assert dpop > plain and rpo > plain, (plain, dpop, rpo)
    assert rpo > 0, rpo   # the SFT term raises the chosen answers outright


# --- RLHF pieces ----------------------------------------------------------------------
def test_kl_penalized_rewards_by_hand():
    logp = t([[-1.0, -2.0, 0.0], [-0.5, 0.0, 0.0]])
    ref = t([[-1.5, -1.0, 0.0], [-0.5, 0.0, 0.0]])
    mask = t([[1, 1, 0], [1, 0, 0]])
    r = align.kl_penalized_rewards(t([2.0, -1.0]), logp, ref, mask, beta=0.1)
    # row 0: −0.1·(0.5) = −0.05, then −0.1·(−1) + 2 = 2.1 at the last token; row 1: −1 at token 0
    torch.testing.assert_close(r, t([[-0.05, 2.1, 0.0], [-1.0, 0.0, 0.0]]))


def test_ppo_clip_loss_by_hand():
    old = torch.zeros(1, 2)
    new = torch.log(t([[1.5, 0.5]]))
    mask = torch.ones(1, 2)
    # A = +1 at ratio 1.5 clips to 1.2; A = −1 at ratio 0.5 takes min(−0.5, −0.8) = −0.8
    loss = align.ppo_clip_loss(new, old, t([[1.0, -1.0]]), mask, clip_eps=0.2)
    assert loss.item() == pytest.approx(-(1.2 - 0.8) / 2)


def test_whiten_ignores_masked_entries():
    x, m = t([[1.0, 3.0, 100.0]]), t([[1, 1, 0]])
    torch.testing.assert_close(align.whiten(x, m), t([[-1.0, 1.0, 0.0]]), atol=1e-6, rtol=0)


# --- GRPO -------------------------------------------------------------------------------
def test_grpo_advantages_three_conventions():
    r = t([[1.0, 1.0, 1.0, 0.0]])
    centred = t([[0.25, 0.25, 0.25, -0.75]])
    torch.testing.assert_close(align.grpo_advantages(r), centred / (0.5 + 1e-4))              # Bessel: std = 0.5
    torch.testing.assert_close(align.grpo_advantages(r, unbiased=False), centred / (math.sqrt(3) / 4 + 1e-4))
    torch.testing.assert_close(align.grpo_advantages(r, scale="none"), centred)


def test_grpo_all_equal_group_teaches_nothing():
    a = align.grpo_advantages(t([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]]))
    assert torch.all(a == 0) and not torch.isnan(a).any()


def test_k3_by_hand_and_unbiased():
    assert align.k3_kl(t([math.log(0.5)]), t([math.log(0.25)])).item() == pytest.approx(0.5 + math.log(2) - 1)
    pi, ref = t([0.5, 0.3, 0.2]), t([0.2, 0.5, 0.3])
    exact = (pi * (pi / ref).log()).sum()
    expected_k3 = (pi * align.k3_kl(pi.log(), ref.log())).sum()   # E_{x~π}[k3]
    assert expected_k3.item() == pytest.approx(exact.item(), abs=1e-6)
    assert (align.k3_kl(torch.randn(100), torch.randn(100)) >= 0).all()


def test_grpo_loss_length_normalisations_by_hand():
    lp = torch.zeros(2, 3)
    mask = t([[1, 0, 0], [1, 1, 1]])
    adv = t([1.0, -1.0])
    # ratio 1 and no KL: per-token loss is −A, so row 0 sums to −1 over 1 token, row 1 to +3 over 3.
    seq = align.grpo_loss(lp, lp, None, adv, mask, beta=0.0, length_norm="sequence")
    tok = align.grpo_loss(lp, lp, None, adv, mask, beta=0.0, length_norm="token")
    const = align.grpo_loss(lp, lp, None, adv, mask, beta=0.0, length_norm="constant", max_len=4)
    assert seq.item() == pytest.approx(0.0)
    assert tok.item() == pytest.approx(0.5)
    assert const.item() == pytest.approx(0.25)


def test_grpo_loss_adds_beta_times_k3():
    lp, ref = torch.zeros(1, 2), torch.log(t([[0.5, 0.5]]))
    mask = torch.ones(1, 2)
    loss = align.grpo_loss(lp, lp, ref, t([0.0]), mask, beta=0.1)
    assert loss.item() == pytest.approx(0.1 * (0.5 + math.log(2) - 1))


# --- the judge -------------------------------------------------------------------------
def test_biased_judge_extremes():
    rng = random.Random(0)
    fair = align.BiasedJudge(verbosity=0.0, position=0.0, noise=0.0)
    assert fair.prefers_first("ab", "abcdef", True, rng) and not fair.prefers_first("ab", "abcdef", False, rng)
    verbose = align.BiasedJudge(verbosity=1.0, position=0.0, noise=0.0)
    assert verbose.prefers_first("abcdef", "ab", False, rng)
    first = align.BiasedJudge(position=1.0)
    assert first.prefers_first("x", "y", False, rng)
    cands = [("rev ab", "ba", "ab", True)] * 10
    assert all(p.chosen == "ba" for p in align.judge_pairs(fair, cands))
    assert all(p.chosen == "ab" for p in align.judge_pairs(first, cands, swap=True))


# --- exercise checkers ---------------------------------------------------------------------
def test_checkers_pass_the_reference_and_fail_wrong_code():
    align.check_dpo_loss(align.dpo_loss)
    align.check_grpo_advantages(align.grpo_advantages)

    def no_beta(pc, pr, rc, rr, beta):
        h = (pc - rc) - (pr - rr)
        return -F.logsigmoid(h).mean(), beta * (pc - rc), beta * (pr - rr)

    with pytest.raises(AssertionError):
        align.check_dpo_loss(no_beta)
    with pytest.raises(AssertionError, match="population"):
        align.check_grpo_advantages(lambda r: align.grpo_advantages(r, unbiased=False))


# --- bad input -----------------------------------------------------------------------------
@pytest.mark.parametrize("call, err, match", [
    (lambda: align.bradley_terry_loss(t([1.0]), t([1.0, 2.0])), ValueError, "shapes differ"),
    (lambda: align.bradley_terry_loss([1.0], t([1.0])), TypeError, "r_chosen"),
    (lambda: align.dpo_loss(t([1.0]), t([1.0]), t([1.0]), t([1.0, 2.0])), ValueError, "shapes differ"),
    (lambda: align.dpo_loss(t([1.0]), t([1.0]), t([1.0]), t([1.0]), beta=0), ValueError, "beta"),
    (lambda: align.dpo_loss(t([1.0]), t([1.0]), t([1.0]), t([1.0]), loss_type="hinge"), ValueError, "loss_type"),
    (lambda: align.dpo_loss(t([[1.0]]), t([[1.0]]), t([[1.0]]), t([[1.0]])), ValueError, "1-D"),
    (lambda: align.dpo_loss(t([1]), t([1]), t([1]), t([1])), TypeError, "floating-point"),
    (lambda: align.grpo_advantages(t([1.0, 0.0])), ValueError, "num_prompts, G"),
    (lambda: align.grpo_advantages(t([[1.0, 0.0]]), scale="batch"), ValueError, "scale"),
    (lambda: align.grpo_loss(torch.zeros(1, 2), torch.zeros(1, 2), None, t([1.0]), torch.ones(1, 2),
                             length_norm="mean"), ValueError, "length_norm"),
    (lambda: align.grpo_loss(torch.zeros(1, 2), torch.zeros(1, 2), None, t([1.0]), torch.ones(1, 2),
                             length_norm="constant"), ValueError, "max_len"),
    (lambda: align.kl_penalized_rewards(t([1.0]), torch.zeros(1, 2), torch.zeros(1, 2), torch.ones(1, 2), -1.0),
     ValueError, "beta"),
    (lambda: align.kl_penalized_rewards(t([1.0]), torch.zeros(1, 2), torch.zeros(1, 2), torch.zeros(1, 2), 0.1),
     ValueError, "at least one"),
    (lambda: align.optimal_policy(t([1.0, 0.0]), t([0.7, 0.7]), 1.0), ValueError, "distribution"),
    (lambda: align.RewardModel("base"), TypeError, "TinyGPT"),
    (lambda: align.BiasedJudge(verbosity=1.5), ValueError, "verbosity"),
    (lambda: align.judge_pairs("judge", []), TypeError, "BiasedJudge"),
    (lambda: align.reward_accuracy(None, []), ValueError, "pairs is empty"),
    (lambda: align.train_dpo(None, None, [("p", "a", "b")]), TypeError, "PreferencePair"),
    (lambda: align.dpo_loss(t([1.0]), t([1.0]), t([1.0]), t([1.0]), loss_type="dpop", dpop_lambda=-1.0),
     ValueError, "dpop_lambda"),
    (lambda: align.train_dpo(None, None, [PreferencePair("p", "a", "b")], rpo_alpha=-0.5), ValueError, "rpo_alpha"),
    (lambda: align.train_dpo(None, None, [PreferencePair("p", "a", "b")], loss_type="kto"), ValueError, "loss_type"),
    (lambda: align.rollout_tensors(["a"], ["b", "c"]), ValueError, "one completion per prompt"),
])
def test_bad_input_is_named(call, err, match):
    with pytest.raises(err, match=match):
        call()


def test_candidate_rl_reaches_the_closed_form_optimum_and_beta_zero_chases_the_proxy():
    ref = torch.log(t([[0.6, 0.3, 0.1]]))
    proxy, gold = t([[0.0, 0.5, 1.0]]), t([[1.0, 0.0, 0.0]])
    h = align.candidate_rl(ref, proxy, gold, beta=1.0, steps=400, lr=0.05)
    p_star = align.optimal_policy(proxy[0], ref[0].exp(), 1.0)
    exact_kl = float((p_star * (p_star / ref[0].exp()).log()).sum())
    assert h.kl[-1] == pytest.approx(exact_kl, abs=1e-3)
    h0 = align.candidate_rl(ref, proxy, gold, beta=0.0, steps=400, lr=0.05)
    assert h0.reward[-1] > 0.95 and h0.gold[-1] < 0.05 and h0.kl[-1] > h.kl[-1]


def test_candidate_rl_keeps_its_final_policy():
    ref = torch.log(t([[0.6, 0.3, 0.1]]))
    proxy, gold = t([[0.0, 0.5, 1.0]]), t([[1.0, 0.0, 0.0]])
    h = align.candidate_rl(ref, proxy, gold, beta=1.0, steps=400, lr=0.05)
    p_star = align.optimal_policy(proxy[0], ref[0].exp(), 1.0)
    assert h.policy.shape == (1, 3)
    assert torch.allclose(h.policy[0], p_star, atol=1e-3)
    assert float((h.policy * gold).sum()) == pytest.approx(h.gold[-1], abs=1e-2)


def test_grpo_checker_names_nan_on_an_all_equal_group():
    def nan_for_flat(r):   # right everywhere except a flat group, where it returns NaN
        std = r.std(1, keepdim=True)
        adv = (r - r.mean(1, keepdim=True)) / (std + 1e-4)
        return torch.where(std == 0, torch.full_like(adv, float("nan")), adv)

    with pytest.raises(AssertionError, match="all-equal"):
        align.check_grpo_advantages(nan_for_flat)


def test_trl_configs_shown_in_chapter_04_construct(tmp_path):
    """The TRL snippets in chapters 04 and 04b use argument names the installed TRL accepts."""
    trl = pytest.importorskip("trl")
    cpu = {"use_cpu": True}
    trl.RewardConfig(output_dir=str(tmp_path / "rm"), learning_rate=1e-5, **cpu)
    args = trl.DPOConfig(output_dir=str(tmp_path / "dpo"), beta=0.1, loss_type=["sigmoid", "sft"],
                         loss_weights=[1.0, 1.0], precompute_ref_log_probs=True,
                         learning_rate=5e-7, per_device_train_batch_size=8, **cpu)
    assert args.loss_type == ["sigmoid", "sft"] and args.loss_weights == [1.0, 1.0]
    assert trl.DPOConfig(output_dir=str(tmp_path / "d2"), **cpu).beta == 0.1
    with pytest.raises(TypeError, match="rpo_alpha"):   # removed in TRL 0.29, as chapter 04 says
        trl.DPOConfig(output_dir=str(tmp_path / "d3"), rpo_alpha=1.0, **cpu)
    assert not hasattr(trl, "PPOTrainer")               # chapter 04: no PPO trainer in TRL 1.x
    g = trl.GRPOConfig(output_dir=str(tmp_path / "grpo"), num_generations=8, max_completion_length=256,
                       beta=0.04, epsilon=0.2, scale_rewards="none", loss_type="dr_grpo", **cpu)
    assert g.loss_type == "dr_grpo"
    d = trl.GRPOConfig(output_dir=str(tmp_path / "g2"), **cpu)   # the defaults chapter 04b quotes
    assert (d.num_generations, d.beta, d.epsilon, d.scale_rewards, d.num_iterations) == (8, 0.0, 0.2, "group", 1)
    assert d.importance_sampling_level == "token"
    trl.GRPOConfig(output_dir=str(tmp_path / "g3"), importance_sampling_level="sequence", **cpu)
    k = trl.KTOConfig(output_dir=str(tmp_path / "kto"), desirable_weight=1.0, undesirable_weight=1.0, **cpu)
    assert k.beta > 0
