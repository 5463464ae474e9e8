"""One training loop for the whole course: AdamW, warmup, clipping, a loss mask.

Chapters pass their own data, step count, learning rate and, for PEFT, the filter
that says which parameters train. ``History`` keeps the loss of every step and the
value of every evaluation hook, so a chapter can plot the run it just made.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from .chat import Example, sft_tensors
from .seeds import shift
from .progress import progress
from .optim import AdamW


@dataclass
class History:
    loss: list[float] = field(default_factory=list)                 # one per step
    lr: list[float] = field(default_factory=list)                   # one per step
    evals: dict[str, list[tuple[int, float]]] = field(default_factory=dict)  # name -> [(step, value)]

    def eval_series(self, name: str):
        if name not in self.evals:
            raise ValueError(f"no evaluation named {name!r}; have {sorted(self.evals)}")
        steps, vals = zip(*self.evals[name]) if self.evals[name] else ((), ())
        return list(steps), list(vals)

    def smoothed_loss(self, window: int = 20) -> list[float]:
        out, acc = [], 0.0
        for i, l in enumerate(self.loss):
            acc += l
            if i >= window:
                acc -= self.loss[i - window]
            out.append(acc / min(i + 1, window))
        return out


def lm_loss(
    model, ids: torch.Tensor, loss_mask: torch.Tensor, reduction: str = "mean"
) -> torch.Tensor:
    """Next-token cross-entropy on the positions where ``loss_mask`` is 1.

    ids, loss_mask: (B, T). Token t+1 is predicted from tokens ≤ t, so the mask of the
    targets is ``loss_mask[:, 1:]``. ``reduction="none"`` gives one mean loss per row.
    """
    if ids.shape != loss_mask.shape:
        raise ValueError(
            f"ids {tuple(ids.shape)} and loss_mask {tuple(loss_mask.shape)} "
            "differ in shape"
        )
    # Right padding needs no attention mask: causal attention never lets a real token
    # see the pads after it, and the pads' own outputs are masked out of the loss.
    logits = model(ids)
    tgt, m = ids[:, 1:], loss_mask[:, 1:].float()
    ce = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), tgt.reshape(-1),
                         reduction="none").view_as(m)
    if reduction == "none":
        return (ce * m).sum(1) / m.sum(1).clamp(min=1)
    return (ce * m).sum() / m.sum().clamp(min=1)


def lr_at(step: int, steps: int, lr: float, warmup: int, schedule: str) -> float:
    """Linear warmup, then constant or cosine decay to 10 % of ``lr``."""
    if step < warmup:
        return lr * (step + 1) / warmup
    if schedule == "constant":
        return lr
    t = (step - warmup) / max(1, steps - warmup)
    return lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))


def train(model, data: Sequence[Example], steps: int, lr: float, batch_size: int = 32, warmup: int = 20,
          schedule: str = "cosine", weight_decay: float = 0.0, grad_clip: float | None = 1.0,
          mask_prompt: bool = True, trainable: Callable[[str], bool] | None = None,
          evals: dict[str, Callable[[], float]] | None = None, eval_every: int = 0,
          extra_loss: Callable[[torch.nn.Module, torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
          loss_fn: Callable[[torch.nn.Module, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
          seed: int = 0, desc: str = "train") -> History:
    """Fine-tune ``model`` in place on ``data`` and return its ``History``.

    trainable     name -> bool; parameters it rejects are frozen for this run (``None``
                  trains whatever already has ``requires_grad``, which is how PEFT
                  modules that froze their base weights keep them frozen).
    mask_prompt   loss on the completion only (chat SFT), or on the whole sequence.
    evals         name -> zero-argument function, run every ``eval_every`` steps and at the end.
    extra_loss    added to the LM loss each step (a KL or EWC penalty, say).
    loss_fn       (model, ids, loss_mask, idx) -> loss, used instead of the LM loss; ``idx``
                  holds the batch's row numbers in ``data``, so a loss can look up per-row
                  targets computed once (a teacher's logits, say). Its value is what is logged.
    """
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr!r}")
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"warmup must be an int >= 0, got {warmup!r}")
    if schedule not in ("cosine", "constant"):
        raise ValueError(f"schedule must be 'cosine' or 'constant', got {schedule!r}")
    if not isinstance(eval_every, int) or eval_every < 0:
        raise ValueError(f"eval_every must be an int >= 0, got {eval_every!r}")
    if len(data) == 0:
        raise ValueError("data is empty")
    if trainable is not None:
        for name, p in model.named_parameters():
            p.requires_grad_(bool(trainable(name)))
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("no trainable parameters: every parameter is frozen")
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    opt = AdamW([{"params": decay, "weight_decay": weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=lr, betas=(0.9, 0.99))
    ids, loss_mask = sft_tensors(list(data), mask_prompt=mask_prompt)
    ids, loss_mask = ids.to(model.device), loss_mask.to(model.device)
    gen = torch.Generator().manual_seed(shift(seed))
    hist = History(evals={k: [] for k in (evals or {})})
    order, pos = torch.randperm(len(ids), generator=gen), 0
    model.train()
    for step in progress(range(steps), desc=desc):
        if pos + batch_size > len(order):  # a new epoch: reshuffle
            order, pos = torch.randperm(len(ids), generator=gen), 0
        idx = order[pos:pos + batch_size].to(ids.device)
        pos += batch_size
        b_ids, b_mask = ids[idx], loss_mask[idx]
        T = int((b_ids != 0).long().sum(1).max())  # trim the batch to its longest row
        b_ids, b_mask = b_ids[:, :T], b_mask[:, :T]
        cur = lr_at(step, steps, lr, warmup, schedule)
        for g in opt.param_groups:
            g["lr"] = cur
        loss = loss_fn(model, b_ids, b_mask, idx) if loss_fn else lm_loss(model, b_ids, b_mask)
        total = loss + extra_loss(model, b_ids, b_mask) if extra_loss else loss
        opt.zero_grad(set_to_none=True)
        total.backward()
        if grad_clip:
            torch.nn.utils.clip_grad_norm_(params, grad_clip)
        opt.step()
        hist.loss.append(loss.item())
        hist.lr.append(cur)
        if evals and ((eval_every and (step + 1) % eval_every == 0) or step == steps - 1):
            model.eval()
            for name, fn in evals.items():
                if not hist.evals[name] or hist.evals[name][-1][0] != step + 1:
                    hist.evals[name].append((step + 1, float(fn())))
            model.train()
    model.eval()
    return hist
