"""Catastrophic forgetting and three ways to resist it: replay, EWC and self-distillation.

Each mitigation plugs into ``ftlab.train`` unchanged:

- **replay** changes the data: ``mix_replay`` puts a ratio of old-task examples into the
  new-task stream;
- **EWC** (Kirkpatrick et al. 2017) adds ``(λ/2) Σ F_i (θ_i − θ*_i)²`` as ``extra_loss``,
  with F the diagonal Fisher information of the *starting* model, estimated from answers
  the model samples itself (``fisher_diagonal``);
- **self-distillation** adds ``β · KL(p_base ‖ p_θ)`` on general prompts as ``extra_loss``
  (``KLToBase``), so the model keeps answering old prompts the way the base did;
- **weight-space ensembling** (WiSE-FT, Wortsman et al. 2022) needs no training at all:
  ``interpolate`` mixes the base's and the fine-tune's weights after the run.

LoRA needs nothing here: ``ftlab.peft.add_lora`` already is the fourth mitigation.
"""
from __future__ import annotations

import random
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .chat import Example, format_prompt, sft_tensors
from .generation import generate, sequence_logprob
from .seeds import shift
from .tasks import LETTERS, PRETRAIN_TASKS, Item, Task, get_task

__all__ = ["SECOND_LETTER", "at_matched", "general_examples", "mix_replay", "fisher_diagonal", "ewc_penalty", "EWC", "KLToBase",
           "interpolate", "check_ewc_penalty"]


# --- this chapter's new task ----------------------------------------------------------------
def _second_letter(rng) -> Item:
    word = "".join(rng.choice(LETTERS) for _ in range(rng.randint(3, 7)))
    return Item("second", f"second {word}", word[1])


# A skill no checkpoint has seen, simple enough that full fine-tuning learns it in about
# 50 steps: short runs, so one page can afford eight of them.
SECOND_LETTER = Task("second", "the second letter of a word (held out; chapter 07)", _second_letter, False,
                     max_answer_len=2)


def at_matched(new: Sequence[float], old: Sequence[float], level: float) -> float | None:
    """``old`` where ``new`` first reaches ``level``, linearly interpolated between evaluations.

    ``new`` and ``old`` are one run's evaluations in step order (new-task accuracy and
    old-task retention). ``None`` when the run never reaches ``level``. Comparing runs
    here, rather than at the same step, compares them at equal learning.
    """
    new, old = [float(v) for v in new], [float(v) for v in old]
    if len(new) != len(old) or not new:
        raise ValueError(f"new and old must be non-empty and the same length, got {len(new)} and {len(old)}")
    if isinstance(level, bool) or not isinstance(level, (int, float)) or not 0 <= level <= 1:
        raise ValueError(f"level must be in [0, 1], got {level!r}")
    for i, v in enumerate(new):
        if v >= level:
            if i == 0:
                return old[0]
            w = (level - new[i - 1]) / (v - new[i - 1])
            return old[i - 1] + w * (old[i] - old[i - 1])
    return None


def read_points(new: Sequence[float], levels: Sequence[float]) -> list[int]:
    """The evaluations ``at_matched`` reads at ``levels``, plus the first and the last.

    ``at_matched`` interpolates between the evaluation where ``new`` first reaches a
    level and the one before it, so scoring the old tasks at these indices only gives
    the same comparison as scoring them at every evaluation, for a fraction of the cost.
    """
    new = [float(v) for v in new]
    if not new:
        raise ValueError("new is empty")
    for lv in levels:
        if isinstance(lv, bool) or not isinstance(lv, (int, float)) or not 0 <= lv <= 1:
            raise ValueError(f"every level must be in [0, 1], got {lv!r}")
    keep = {0, len(new) - 1}
    for lv in levels:
        i = next((i for i, v in enumerate(new) if v >= lv), None)
        if i is not None:
            keep |= {max(i - 1, 0), i}
    return sorted(keep)


def _check_model(model) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")


def general_examples(n: int, seed: int = 0, tasks: Sequence[str] = PRETRAIN_TASKS, split: str = "train",
                     template: str = "chat") -> list[Example]:
    """``n`` examples spread evenly over ``tasks`` (default: every pretraining task): "general data"."""
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    if isinstance(tasks, str) or not tasks:
        raise ValueError(f"tasks must be a non-empty list of task names, got {tasks!r}")
    out = []
    for i, name in enumerate(tasks):
        t = get_task(name)
        k = n // len(tasks) + (i < n % len(tasks))
        if k == 0:
            continue
        cap = len(t.finite) if t.finite else k
        items = t.items(min(k, cap), seed=seed, split=split)
        out += [Example(format_prompt(it.prompt, template), it.answer) for it in items]
        out += out[-len(items):][: k - len(items)]  # a closed set (facts) repeats to fill its share
    random.Random(shift(seed)).shuffle(out)
    return out


def mix_replay(new: Sequence[Example], old: Sequence[Example], ratio: float, seed: int = 0) -> list[Example]:
    """All of ``new`` plus enough of ``old`` that old examples are ``ratio`` of the mix, shuffled.

    ``ratio=0.2`` means one example in five comes from the old distribution. Old examples
    are drawn without replacement when there are enough, else cycled.
    """
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0 <= ratio < 1:
        raise ValueError(f"ratio must be in [0, 1), got {ratio!r}")
    new, old = list(new), list(old)
    if not new:
        raise ValueError("new is empty: nothing to fine-tune on")
    for ex in new + old:
        if not isinstance(ex, Example):
            raise TypeError(f"expected ftlab.Example, got {type(ex).__name__}: {ex!r}")
    k = round(len(new) * ratio / (1 - ratio))
    if k and not old:
        raise ValueError(f"ratio={ratio} needs old examples, but old is empty")
    rng = random.Random(shift(seed))
    picked = rng.sample(old, k) if k <= len(old) else [old[i % len(old)] for i in range(k)]
    mix = new + picked
    rng.shuffle(mix)
    return mix


# --- EWC --------------------------------------------------------------------------------
def fisher_diagonal(
    model,
    prompts: Sequence[str],
    samples_per_prompt: int = 1,
    max_new_tokens: int = 24,
    seed: int = 0,
    normalize: bool = True,
) -> dict[str, torch.Tensor]:
    """Diagonal Fisher information of ``model`` at its current weights.

    Each entry is E[(∂ log p(y|x) / ∂θ)²], where y is **sampled from the model
    itself** (temperature 1), not taken from labels: that is
    the Fisher of the model's predictive distribution, the curvature EWC needs. Squaring
    the gradient of the *labels'* log-likelihood gives the "empirical Fisher" instead
    (Kunstner et al. 2019). One backward pass per sampled answer, so each square is a
    per-example gradient squared, never a squared batch mean. With ``normalize`` the
    entries are divided by their mean, so λ does not depend on the model's scale.
    """
    _check_model(model)
    if isinstance(prompts, str) or not prompts:
        raise ValueError("prompts must be a non-empty list of prompt strings")
    if not isinstance(samples_per_prompt, int) or samples_per_prompt < 1:
        raise ValueError(
            f"samples_per_prompt must be a positive int, got {samples_per_prompt!r}"
        )
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    if not params:
        raise ValueError("model has no trainable parameters to compute a Fisher for")
    gens = generate(
        model,
        list(prompts),
        max_new_tokens=max_new_tokens,
        temperature=1.0,
        seed=seed,
        num_return_sequences=samples_per_prompt,
    )
    fisher = {n: torch.zeros_like(p) for n, p in params.items()}
    was_training = model.training
    model.eval()
    for g in gens:
        model.zero_grad(set_to_none=True)
        sequence_logprob(
            model, [g.prompt], [g.text], add_eos=g.finished or not g.text
        ).sum().backward()
        for n, p in params.items():
            if p.grad is not None:
                fisher[n] += p.grad.detach() ** 2
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    fisher = {n: f / len(gens) for n, f in fisher.items()}
    if normalize:
        mean = torch.cat([f.flatten() for f in fisher.values()]).mean().clamp(min=1e-12)
        fisher = {n: f / mean for n, f in fisher.items()}
    return fisher


def ewc_penalty(model, fisher: dict[str, torch.Tensor], anchor: dict[str, torch.Tensor], lam: float) -> torch.Tensor:
    """(λ/2) · Σ_i F_i (θ_i − θ*_i)², summed over the parameters named in ``fisher``."""
    _check_model(model)
    if isinstance(lam, bool) or not isinstance(lam, (int, float)) or lam < 0:
        raise ValueError(f"lam must be a number >= 0, got {lam!r}")
    if set(fisher) != set(anchor):
        raise ValueError(f"fisher and anchor name different parameters: {sorted(set(fisher) ^ set(anchor))[:3]}")
    named = dict(model.named_parameters())
    missing = sorted(set(fisher) - set(named))
    if missing:
        raise ValueError(f"fisher names parameters the model lacks: {missing[:3]}")
    total = next(iter(named.values())).new_zeros(())
    for n, f in fisher.items():
        total = total + (f * (named[n] - anchor[n]) ** 2).sum()
    return 0.5 * lam * total


class EWC:
    """Elastic weight consolidation as an ``extra_loss`` for ``ftlab.train``.

    Snapshot the weights θ* and their Fisher F before fine-tuning; every step then pays
    (λ/2) Σ F_i (θ_i − θ*_i)² for moving the weights the old tasks rely on.
    """

    def __init__(self, model, prompts: Sequence[str], lam: float, samples_per_prompt: int = 1, seed: int = 0):
        if isinstance(lam, bool) or not isinstance(lam, (int, float)) or lam < 0:
            raise ValueError(f"lam must be a number >= 0, got {lam!r}")
        self.lam = lam
        self.fisher = fisher_diagonal(model, prompts, samples_per_prompt, seed=seed)
        self.anchor = {n: p.detach().clone() for n, p in model.named_parameters() if n in self.fisher}

    def __call__(self, model, ids, loss_mask) -> torch.Tensor:
        return ewc_penalty(model, self.fisher, self.anchor, self.lam)


# --- self-distillation --------------------------------------------------------------------
class KLToBase:
    """β · KL(p_base ‖ p_θ) on general prompts: an ``extra_loss`` for ``ftlab.train``.

    The base model answers ``prompts`` once (greedy); its next-token distributions over
    those answers are stored. Each training step draws ``batch_size`` of them and
    penalises the fine-tuned model for drifting away, token by token, where the answer
    is. The cost is one extra forward and backward pass of a small batch per step.
    """

    def __init__(
        self,
        base_model,
        prompts: Sequence[str],
        beta: float,
        batch_size: int = 16,
        max_new_tokens: int = 24,
        seed: int = 0,
    ):
        _check_model(base_model)
        if isinstance(beta, bool) or not isinstance(beta, (int, float)) or beta < 0:
            raise ValueError(f"beta must be a number >= 0, got {beta!r}")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        if isinstance(prompts, str) or not prompts:
            raise ValueError("prompts must be a non-empty list of prompt strings")
        self.beta, self.batch_size = beta, batch_size
        gens = generate(base_model, list(prompts), max_new_tokens=max_new_tokens)
        self.ids, self.mask = sft_tensors([Example(g.prompt, g.text) for g in gens])
        with torch.no_grad():
            self.base_logp = F.log_softmax(
                base_model(self.ids.to(base_model.device)).float(), -1
            ).cpu()  # (N, T, V)
        self.gen = torch.Generator().manual_seed(shift(seed))

    def __call__(self, model, ids=None, loss_mask=None) -> torch.Tensor:
        idx = torch.randint(len(self.ids), (self.batch_size,), generator=self.gen)
        b_ids, b_mask = (
            self.ids[idx],
            self.mask[idx, 1:].float(),
        )  # position t predicts token t+1
        T = int((b_ids != 0).sum(1).max())
        b_ids, b_mask, ref = (
            b_ids[:, :T].to(model.device),
            b_mask[:, : T - 1],
            self.base_logp[idx, : T - 1],
        )
        logp = F.log_softmax(model(b_ids)[:, :-1].float(), -1)  # (B, T-1, V)
        ref, b_mask = ref.to(logp.device), b_mask.to(logp.device)
        kl = (ref.exp() * (ref - logp)).sum(
            -1
        )  # (B, T-1): KL(base ‖ model) per position
        return self.beta * (kl * b_mask).sum() / b_mask.sum().clamp(min=1)


# --- weight-space ensembling ------------------------------------------------------------------
@torch.no_grad()
def interpolate(base_model, finetuned, alpha: float, out=None):
    """WiSE-FT (Wortsman et al. 2022): weights (1 − alpha)·θ_base + alpha·θ_finetuned.

    ``alpha=0`` is the base, ``alpha=1`` the fine-tune; values between trace a
    learning–forgetting curve from one finished run, with no extra training. The two
    models must share an architecture (for LoRA, merge the adapter first). Writes into
    ``out`` (a model of the same shape) if given, else into a copy of ``finetuned``;
    returns it.
    """
    _check_model(base_model)
    _check_model(finetuned)
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 <= alpha <= 1:
        raise ValueError(f"alpha must be in [0, 1], got {alpha!r}")
    a, b = base_model.state_dict(), finetuned.state_dict()
    if a.keys() != b.keys() or any(a[k].shape != b[k].shape for k in a):
        raise ValueError("base_model and finetuned have different parameters; merge any adapter first")
    if out is None:
        import copy
        out = copy.deepcopy(finetuned)
    _check_model(out)
    out.load_state_dict({k: (1 - alpha) * a[k] + alpha * b[k] if a[k].is_floating_point() else b[k] for k in a})
    return out


# --- the exercise checker -------------------------------------------------------------------
def check_ewc_penalty(fn) -> None:
    """Check a reader's ``fn(model, fisher, anchor, lam) -> scalar tensor`` against the EWC formula."""
    if not callable(fn):
        raise TypeError(f"pass your function itself, got {type(fn).__name__}")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2))
    anchor = {n: p.detach().clone() for n, p in model.named_parameters()}
    fisher = {n: torch.rand_like(p) for n, p in model.named_parameters()}
    got = fn(model, fisher, anchor, 3.0)
    assert torch.is_tensor(got) and got.dim() == 0, f"return a scalar tensor, got {got!r}"
    assert abs(float(got.detach())) < 1e-9, f"at θ = θ* the penalty must be 0, got {float(got.detach()):.4g}"
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    got = fn(model, fisher, anchor, 3.0)
    want = ewc_penalty(model, fisher, anchor, 3.0)
    assert got.requires_grad, "the penalty must stay differentiable: do not detach the parameters"
    assert torch.allclose(got, want, rtol=1e-5), (
        f"got {float(got.detach()):.5f}, expected (λ/2)·Σ F (θ − θ*)² = {float(want.detach()):.5f}"
        + (" (did you forget the 1/2?)" if torch.allclose(got, 2 * want, rtol=1e-5) else ""))
    zero_f = {n: torch.zeros_like(f) for n, f in fisher.items()}
    assert abs(float(fn(model, zero_f, anchor, 3.0).detach())) < 1e-9, "with F = 0 nothing is protected: expect 0"
    print(f"✓ EWC penalty matches (λ/2)·Σ F (θ − θ*)² ({float(want.detach()):.4f} on the test model)")
