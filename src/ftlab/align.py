"""Alignment: a reward model, RLHF with a KL penalty (PPO-clip), DPO and IPO, GRPO, an AI judge.

Every loss here is the paper's formula on tensors of log-probabilities, so the unit
tests can check it on hand-computed cases; the ``train_*`` loops are the smallest
drivers that make those losses move the lab's TinyGPT.

    bradley_terry_loss(r_chosen, r_rejected)                 reward-model loss (InstructGPT, Ouyang et al. 2022)
    RewardModel(backbone)                                    TinyGPT with its LM head swapped for a scalar head
    dpo_loss(pc, pr, rc, rr, beta) -> (loss, chosen_rewards, rejected_rewards)   Rafailov et al. 2023
    ipo_loss(...)                                            Azar et al. 2023, on length-averaged log-probs as TRL does
    kl_penalized_rewards(scores, logprobs, ref_logprobs, mask, beta)   InstructGPT's per-token reward shaping
    ppo_clip_loss(logprobs, old_logprobs, advantages, mask)  Schulman et al. 2017, no value head (see train_rlhf)
    grpo_advantages(rewards, scale="group")                  Shao et al. 2024; scale="none" is Dr. GRPO (Liu et al. 2025)
    k3_kl(logprobs, ref_logprobs)                            Schulman's "k3" estimator, the KL term of GRPO
    grpo_loss(..., length_norm="sequence"|"token"|"constant")
"""
from __future__ import annotations

import copy
import math
import random
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .chat import format_prompt
from .feedback import PreferencePair
from .generation import completion_batch, generate, sequence_logprob
from .model import TinyGPT
from .progress import progress
from .seeds import shift
from .tasks import Item, Task, get_task
from .optim import AdamW

__all__ = ["PreferencePair", "bradley_terry_loss", "RewardModel", "train_reward_model", "reward_accuracy",
           "dpo_loss", "ipo_loss", "pair_logps", "train_dpo", "DPOHistory", "optimal_policy", "dpo_bandit",
           "rollout_tensors", "token_logprobs", "kl_penalized_rewards", "whiten", "ppo_clip_loss", "train_rlhf",
           "RLHistory", "candidate_rl", "grpo_advantages", "k3_kl", "grpo_loss", "train_grpo", "BiasedJudge", "judge_pairs",
           "check_dpo_loss", "check_grpo_advantages"]


# --- input checks -------------------------------------------------------------------
def _tensor(x, name: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    return x


def _same_shape(**tensors) -> None:
    shapes = {k: tuple(v.shape) for k, v in tensors.items()}
    if len(set(shapes.values())) != 1:
        raise ValueError(f"shapes differ: {shapes}")


def _positive(x, name: str) -> float:
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not x > 0 or not math.isfinite(x):
        raise ValueError(f"{name} must be a finite number > 0, got {x!r}")
    return float(x)


def _nonneg(x, name: str) -> float:
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not x >= 0 or not math.isfinite(x):
        raise ValueError(f"{name} must be a finite number >= 0, got {x!r}")
    return float(x)


def _posint(x, name: str) -> int:
    if isinstance(x, bool) or not isinstance(x, int) or x < 1:
        raise ValueError(f"{name} must be a positive int, got {x!r}")
    return x


# --- the reward model ---------------------------------------------------------------
def bradley_terry_loss(
    r_chosen: torch.Tensor, r_rejected: torch.Tensor
) -> torch.Tensor:
    """−log σ(r_chosen − r_rejected), averaged over pairs.

    The pairwise loss of Bradley & Terry 1952; InstructGPT's RM loss.
    """
    _tensor(r_chosen, "r_chosen"), _tensor(r_rejected, "r_rejected")
    _same_shape(r_chosen=r_chosen, r_rejected=r_rejected)
    if r_chosen.dim() != 1 or len(r_chosen) == 0:
        raise ValueError(
            "rewards must be 1-D with one entry per pair, "
            f"got shape {tuple(r_chosen.shape)}"
        )
    return -F.logsigmoid(r_chosen - r_rejected).mean()


def _join(prompts: Sequence[str], completions: Sequence[str], finished: Sequence[bool] | None = None):
    """Right-padded ids of prompt + completion (+ EOS where finished), and the completion mask."""
    if isinstance(prompts, str) or isinstance(completions, str):
        raise TypeError("prompts and completions must be lists of str, not a single str")
    if len(prompts) != len(completions) or not prompts:
        raise ValueError(f"need one completion per prompt, got {len(prompts)} prompts and {len(completions)} completions")
    finished = [True] * len(prompts) if finished is None else list(finished)
    if len(finished) != len(prompts):
        raise ValueError(f"finished has {len(finished)} entries for {len(prompts)} prompts")
    return completion_batch(prompts, completions, finished)


class RewardModel(nn.Module):
    """r(x, y): a copy of a TinyGPT whose LM head is swapped for a scalar head.

    Essentially what Hugging Face's ``AutoModelForSequenceClassification(num_labels=1)``
    builds: the body is the SFT model, the ``score`` head is new, and the reward of a
    sequence is the head's output at its last real token (HF's head has no bias, which
    cancels in the Bradley–Terry loss anyway, and finds the last token from the pad id).
    """

    def __init__(self, backbone: TinyGPT):
        super().__init__()
        if not isinstance(backbone, TinyGPT):
            raise TypeError(
                f"backbone must be a TinyGPT, got {type(backbone).__name__}"
            )
        self.body = copy.deepcopy(backbone)
        self.body.lm_head = nn.Linear(
            backbone.config.d_model, 1, bias=True
        )  # the new scalar "score" head
        nn.init.normal_(self.body.lm_head.weight, std=0.02)
        nn.init.zeros_(self.body.lm_head.bias)
        self.body.requires_grad_(True)

    @property
    def device(self) -> torch.device:
        return self.body.device

    def forward(self, ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        out = self.body(ids, attention_mask=attention_mask).squeeze(-1)   # (B, T)
        last = attention_mask.long().sum(1) - 1  # right padding: last real token
        return out.gather(1, last[:, None]).squeeze(1)                   # (B,)

    def score(self, prompts: Sequence[str], completions: Sequence[str],
              finished: Sequence[bool] | None = None) -> torch.Tensor:
        """Rewards of completions (EOS appended where ``finished``), one per row.

        The rewards are differentiable.
        """
        ids, attn, _ = _join(prompts, completions, finished)
        return self(ids.to(self.device), attn.to(self.device))


def _pairs(pairs) -> list[PreferencePair]:
    pairs = list(pairs)
    if not pairs:
        raise ValueError("pairs is empty")
    for p in pairs:
        if not isinstance(p, PreferencePair):
            raise TypeError(f"pairs must hold ftlab.feedback.PreferencePair, got {type(p).__name__}: {p!r}")
    return pairs


def train_reward_model(rm: RewardModel, pairs: Sequence[PreferencePair], steps: int = 150, lr: float = 1e-3,
                       batch_size: int = 32, seed: int = 0, template: str = "chat") -> list[float]:
    """Fit ``rm`` to the pairs with the Bradley–Terry loss; returns the loss of every step."""
    if not isinstance(rm, RewardModel):
        raise TypeError(f"rm must be a RewardModel, got {type(rm).__name__}")
    pairs, steps, batch_size = _pairs(pairs), _posint(steps, "steps"), _posint(batch_size, "batch_size")
    _positive(lr, "lr")
    prompts = [format_prompt(p.prompt, template) for p in pairs]
    opt = AdamW(rm.parameters(), lr=lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(shift(seed))
    losses = []
    rm.train()
    for _ in progress(range(steps), desc="reward model"):
        idx = torch.randint(len(pairs), (min(batch_size, len(pairs)),), generator=gen).tolist()
        pr = [prompts[i] for i in idx]
        r = rm.score(pr + pr, [pairs[i].chosen for i in idx] + [pairs[i].rejected for i in idx])
        loss = bradley_terry_loss(r[: len(idx)], r[len(idx):])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    rm.eval()
    return losses


@torch.no_grad()
def reward_accuracy(rm: RewardModel, pairs: Sequence[PreferencePair], template: str = "chat") -> float:
    """Share of pairs whose chosen completion gets the strictly higher reward."""
    pairs = _pairs(pairs)
    prompts = [format_prompt(p.prompt, template) for p in pairs]
    r = rm.score(prompts + prompts, [p.chosen for p in pairs] + [p.rejected for p in pairs])
    return float((r[: len(pairs)] > r[len(pairs):]).float().mean())


# --- DPO and IPO --------------------------------------------------------------------
def dpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    beta: float = 0.1,
    loss_type: str = "sigmoid",
    dpop_lambda: float = 5.0,
):
    """The DPO loss (Rafailov et al. 2023, eq. 7), averaged over pairs.

    Inputs are log π(y|x) summed over completion tokens, one per pair. Returns
    ``(loss, chosen_rewards, rejected_rewards)`` with rewards β·(log π − log π_ref), the
    implicit rewards TRL logs (detached). ``loss_type="ipo"`` gives IPO's squared loss
    (Azar et al. 2023, eq. 17), (h − 1/(2β))², where h is the same log-ratio difference;
    see ``ipo_loss`` for the length-averaged inputs TRL feeds it.
    ``loss_type="dpop"`` is DPO-Positive (Pal et al. 2024, eq. 3):
    −log σ(β·(h − λ·max(0, log π_ref(y_w) − log π(y_w)))), which charges the policy
    whenever the chosen answer's log-prob falls below the reference's.
    """
    for name, t in (
        ("policy_chosen_logps", policy_chosen_logps),
        ("policy_rejected_logps", policy_rejected_logps),
        ("ref_chosen_logps", ref_chosen_logps),
        ("ref_rejected_logps", ref_rejected_logps),
    ):
        _tensor(t, name)
        if t.dim() != 1 or len(t) == 0:
            raise ValueError(
                f"{name} must be 1-D with one summed log-prob per pair, "
                f"got shape {tuple(t.shape)}"
            )
    _same_shape(
        policy_chosen_logps=policy_chosen_logps,
        policy_rejected_logps=policy_rejected_logps,
        ref_chosen_logps=ref_chosen_logps,
        ref_rejected_logps=ref_rejected_logps,
    )
    beta = _positive(beta, "beta")
    if loss_type not in ("sigmoid", "ipo", "dpop"):
        raise ValueError(
            f"loss_type must be 'sigmoid' (DPO), 'ipo' or 'dpop', got {loss_type!r}"
        )
    dpop_lambda = _nonneg(dpop_lambda, "dpop_lambda")
    chosen_logratio = policy_chosen_logps - ref_chosen_logps       # log π/π_ref of y_w
    rejected_logratio = policy_rejected_logps - ref_rejected_logps  # log π/π_ref of y_l
    h = chosen_logratio - rejected_logratio
    if loss_type == "sigmoid":
        losses = -F.logsigmoid(beta * h)
    elif loss_type == "dpop":
        losses = -F.logsigmoid(
            beta * (h - dpop_lambda * (-chosen_logratio).clamp(min=0))
        )
    else:
        losses = (h - 1.0 / (2.0 * beta)) ** 2
    return (
        losses.mean(),
        (beta * chosen_logratio).detach(),
        (beta * rejected_logratio).detach(),
    )


def ipo_loss(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta: float = 0.1):
    """IPO (Azar et al. 2023): ``dpo_loss(..., loss_type="ipo")``.

    Pass log-probs *averaged* over completion tokens (``sequence_logprob(...,
    reduction="mean")``), as TRL's DPOTrainer does for ``loss_type="ipo"``; the paper
    itself writes summed log-probs.
    """
    return dpo_loss(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta, "ipo")


def pair_logps(model, pairs: Sequence[PreferencePair], average: bool = False, template: str = "chat"):
    """(chosen, rejected) log-probs of each pair under ``model``, one batched forward pass."""
    pairs = _pairs(pairs)
    prompts = [format_prompt(p.prompt, template) for p in pairs]
    lp = sequence_logprob(model, prompts + prompts, [p.chosen for p in pairs] + [p.rejected for p in pairs],
                          reduction="mean" if average else "sum")
    return lp[: len(pairs)], lp[len(pairs):]


@dataclass
class DPOHistory:
    loss: list[float] = field(default_factory=list)
    reward_accuracy: list[float] = field(default_factory=list)   # chosen reward > rejected reward
    margin: list[float] = field(default_factory=list)            # mean(chosen − rejected reward)
    chosen_logp: list[float] = field(default_factory=list)       # mean log π(y_w|x), the number Pal et al. watch
    rejected_logp: list[float] = field(default_factory=list)


def train_dpo(
    policy,
    ref,
    pairs: Sequence[PreferencePair],
    steps: int = 100,
    lr: float = 1e-4,
    beta: float = 0.1,
    batch_size: int = 32,
    loss_type: str = "sigmoid",
    dpop_lambda: float = 5.0,
    rpo_alpha: float = 0.0,
    seed: int = 0,
    template: str = "chat",
) -> DPOHistory:
    """Train ``policy`` in place on preference pairs with DPO (or IPO, DPOP).

    ``ref`` stays frozen. The reference log-probs are computed once, up front: the
    reference model never changes, which is why DPO needs it only as a table of numbers.
    ``rpo_alpha > 0`` adds that weight times the chosen answers' per-token negative
    log-likelihood (an SFT term, as in Pang et al. 2024; TRL:
    ``loss_type=["sigmoid", "sft"]``, ``rpo_alpha`` before 0.29).
    """
    pairs, steps, batch_size = (
        _pairs(pairs),
        _posint(steps, "steps"),
        _posint(batch_size, "batch_size"),
    )
    _positive(lr, "lr"), _positive(beta, "beta")
    rpo_alpha = _nonneg(rpo_alpha, "rpo_alpha")
    if loss_type not in ("sigmoid", "ipo", "dpop"):
        raise ValueError(
            f"loss_type must be 'sigmoid' (DPO), 'ipo' or 'dpop', got {loss_type!r}"
        )
    n_chosen = torch.tensor(
        [len(p.chosen) + 1.0 for p in pairs]
    )  # completion tokens incl. EOS
    average = loss_type == "ipo"
    with torch.no_grad():
        ref_c, ref_r = pair_logps(ref, pairs, average, template)
    opt = AdamW(
        [p for p in policy.parameters() if p.requires_grad], lr=lr, weight_decay=0.0
    )
    gen = torch.Generator().manual_seed(shift(seed))
    hist = DPOHistory()
    policy.train()
    for _ in progress(range(steps), desc="dpo"):
        idx = torch.randint(len(pairs), (min(batch_size, len(pairs)),), generator=gen)
        pc, pr = pair_logps(policy, [pairs[i] for i in idx.tolist()], average, template)
        loss, cr, rr = dpo_loss(
            pc, pr, ref_c[idx], ref_r[idx], beta, loss_type, dpop_lambda
        )
        if rpo_alpha > 0:
            per_token = pc if average else pc / n_chosen[idx].to(pc.device)
            loss = loss - rpo_alpha * per_token.mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
        opt.step()
        hist.loss.append(loss.item())
        hist.reward_accuracy.append(float((cr > rr).float().mean()))
        hist.margin.append(float((cr - rr).mean()))
        hist.chosen_logp.append(float(pc.detach().mean()))
        hist.rejected_logp.append(float(pr.detach().mean()))
    policy.eval()
    return hist


def optimal_policy(rewards: torch.Tensor, ref_probs: torch.Tensor, beta: float) -> torch.Tensor:
    """π*(y) = π_ref(y)·exp(r(y)/β) / Z: the maximiser of E[r] − β·KL(π‖π_ref)."""
    _tensor(rewards, "rewards"), _tensor(ref_probs, "ref_probs")
    _same_shape(rewards=rewards, ref_probs=ref_probs)
    beta = _positive(beta, "beta")
    if rewards.dim() != 1 or (ref_probs <= 0).any() or abs(float(ref_probs.sum()) - 1) > 1e-5:
        raise ValueError("ref_probs must be a 1-D distribution with every entry > 0")
    return torch.softmax(ref_probs.log() + rewards / beta, 0)


def dpo_bandit(rewards: torch.Tensor, ref_probs: torch.Tensor, beta: float, steps: int = 400,
               lr: float = 0.1) -> torch.Tensor:
    """DPO on a one-token bandit: the policy a tabular model reaches by minimising the DPO loss.

    Every ordered pair (i, j) of arms is compared, weighted by π_ref(i)·π_ref(j), with the
    Bradley–Terry probability σ(r_i − r_j) that i is preferred as a soft label: the
    expected DPO loss over infinitely many labelled pairs.
    """
    optimal_policy(rewards, ref_probs, beta)  # validates the inputs
    steps = _posint(steps, "steps")
    logits = ref_probs.log().clone().requires_grad_(True)
    w = (ref_probs[:, None] * ref_probs[None, :]).detach()
    p_pref = torch.sigmoid(rewards[:, None] - rewards[None, :])
    opt = AdamW([logits], lr=lr, weight_decay=0.0)
    for _ in range(steps):
        logp = torch.log_softmax(logits, 0)
        ratio = logp - ref_probs.log()
        h = beta * (ratio[:, None] - ratio[None, :])   # implicit reward difference of (i, j)
        loss = (w * -(p_pref * F.logsigmoid(h))).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return torch.softmax(logits.detach(), 0)


# --- RLHF: per-token KL shaping and a PPO-clip step ----------------------------------
def rollout_tensors(prompts: Sequence[str], completions: Sequence[str], finished: Sequence[bool] | None = None):
    """(ids, attention_mask, completion_mask) for sampled completions, right-padded.

    An unfinished completion (it ran out of tokens) gets no EOS: the policy never chose one.
    """
    return _join(prompts, completions, finished)


def token_logprobs(model, ids: torch.Tensor, attention_mask: torch.Tensor, completion_mask: torch.Tensor):
    """(B, T−1) log-probability of each next token, zero outside the completion; differentiable."""
    logits = model(ids, attention_mask=attention_mask)
    logp = F.log_softmax(logits[:, :-1].float(), dim=-1).gather(-1, ids[:, 1:, None]).squeeze(-1)
    return logp * completion_mask[:, 1:]


def kl_penalized_rewards(
    scores: torch.Tensor,
    logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor,
    mask: torch.Tensor,
    beta: float,
) -> torch.Tensor:
    """InstructGPT's per-token reward: a KL penalty, plus the RM score at the end.

    r_t = −β·(log π_t − log π_ref,t), plus the RM score at the last token.
    scores (B,); logprobs, ref_logprobs, mask (B, T). Returns (B, T), zero off the mask.
    """
    _tensor(scores, "scores"), _tensor(logprobs, "logprobs"), _tensor(
        ref_logprobs, "ref_logprobs"
    )
    _same_shape(logprobs=logprobs, ref_logprobs=ref_logprobs, mask=mask)
    if scores.dim() != 1 or logprobs.dim() != 2 or len(scores) != len(logprobs):
        raise ValueError(
            f"scores must be (B,) and logprobs (B, T); got {tuple(scores.shape)} "
            f"and {tuple(logprobs.shape)}"
        )
    beta = _nonneg(beta, "beta")
    m = mask.float()
    if (m.sum(1) == 0).any():
        raise ValueError("every row of mask needs at least one completion token")
    rewards = -beta * (logprobs - ref_logprobs) * m
    last = (m * torch.arange(m.shape[1], device=m.device)).argmax(
        1
    )  # index of each row's last token
    return rewards.scatter_add(1, last[:, None], scores[:, None].to(rewards.dtype))


def whiten(x: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """(x − mean)/std over the masked entries; zero elsewhere."""
    m = mask.float()
    n = m.sum().clamp(min=1)
    mean = (x * m).sum() / n
    var = (((x - mean) * m) ** 2).sum() / n
    return (x - mean) / (var.sqrt() + eps) * m


def ppo_clip_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_eps: float = 0.2,
) -> torch.Tensor:
    """PPO's clipped surrogate, negated, averaged over completion tokens.

    −min(ρ·A, clip(ρ, 1−ε, 1+ε)·A) with ρ = exp(log π − log π_old), per token
    (Schulman et al. 2017, eq. 7).
    """
    _same_shape(
        logprobs=logprobs, old_logprobs=old_logprobs, advantages=advantages, mask=mask
    )
    clip_eps = _positive(clip_eps, "clip_eps")
    ratio = torch.exp(logprobs - old_logprobs)
    surr = torch.minimum(
        ratio * advantages, ratio.clamp(1 - clip_eps, 1 + clip_eps) * advantages
    )
    m = mask.float()
    return -(surr * m).sum() / m.sum().clamp(min=1)


def candidate_rl(ref_logps: torch.Tensor, proxy: torch.Tensor, gold: torch.Tensor, beta: float,
                 steps: int = 300, lr: float = 0.05) -> "RLHistory":
    """The KL-regularised RL objective solved exactly over a fixed set of K candidates per prompt.

    ref_logps, proxy, gold: (P, K). The policy is a softmax over each prompt's candidates,
    started at the reference; every step is an exact gradient step on
    mean_p( E_π[proxy] − β·KL(π‖π_ref) ), taken with Adam, so there is no sampling noise.
    It is a noise-free stand-in for RL, not RL's expected path: Adam rescales each logit's
    step, so it can move answers of tiny probability that a sampler would never draw. Logs
    the proxy, the gold reward and the exact KL at every step, and keeps the final policy
    (P, K) in ``hist.policy``.
    """
    for name, x in (("ref_logps", ref_logps), ("proxy", proxy), ("gold", gold)):
        _tensor(x, name)
    _same_shape(ref_logps=ref_logps, proxy=proxy, gold=gold)
    if ref_logps.dim() != 2 or ref_logps.shape[1] < 2:
        raise ValueError(f"expected (num_prompts, K >= 2) tensors, got shape {tuple(ref_logps.shape)}")
    beta, steps = _nonneg(beta, "beta"), _posint(steps, "steps")
    ref_lp = torch.log_softmax(ref_logps.detach(), 1)
    logits = ref_lp.clone().requires_grad_(True)
    opt = AdamW([logits], lr=_positive(lr, "lr"), weight_decay=0.0)
    hist = RLHistory()
    for _ in range(steps + 1):
        lp = torch.log_softmax(logits, 1)
        p = lp.exp()
        kl = (p * (lp - ref_lp)).sum(1)
        with torch.no_grad():
            hist.reward.append(float((p * proxy).sum(1).mean()))
            hist.gold.append(float((p * gold).sum(1).mean()))
            hist.kl.append(float(kl.mean()))
        objective = ((p * proxy).sum(1) - beta * kl).mean()
        opt.zero_grad()
        (-objective).backward()
        opt.step()
    hist.policy = torch.softmax(logits.detach(), 1)
    return hist


@dataclass
class RLHistory:
    reward: list[float] = field(default_factory=list)   # what the optimiser sees (proxy RM, or verifier)
    gold: list[float] = field(default_factory=list)     # the true objective, when one is given
    kl: list[float] = field(default_factory=list)       # KL(π‖π_ref): k1 estimate (sampled), exact (candidate_rl)
    extra: dict[str, list[float]] = field(default_factory=dict)
    policy: torch.Tensor | None = None                  # candidate_rl: the final policy, (P, K)


def _ref_copy(model):
    ref = copy.deepcopy(model).eval()
    ref.requires_grad_(False)
    return ref


def train_rlhf(policy, ref, prompts: Sequence[str], reward_fn: Callable, steps: int = 30, beta: float = 0.05,
               batch_size: int = 64, lr: float = 1e-3, ppo_epochs: int = 2, clip_eps: float = 0.2,
               max_new_tokens: int = 12, gold_fn: Callable | None = None, seed: int = 0) -> RLHistory:
    """RLHF's RL stage, small: sample, score, shape with the KL penalty, take PPO-clip steps.

    What this implements, exactly: PPO-clip with the per-token KL-shaped reward of
    ``kl_penalized_rewards``; advantages are the undiscounted reward-to-go, whitened over
    the batch. There is **no value head** (no learned critic, no GAE): the whitening's
    mean is the baseline. ``reward_fn(prompts, texts, finished) -> (B,) tensor``;
    ``gold_fn`` has the same signature and is only logged.
    """
    prompts = list(prompts)
    if not prompts:
        raise ValueError("prompts is empty")
    steps, batch_size, ppo_epochs = _posint(steps, "steps"), _posint(batch_size, "batch_size"), _posint(ppo_epochs, "ppo_epochs")
    beta, lr = _nonneg(beta, "beta"), _positive(lr, "lr")
    opt = AdamW(policy.parameters(), lr=lr, weight_decay=0.0)
    rng = random.Random(shift(seed))
    hist = RLHistory()
    for step in progress(range(steps), desc="rlhf"):
        batch = [rng.choice(prompts) for _ in range(batch_size)]
        gens = generate(policy, batch, max_new_tokens=max_new_tokens, temperature=1.0, seed=seed * 7919 + step)
        texts, fin = [g.text for g in gens], [g.finished for g in gens]
        ids, attn, cmask = rollout_tensors(batch, texts, fin)
        m = cmask[:, 1:]
        with torch.no_grad():
            old = token_logprobs(policy, ids, attn, cmask)
            ref_lp = token_logprobs(ref, ids, attn, cmask)
            scores = torch.as_tensor(reward_fn(batch, texts, fin), dtype=torch.float32)
            shaped = kl_penalized_rewards(scores, old, ref_lp, m, beta)
            returns = shaped.flip(1).cumsum(1).flip(1)          # reward-to-go, γ = 1
            adv = whiten(returns, m)
            hist.reward.append(float(scores.mean()))
            hist.kl.append(float(((old - ref_lp) * m).sum(1).mean()))
            if gold_fn is not None:
                hist.gold.append(float(torch.as_tensor(gold_fn(batch, texts, fin), dtype=torch.float32).mean()))
        policy.train()
        for _ in range(ppo_epochs):
            loss = ppo_clip_loss(token_logprobs(policy, ids, attn, cmask), old, adv, m, clip_eps)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
            opt.step()
        policy.eval()
    return hist


# --- GRPO -----------------------------------------------------------------------------
def grpo_advantages(rewards: torch.Tensor, scale: str = "group", unbiased: bool = True,
                    eps: float = 1e-4) -> torch.Tensor:
    """Group-relative advantages for rewards of shape (num_prompts, G).

    ``scale="group"``: (r − mean)/(std + eps) within each group
    (GRPO, Shao et al. 2024).
    The std is Bessel-corrected (divides by G − 1) by default, as TRL's ``.std()`` is;
    ``unbiased=False`` gives the population std. ``scale="none"``: r − mean only, as in
    Dr. GRPO (Liu et al. 2025). A group whose rewards are all equal gets zero advantage.
    """
    _tensor(rewards, "rewards")
    if rewards.dim() != 2 or rewards.shape[1] < 2:
        raise ValueError(
            "rewards must have shape (num_prompts, G) with G >= 2, "
            f"got {tuple(rewards.shape)}"
        )
    if scale not in ("group", "none"):
        raise ValueError(f"scale must be 'group' or 'none', got {scale!r}")
    if not isinstance(unbiased, bool):
        raise TypeError(f"unbiased must be a bool, got {type(unbiased).__name__}")
    eps = _nonneg(eps, "eps")
    centred = rewards - rewards.mean(1, keepdim=True)
    if scale == "none":
        return centred
    std = rewards.std(1, keepdim=True, correction=1 if unbiased else 0)
    return centred / (std + eps)


def k3_kl(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimate of KL(π‖π_ref) from samples of π: e^{ref−logp} − (ref − logp) − 1 ≥ 0.

    Unbiased and always non-negative (Schulman 2020, "Approximating KL divergence"); the
    KL term of the GRPO loss (Shao et al. 2024, eq. 4).
    """
    _tensor(logprobs, "logprobs"), _tensor(ref_logprobs, "ref_logprobs")
    _same_shape(logprobs=logprobs, ref_logprobs=ref_logprobs)
    d = ref_logprobs - logprobs
    return torch.exp(d) - d - 1


def grpo_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor | None,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_eps: float = 0.2,
    beta: float = 0.04,
    length_norm: str = "sequence",
    max_len: int | None = None,
) -> torch.Tensor:
    """The clipped GRPO objective, negated.

    Per-token tensors are (N, T); advantages (N,).
    per token: −[min(ρ·A, clip(ρ, 1±ε)·A) − β·k3]; then ``length_norm`` says how tokens
    are averaged:
      "sequence"  mean over each sequence's tokens (1/|o_i|), then over sequences:
                  GRPO's paper
      "token"     sum over all tokens / total tokens: DAPO's token-level average
                  (TRL's default)
      "constant"  sum over all tokens / (N · max_len): Dr. GRPO, no length bias
    ``beta=0`` (or ``ref_logprobs=None``) drops the KL term, as TRL's default does.
    """
    _same_shape(logprobs=logprobs, old_logprobs=old_logprobs, mask=mask)
    _tensor(advantages, "advantages")
    if advantages.dim() != 1 or len(advantages) != len(logprobs):
        raise ValueError(
            f"advantages must be (N,) with N = {len(logprobs)}, "
            f"got shape {tuple(advantages.shape)}"
        )
    if length_norm not in ("sequence", "token", "constant"):
        raise ValueError(
            "length_norm must be 'sequence', 'token' or 'constant', "
            f"got {length_norm!r}"
        )
    beta, clip_eps = _nonneg(beta, "beta"), _positive(clip_eps, "clip_eps")
    m = mask.float()
    if (m.sum(1) == 0).any():
        raise ValueError("every row of mask needs at least one completion token")
    ratio = torch.exp(logprobs - old_logprobs)
    A = advantages[:, None]
    per_tok = -torch.minimum(ratio * A, ratio.clamp(1 - clip_eps, 1 + clip_eps) * A)
    if beta > 0 and ref_logprobs is not None:
        _same_shape(logprobs=logprobs, ref_logprobs=ref_logprobs)
        per_tok = per_tok + beta * k3_kl(logprobs, ref_logprobs)
    per_tok = per_tok * m
    if length_norm == "sequence":
        return (per_tok.sum(1) / m.sum(1)).mean()
    if length_norm == "token":
        return per_tok.sum() / m.sum()
    if max_len is None:
        raise ValueError(
            "length_norm='constant' needs max_len "
            "(the completion budget, e.g. max_new_tokens)"
        )
    return per_tok.sum() / (len(logprobs) * _posint(max_len, "max_len"))


def train_grpo(policy, task: str | Task, items: Sequence[Item], steps: int = 12, num_generations: int = 8,
               prompts_per_step: int = 32, lr: float = 1e-3, beta: float = 0.0, clip_eps: float = 0.2,
               scale: str = "group", length_norm: str = "sequence", inner_steps: int = 1, ref=None,
               seed: int = 0, template: str = "chat") -> RLHistory:
    """GRPO with the task's verifier as the reward (1 right, 0 wrong), in place on ``policy``.

    Each step samples ``num_generations`` completions for ``prompts_per_step`` prompts,
    turns the rewards into group-relative advantages and takes ``inner_steps`` clipped
    updates. ``extra["zero_std_groups"]`` logs the share of groups that taught nothing.
    """
    t = task if isinstance(task, Task) else get_task(task)
    items = list(items)
    if not items:
        raise ValueError("items is empty")
    steps, G = _posint(steps, "steps"), _posint(num_generations, "num_generations")
    if G < 2:
        raise ValueError(f"num_generations must be >= 2 for a group baseline, got {G}")
    P, inner_steps = _posint(prompts_per_step, "prompts_per_step"), _posint(inner_steps, "inner_steps")
    beta = _nonneg(beta, "beta")
    if beta > 0 and ref is None:
        ref = _ref_copy(policy)
    opt = AdamW(policy.parameters(), lr=_positive(lr, "lr"), weight_decay=0.0)
    rng = random.Random(shift(seed))
    hist = RLHistory(extra={"zero_std_groups": [], "mean_length": []})
    max_new = t.max_answer_len + 1
    for step in progress(range(steps), desc="grpo"):
        batch = rng.sample(items, min(P, len(items)))
        prompts = [format_prompt(it.prompt, template) for it in batch]
        gens = generate(policy, prompts, max_new_tokens=max_new, temperature=1.0, num_return_sequences=G,
                        seed=seed * 7919 + step)
        rewards = torch.tensor([float(t.verify(batch[i // G], g.text)) for i, g in enumerate(gens)]).view(-1, G)
        adv = grpo_advantages(rewards, scale=scale).view(-1)
        ids, attn, cmask = rollout_tensors([g.prompt for g in gens], [g.text for g in gens],
                                           [g.finished for g in gens])
        m = cmask[:, 1:]
        with torch.no_grad():
            old = token_logprobs(policy, ids, attn, cmask)
            ref_lp = token_logprobs(ref, ids, attn, cmask) if beta > 0 else None
        hist.reward.append(float(rewards.mean()))
        hist.extra["zero_std_groups"].append(float((rewards.std(1) == 0).float().mean()))
        hist.extra["mean_length"].append(float(m.sum(1).float().mean()))
        # Without a KL term, rows of all-equal groups (advantage 0) carry no gradient: skip their
        # compute, but keep them in the normaliser, as TRL does (they dilute the other groups).
        # With beta > 0 their k3 term does carry gradient, so every row is kept.
        keep = adv != 0 if beta == 0 else torch.ones_like(adv, dtype=torch.bool)
        if not bool(keep.any()):
            continue
        if length_norm == "token":
            frac = float(m[keep].sum() / m.sum())
        else:
            frac = float(keep.sum()) / len(keep)
        policy.train()
        for _ in range(inner_steps):
            lp = token_logprobs(policy, ids[keep], attn[keep], cmask[keep])
            loss = frac * grpo_loss(lp, old[keep], None if ref_lp is None else ref_lp[keep], adv[keep],
                                    m[keep], clip_eps, beta, length_norm, max_new)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
            opt.step()
        policy.eval()
    return hist


# --- RLAIF: a judge with known biases ---------------------------------------------------
@dataclass(frozen=True)
class BiasedJudge:
    """A simulated AI judge comparing two answers, with biases we set and can measure.

    It knows the right answer (a strong judge), but:
      verbosity  when the two answers differ in length by ≥ 3 characters, it prefers
                 the longer one with this probability (LLM judges' verbosity bias,
                 Zheng et al. 2023);
      position   with this probability it simply picks the answer shown first
                 (position bias);
      noise      otherwise it picks the wrong answer with this probability.
    """

    verbosity: float = 0.8
    position: float = 0.15
    noise: float = 0.05

    def __post_init__(self):
        for name in ("verbosity", "position", "noise"):
            v = getattr(self, name)
            if (
                isinstance(v, bool)
                or not isinstance(v, (int, float))
                or not 0 <= v <= 1
            ):
                raise ValueError(
                    f"BiasedJudge.{name} must be a probability in [0, 1], got {v!r}"
                )

    def prefers_first(
        self, first: str, second: str, first_is_right: bool, rng: random.Random
    ) -> bool:
        """Does the judge prefer ``first`` (shown first) over ``second``?"""
        if rng.random() < self.position:
            return True
        if abs(len(first) - len(second)) >= 3 and rng.random() < self.verbosity:
            return len(first) > len(second)
        return first_is_right if rng.random() >= self.noise else not first_is_right


def judge_pairs(judge: BiasedJudge, candidates: Sequence[tuple[str, str, str, bool]], seed: int = 0,
                swap: bool = False) -> list[PreferencePair]:
    """Label (prompt, a, b, a_is_right) candidates with ``judge``; ``swap`` shows b first."""
    if not isinstance(judge, BiasedJudge):
        raise TypeError(f"judge must be a BiasedJudge, got {type(judge).__name__}")
    rng = random.Random(shift(seed))
    out = []
    for prompt, a, b, a_right in candidates:
        first_a = judge.prefers_first(a, b, a_right, rng) if not swap else not judge.prefers_first(b, a, not a_right, rng)
        out.append(PreferencePair(prompt, a, b, source="ai_judge") if first_a
                   else PreferencePair(prompt, b, a, source="ai_judge"))
    return out


# --- exercise checkers ----------------------------------------------------------------------
def check_dpo_loss(fn) -> None:
    """``fn(pc, pr, rc, rr, beta) -> (loss, chosen_rewards, rejected_rewards)``, DPO as in the paper."""
    g = torch.Generator().manual_seed(0)
    cases = [
        (torch.tensor([-3.0]), torch.tensor([-3.0]), torch.tensor([-3.0]), torch.tensor([-3.0]), 0.1),
        (torch.tensor([-2.0, -5.0]), torch.tensor([-6.0, -4.0]), torch.tensor([-3.0, -5.0]),
         torch.tensor([-4.0, -4.5]), 0.5),
        tuple(-torch.rand(8, generator=g) * 10 for _ in range(4)) + (0.1,),
    ]
    for pc, pr, rc, rr, beta in cases:
        want_loss, want_c, want_r = dpo_loss(pc, pr, rc, rr, beta)
        got = fn(pc.clone(), pr.clone(), rc.clone(), rr.clone(), beta)
        assert isinstance(got, tuple) and len(got) == 3, "return (loss, chosen_rewards, rejected_rewards)"
        loss, cr, rj = (torch.as_tensor(x, dtype=torch.float32) for x in got)
        assert loss.dim() == 0, f"loss must be a scalar (mean over pairs), got shape {tuple(loss.shape)}"
        assert torch.allclose(cr, want_c, atol=1e-5), \
            f"chosen_rewards should be beta * (policy - ref) log-probs = {want_c.tolist()}, got {cr.tolist()}"
        assert torch.allclose(rj, want_r, atol=1e-5), \
            f"rejected_rewards should be {want_r.tolist()}, got {rj.tolist()}"
        assert torch.allclose(loss, want_loss, atol=1e-5), \
            f"loss for beta={beta}: expected {want_loss.item():.6f}, got {loss.item():.6f} " \
            "(mean over pairs of -log sigmoid(beta * ((pc - rc) - (pr - rr))))"
    x = torch.tensor([-2.0, -1.0], requires_grad=True)
    loss, _, _ = fn(x, torch.tensor([-3.0, -3.0]), torch.tensor([-2.0, -2.0]), torch.tensor([-3.0, -3.0]), 0.1)
    loss.backward()
    assert x.grad is not None and (x.grad < 0).all(), "the loss must fall as the chosen log-prob rises (keep it differentiable)"
    print("✓ dpo_loss matches Rafailov et al. 2023, eq. 7, and its implicit rewards")


def check_grpo_advantages(fn) -> None:
    """``fn(rewards (P, G)) -> advantages``: group-normalised with the Bessel-corrected std, eps=1e-4."""
    cases = [torch.tensor([[1.0, 1.0, 1.0, 0.0]]), torch.tensor([[0.0, 0.0, 0.0, 0.0], [1.0, 0.0, 1.0, 0.0]]),
             torch.tensor([[0.2, 0.9, 0.4], [3.0, 1.0, 2.0]])]
    for r in cases:
        want = grpo_advantages(r)
        got = torch.as_tensor(fn(r.clone()), dtype=torch.float32)
        assert got.shape == r.shape, f"advantages must have the rewards' shape {tuple(r.shape)}, got {tuple(got.shape)}"
        same = (r == r[:, :1]).all(1)
        if same.any():
            assert torch.allclose(got[same], torch.zeros_like(got[same])), \
                "an all-equal group must get zero advantage (no NaN)"
        pop = grpo_advantages(r, unbiased=False)
        assert not (torch.allclose(got, pop, atol=1e-4) and not torch.allclose(want, pop, atol=1e-4)), \
            "you divided by the population std; use the Bessel-corrected one (torch's default .std(), as TRL does)"
        assert torch.allclose(got, want, atol=1e-4), \
            f"for rewards {r.tolist()}: expected {want.tolist()}, got {got.tolist()}"
    print("✓ grpo_advantages: (r - group mean) / (Bessel std + 1e-4), all-equal groups give 0")
