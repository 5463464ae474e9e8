"""Knowledge distillation: a small student learns from a larger teacher.

The three flavours the distillation chapter teaches, from scratch:

* **logit distillation** (Hinton et al. 2015): the student matches the teacher's whole
  next-token distribution, softened by a temperature T: :func:`kd_loss`, and
  :func:`distillation_loss` mixes it with the usual hard-label cross-entropy;
* **response distillation** (sequence-level KD, Kim & Rush 2016; the Alpaca/Vicuna
  recipe): the teacher writes the answers, the student is fine-tuned on them with plain
  SFT: :func:`teacher_label`;
* **reasoning distillation** (Hsieh et al. 2023, "Distilling step-by-step"): the same,
  but the student also learns the teacher's worked steps: ``teacher_label(keep_steps=True)``.

Which way the KL points matters. ``kd_loss`` is the **forward** KL, KL(p_teacher ‖ p_student):
the student pays wherever the teacher puts mass and it does not, so it spreads out to
cover every mode ("mode-covering"). :func:`reverse_kl` is KL(p_student ‖ p_teacher): the
student pays for mass where the teacher has none, so it settles on one mode
("mode-seeking"). MiniLLM (Gu et al. 2024) optimises the sequence-level reverse KL by
policy gradient on the student's own samples; ``reverse_kl`` on fixed teacher-written
text is only its per-token piece. :func:`generalized_jsd` (GKD, Agarwal et al.
2024) interpolates: ``beta=0`` is the forward KL, ``beta=1`` the reverse KL, as in TRL's
``GKDTrainer``.

Shapes: logits are ``(B, T, V)`` or ``(N, V)``; ``mask`` is ``(B, T)`` or ``(N,)`` with 1 on
the positions that count. Every loss averages over the counted positions
(``reduction="none"`` keeps one value per position instead), after flattening, so a batch of long rows weighs tokens equally (``F.kl_div(reduction="batchmean")``
on a 3-D tensor would divide by B only, a classic bug).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .chat import Example, format_prompt, sft_tensors
from .generation import generate
from .tasks import final_answer
from .train import History, train

Tensor = torch.Tensor


# --- input checks -------------------------------------------------------------------
def _check_temperature(T) -> float:
    if isinstance(T, bool) or not isinstance(T, (int, float)) or not math.isfinite(T) or T <= 0:
        raise ValueError(f"temperature T must be a finite number > 0, got {T!r}")
    return float(T)


def _flatten(student_logits, teacher_logits, mask) -> tuple[Tensor, Tensor, Tensor]:
    """(…, V) logits → (N, V) rows; mask → (N,) float weights (all ones by default)."""
    for name, t in (("student_logits", student_logits), ("teacher_logits", teacher_logits)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if not t.is_floating_point():
            raise TypeError(f"{name} must be floating point, got dtype {t.dtype}")
        if t.dim() not in (2, 3):
            raise ValueError(f"{name} must be (N, V) or (B, T, V), got shape {tuple(t.shape)}")
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"student_logits {tuple(student_logits.shape)} and teacher_logits "
                         f"{tuple(teacher_logits.shape)} differ in shape (same vocabulary and positions needed)")
    V = student_logits.shape[-1]
    s, t = student_logits.reshape(-1, V).float(), teacher_logits.reshape(-1, V).float()
    if mask is None:
        m = torch.ones(s.shape[0], device=s.device)
    else:
        if not isinstance(mask, torch.Tensor):
            raise TypeError(f"mask must be a torch.Tensor, got {type(mask).__name__}")
        if tuple(mask.shape) != tuple(student_logits.shape[:-1]):
            raise ValueError(f"mask has shape {tuple(mask.shape)}, expected {tuple(student_logits.shape[:-1])} "
                             f"(the logits' shape without the vocabulary)")
        m = mask.reshape(-1).float().to(s.device)
        if m.sum() <= 0:
            raise ValueError("mask selects no position")
    return s, t, m


def _masked_mean(per_row: Tensor, m: Tensor) -> Tensor:
    return (per_row * m).sum() / m.sum()


def _reduce(per_row: Tensor, m: Tensor, reduction: str, shape) -> Tensor:
    """"mean" over counted positions, or "none": one value per position, shaped like the logits without V."""
    if reduction == "mean":
        return _masked_mean(per_row, m)
    if reduction == "none":
        return (per_row * m).reshape(shape)
    raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")


# --- the losses ---------------------------------------------------------------------
def kd_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    T: float = 2.0,
    mask: Tensor | None = None,
    reduction: str = "mean",
) -> Tensor:
    """Hinton's soft-target loss: T² · KL(p_teacher^T ‖ p_student^T).

    Averaged over (masked) positions. p^T = softmax(logits / T). The T² keeps the
    gradient's size roughly independent of T, so the weight between this loss and a
    hard-label loss means the same at any T.
    """
    T = _check_temperature(T)
    s, t, m = _flatten(student_logits, teacher_logits, mask)
    log_ps = F.log_softmax(s / T, dim=-1)                      # (N, V) student
    log_pt = F.log_softmax(t.detach() / T, dim=-1)  # (N, V) teacher: a fixed target
    kl = (log_pt.exp() * (log_pt - log_ps)).sum(-1)  # (N,) KL(teacher ‖ student)
    return T * T * _reduce(kl, m, reduction, student_logits.shape[:-1])


def reverse_kl(student_logits: Tensor, teacher_logits: Tensor, T: float = 1.0, mask: Tensor | None = None,
               reduction: str = "mean") -> Tensor:
    """KL(p_student ‖ p_teacher), averaged over (masked) positions: the mode-seeking direction.

    The per-token piece of MiniLLM's objective, which applies it to the student's own samples.
    """
    T = _check_temperature(T)
    s, t, m = _flatten(student_logits, teacher_logits, mask)
    log_ps = F.log_softmax(s / T, dim=-1)
    log_pt = F.log_softmax(t.detach() / T, dim=-1)
    kl = (log_ps.exp() * (log_ps - log_pt)).sum(-1)            # (N,) KL(student ‖ teacher)
    return T * T * _reduce(kl, m, reduction, student_logits.shape[:-1])


def generalized_jsd(student_logits: Tensor, teacher_logits: Tensor, beta: float = 0.5, T: float = 1.0,
                    mask: Tensor | None = None, reduction: str = "mean") -> Tensor:
    """GKD's generalized Jensen-Shannon divergence (Agarwal et al. 2024, eq. 1), as TRL's
    ``GKDTrainer.generalized_jsd_loss`` computes it.

    M = beta·p_teacher + (1 − beta)·p_student;  JSD = beta·KL(p_teacher ‖ M) + (1 − beta)·KL(p_student ‖ M).
    As beta → 0, JSD/beta → the forward KL(teacher ‖ student), and (1 − beta) → 0 gives the
    reverse KL(student ‖ teacher) likewise; like TRL, ``beta=0`` and ``beta=1`` return those
    two KLs themselves (the mixture formula would give 0 there). Unlike TRL, which calls
    it at T = 1 with no T² factor, this multiplies by T² as ``kd_loss`` does; the two
    agree at T = 1.
    """
    T = _check_temperature(T)
    if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta must be a number in [0, 1], got {beta!r}")
    s, t, m = _flatten(student_logits, teacher_logits, mask)
    log_ps = F.log_softmax(s / T, dim=-1)
    log_pt = F.log_softmax(t.detach() / T, dim=-1)
    if beta == 0.0:
        jsd = (log_pt.exp() * (log_pt - log_ps)).sum(-1)
    elif beta == 1.0:
        jsd = (log_ps.exp() * (log_ps - log_pt)).sum(-1)
    else:
        # log M by logsumexp: a true mixture of probabilities, not of log-probabilities.
        log_m = torch.logsumexp(torch.stack([log_pt + math.log(beta), log_ps + math.log(1 - beta)]), dim=0)
        kl_s = (log_ps.exp() * (log_ps - log_m)).sum(-1)
        kl_t = (log_pt.exp() * (log_pt - log_m)).sum(-1)
        jsd = beta * kl_t + (1 - beta) * kl_s
    return T * T * _reduce(jsd, m, reduction, student_logits.shape[:-1])


def distillation_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    labels: Tensor,
    T: float = 2.0,
    alpha: float = 0.5,
    mask: Tensor | None = None,
) -> Tensor:
    """alpha · kd_loss(T) + (1 − alpha) · cross-entropy on the hard ``labels``.

    Both terms are taken over the same positions.
    labels: the target token ids, shaped like the logits without the vocabulary.
    alpha=1 is pure logit distillation; alpha=0 is plain SFT on the labels.
    """
    if (
        isinstance(alpha, bool)
        or not isinstance(alpha, (int, float))
        or not 0.0 <= alpha <= 1.0
    ):
        raise ValueError(f"alpha must be a number in [0, 1], got {alpha!r}")
    s, _, m = _flatten(student_logits, teacher_logits, mask)
    if not isinstance(labels, torch.Tensor) or tuple(labels.shape) != tuple(
        student_logits.shape[:-1]
    ):
        shape = (
            tuple(labels.shape)
            if isinstance(labels, torch.Tensor)
            else type(labels).__name__
        )
        raise ValueError(
            f"labels must be a tensor of shape {tuple(student_logits.shape[:-1])}, "
            f"got {shape}"
        )
    ce = F.cross_entropy(s, labels.reshape(-1).to(s.device), reduction="none")  # (N,)
    hard = _masked_mean(ce, m)
    if alpha == 0.0:
        return hard
    return alpha * kd_loss(student_logits, teacher_logits, T, mask) + (1 - alpha) * hard


def soft_targets(logits: Tensor, T: float = 1.0) -> Tensor:
    """softmax(logits / T): the teacher's distribution softened by temperature T."""
    T = _check_temperature(T)
    if not isinstance(logits, torch.Tensor) or not logits.is_floating_point():
        raise TypeError(f"logits must be a floating-point tensor, got {type(logits).__name__}")
    return F.softmax(logits.float() / T, dim=-1)


def kd_grad_norms(student_logits: Tensor, teacher_logits: Tensor, temperatures: Sequence[float],
                  mask: Tensor | None = None) -> dict[float, tuple[float, float]]:
    """For each T: (‖∇_z KL‖, T²·‖∇_z KL‖), the mean per-position gradient norm w.r.t. the student logits z.

    ∇_z KL(p_t^T ‖ p_s^T) = (p_s^T − p_t^T) / T shrinks like 1/T² once T is large, so T² times
    it approaches a constant, ‖(z − z̄) − (v − v̄)‖ / V for student logits z, teacher logits v
    (Hinton et al. 2015, section 2.1); :func:`kd_grad_limit` computes that constant.
    """
    out = {}
    for T in temperatures:
        T = _check_temperature(T)
        s, t, m = _flatten(student_logits, teacher_logits, mask)
        z = s.detach().clone().requires_grad_(True)
        kl = (F.softmax(t / T, -1) * (F.log_softmax(t / T, -1) - F.log_softmax(z / T, -1))).sum()
        (g,) = torch.autograd.grad(kl, z)                      # (N, V): row i is ∇ of position i's KL
        norm = float(_masked_mean(g.norm(dim=-1), m))
        out[T] = (norm, T * T * norm)
    return out


def kd_grad_limit(student_logits: Tensor, teacher_logits: Tensor, mask: Tensor | None = None) -> float:
    """The high-temperature limit of T²·‖∇_z KL‖: mean over positions of ‖(z − z̄) − (v − v̄)‖ / V."""
    s, t, m = _flatten(student_logits, teacher_logits, mask)
    d = (s - s.mean(-1, keepdim=True)) - (t - t.mean(-1, keepdim=True))
    return float(_masked_mean(d.norm(dim=-1) / s.shape[-1], m))


# --- labelling with the teacher -----------------------------------------------------
def teacher_label(
    teacher,
    prompts: Sequence[str],
    max_new_tokens: int = 40,
    keep_steps: bool = True,
    student_prompts: Sequence[str] | None = None,
    template: str = "chat",
) -> list[Example]:
    """Response distillation data: the teacher answers each user prompt greedily.

    All prompts are answered in one batch.

    keep_steps       True: the completion is the teacher's whole output, worked steps
                     included (reasoning distillation); False: only the final answer
                     after the scratchpad (answer-only distillation).
    student_prompts  the user text the student will see for each prompt (default: the
                     same); e.g. ask the teacher "show 123+456" and train "123+456".
    Outputs that hit ``max_new_tokens`` before the end marker are dropped.
    """
    if isinstance(prompts, str):
        raise TypeError("prompts must be a list of user strings, not a single string")
    prompts = list(prompts)
    if not prompts:
        raise ValueError("prompts is empty")
    student_prompts = prompts if student_prompts is None else list(student_prompts)
    if len(student_prompts) != len(prompts):
        raise ValueError(
            f"{len(student_prompts)} student_prompts for {len(prompts)} prompts"
        )
    gens = generate(
        teacher,
        [format_prompt(p, template) for p in prompts],
        max_new_tokens=max_new_tokens,
    )
    out = []
    for sp, g in zip(student_prompts, gens):
        if not g.finished:
            continue
        out.append(
            Example(
                format_prompt(sp, template),
                g.text if keep_steps else final_answer(g.text),
            )
        )
    return out


def answer_only(example: Example, prefix: str = "show ") -> Example:
    """The same example without its worked steps: ``▶show 1+2◆⟨…⟩3`` becomes ``▶1+2◆3``.

    ``prefix`` is removed from the start of the user's text (the instruction that asked
    for the steps), so the answer-only student is asked the plain question.
    """
    if not isinstance(example, Example):
        raise TypeError(f"expected ftlab.Example, got {type(example).__name__}")
    user, sep, rest = example.prompt.partition(prefix)
    if not sep:
        raise ValueError(
            f"prompt {example.prompt!r} does not contain the prefix {prefix!r}"
        )
    return Example(user + rest, final_answer(example.completion))


def n_carries(a: int, b: int) -> int:
    """How many columns of a + b produce a carry: a measure of how hard the sum is."""
    if not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 0 for v in (a, b)):
        raise ValueError(f"a and b must be non-negative ints, got {a!r} and {b!r}")
    carries = carry = 0
    while a or b:
        carry = int((a % 10 + b % 10 + carry) >= 10)
        carries += carry
        a, b = a // 10, b // 10
    return carries


# --- logit distillation: a training loop -----------------------------------------------
@torch.no_grad()
def teacher_logits_for(teacher, ids: Tensor, batch_size: int = 256) -> Tensor:
    """The teacher's logits (N, T, V) on right-padded ``ids`` (N, T), computed once, in batches."""
    teacher.eval()
    return torch.cat([teacher(ids[i:i + batch_size].to(teacher.device)).float().cpu()
                      for i in range(0, len(ids), batch_size)])


def train_kd(student, teacher, data: Sequence[Example], steps: int, lr: float, T: float = 2.0, alpha: float = 1.0,
             divergence: str = "forward", beta: float = 0.5, batch_size: int = 32, warmup: int = 20,
             grad_clip: float | None = 1.0, evals: dict[str, Callable[[], float]] | None = None,
             eval_every: int = 0, seed: int = 0, desc: str = "distill") -> History:
    """Logit distillation of ``teacher`` into ``student`` (in place) on the sequences in ``data``.

    The teacher's logits on every sequence are computed once; each step the student
    minimises, over completion tokens, ``alpha`` × the divergence ("forward" = kd_loss,
    "reverse" = reverse_kl, "jsd" = generalized_jsd with ``beta``) plus (1 − ``alpha``) × the
    cross-entropy on the tokens in ``data``. It runs through ``ftlab.train`` with a
    ``loss_fn``, so the optimiser, schedule and batch order are those of SFT and runs compare
    like for like. Returns the ``History``.
    """
    if divergence not in ("forward", "reverse", "jsd"):
        raise ValueError(f"divergence must be 'forward', 'reverse' or 'jsd', got {divergence!r}")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be a number in [0, 1], got {alpha!r}")
    _check_temperature(T)
    if len(data) == 0:
        raise ValueError("data is empty")
    if student.config.vocab_size != teacher.config.vocab_size:
        raise ValueError(f"student and teacher vocabularies differ: {student.config.vocab_size} "
                         f"vs {teacher.config.vocab_size}; logit KD needs one tokenizer")
    ids, _ = sft_tensors(list(data))
    t_logits = teacher_logits_for(teacher, ids)                # (N, T, V), frozen targets

    def loss_fn(model, b_ids, b_mask, idx):
        s_logits = model(b_ids)[:, :-1]                        # (B, L-1, V): position t predicts token t+1
        t_l = t_logits[idx.cpu(), :b_ids.shape[1] - 1].to(s_logits.device)
        tgt_mask, labels = b_mask[:, 1:], b_ids[:, 1:]
        if divergence == "forward":
            soft = kd_loss(s_logits, t_l, T, tgt_mask)
        elif divergence == "reverse":
            soft = reverse_kl(s_logits, t_l, T, tgt_mask)
        else:
            soft = generalized_jsd(s_logits, t_l, beta, T, tgt_mask)
        if alpha == 1.0:
            return soft
        ce = F.cross_entropy(s_logits.reshape(-1, s_logits.shape[-1]), labels.reshape(-1), reduction="none")
        return alpha * soft + (1 - alpha) * _masked_mean(ce, tgt_mask.reshape(-1).float())

    return train(student, data, steps, lr, batch_size=batch_size, warmup=warmup, grad_clip=grad_clip,
                 evals=evals, eval_every=eval_every, loss_fn=loss_fn, seed=seed, desc=desc)


# --- the student with a fallback to the teacher --------------------------------------
def confidence(generations) -> np.ndarray:
    """Each answer's confidence: the probability of its least likely token (end marker included)."""
    gens = list(generations)
    if not gens:
        raise ValueError("no generations given")
    return np.array([math.exp(min(g.token_logprobs)) if g.token_logprobs else 0.0 for g in gens])


@dataclass
class RoutePoint:
    threshold: float       # the student answers when its confidence is >= this
    fallback_rate: float   # share of requests sent on to the teacher
    accuracy: float        # accuracy of the routed system


def _as_1d(name, x, dtype=float) -> np.ndarray:
    a = np.asarray(x, dtype=dtype)
    if a.ndim != 1 or len(a) == 0:
        raise ValueError(f"{name} must be a non-empty 1-D sequence, got shape {a.shape}")
    return a


def route(conf, student_correct, teacher_correct, threshold: float) -> RoutePoint:
    """The student answers where ``conf >= threshold``, the teacher everywhere else."""
    c = _as_1d("conf", conf)
    s = _as_1d("student_correct", student_correct, bool)
    t = _as_1d("teacher_correct", teacher_correct, bool)
    if not len(c) == len(s) == len(t):
        raise ValueError(
            "conf, student_correct and teacher_correct differ in length: "
            f"{len(c)}, {len(s)}, {len(t)}"
        )
    if isinstance(threshold, bool) or not isinstance(
        threshold, (int, float, np.floating)
    ):
        raise TypeError(f"threshold must be a number, got {threshold!r}")
    keep = c >= threshold
    return RoutePoint(
        float(threshold), float(1 - keep.mean()), float(np.where(keep, s, t).mean())
    )


def fallback_curve(conf, student_correct, teacher_correct, thresholds: Sequence[float] | None = None
                   ) -> list[RoutePoint]:
    """``route`` at each threshold (default: every distinct confidence, plus 0 and just above the max)."""
    c = _as_1d("conf", conf)
    if thresholds is None:
        thresholds = [0.0] + sorted(set(c.tolist())) + [float(c.max()) + 1e-9]
    return [route(c, student_correct, teacher_correct, float(th)) for th in thresholds]


def cheapest_route(curve: Sequence[RoutePoint], target_accuracy: float) -> RoutePoint | None:
    """The point with the lowest fallback rate whose accuracy reaches ``target_accuracy`` (None if none does)."""
    ok = [p for p in curve if p.accuracy >= target_accuracy]
    return min(ok, key=lambda p: (p.fallback_rate, -p.accuracy)) if ok else None


# --- sizes -------------------------------------------------------------------------
def weight_bytes(model, linear_bits: float = 16.0, other_bits: float = 16.0) -> float:
    """Bytes to store ``model``: the block linear layers' weights at ``linear_bits``, all else at ``other_bits``.

    "All else" is embeddings, the output head, biases and norms, which weight-only
    quantization usually leaves in 16 bit. Pass the format's bits per weight, scales
    included (e.g. 4.5 for Q4_0, 8.5 for Q8_0).
    """
    for name, v in (("linear_bits", linear_bits), ("other_bits", other_bits)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v <= 32:
            raise ValueError(f"{name} must be a number in (0, 32], got {v!r}")
    lin = other = 0
    for name, p in model.named_parameters():
        is_block_linear = name.startswith("layers.") and name.endswith("_proj.weight")
        if is_block_linear:
            lin += p.numel()
        else:
            other += p.numel()
    return (lin * linear_bits + other * other_bits) / 8


# --- exercise checkers ---------------------------------------------------------------
def _ok(msg: str) -> None:
    print(f"✓ {msg}")


def check_kd_loss(fn) -> None:
    """``fn(student_logits, teacher_logits, T, mask) -> scalar``: T²·KL(teacher ‖ student), masked mean."""
    g = torch.Generator().manual_seed(0)
    s = torch.randn(3, 5, 7, generator=g) * 2
    t = torch.randn(3, 5, 7, generator=g) * 2
    mask = (torch.rand(3, 5, generator=g) > 0.4).long()
    mask[0, 0] = 1
    for T, m in [(1.0, None), (2.0, None), (4.0, mask), (0.5, mask)]:
        want = float(kd_loss(s, t, T, m))
        got = float(fn(s, t, T, m))
        assert abs(got - want) < 1e-4 * max(1.0, abs(want)), (
            f"T={T}, mask {'given' if m is not None else 'None'}: expected {want:.5f}, got {got:.5f}. "
            f"Check the direction (teacher first), the T² factor and the average over counted positions only.")
    same = float(fn(t, t, 2.0, None))
    assert abs(same) < 1e-5, f"a student equal to the teacher must give 0, got {same:.6f}"
    _ok("kd_loss: forward KL with T² scaling, averaged over the masked positions")


def check_threshold(fn) -> None:
    """``fn(conf, student_correct, teacher_correct, target) -> threshold``: the cheapest threshold meeting ``target``."""
    rng = np.random.default_rng(0)
    for case in range(5):
        n = 200
        conf = rng.random(n)
        s = rng.random(n) < 0.5 + 0.5 * conf           # confident answers are right more often
        t = rng.random(n) < 0.95
        target = float(np.mean(t)) - 0.02 * case
        th = fn(conf, s, t, target)
        got = route(conf, s, t, float(th))
        best = cheapest_route(fallback_curve(conf, s, t), target)
        assert best is not None
        assert got.accuracy >= target - 1e-12, (
            f"case {case}: threshold {th:.3f} gives accuracy {got.accuracy:.3f} < target {target:.3f}")
        assert got.fallback_rate <= best.fallback_rate + 1e-12, (
            f"case {case}: threshold {th:.3f} sends {got.fallback_rate:.1%} to the teacher; "
            f"{best.threshold:.3f} meets the target with {best.fallback_rate:.1%}")
    _ok("threshold: meets the accuracy target with the fewest calls to the teacher")
