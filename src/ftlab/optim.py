"""AdamW in a few lines: the update ``torch.optim.AdamW`` makes on the CPU, bit for bit.

Why not ``torch.optim.AdamW`` itself? Its first use imports ``torch._dynamo`` (about 1 s
on the course's machine), and every chapter that trains would pay it. The arithmetic
below is the library's single-tensor path, the one it takes for CPU tensors
(``torch/optim/adam.py``, ``_single_tensor_adam``); ``tests/test_train_eval.py`` checks
that both give the same weights to the last bit. It subclasses ``torch.optim.Optimizer``,
so optimizer hooks, ``state`` and ``param_groups`` work as usual.
"""
from __future__ import annotations

import torch


class AdamW(torch.optim.Optimizer):
    """Adam with decoupled weight decay (Loshchilov & Hutter 2019), as torch.optim.AdamW."""

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 1e-2):
        if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr >= 0:
            raise ValueError(f"lr must be a number >= 0, got {lr!r}")
        if len(betas) != 2 or not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"betas must be two numbers in [0, 1), got {betas!r}")
        if not eps >= 0 or not weight_decay >= 0:
            raise ValueError(f"eps and weight_decay must be >= 0, got {eps!r}, {weight_decay!r}")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps,
                                      weight_decay=weight_decay))

    # torch's own add_param_group and zero_grad are wrapped for torch.compile, and the
    # wrapper imports torch._dynamo on first call; these keep the same bookkeeping.
    def add_param_group(self, param_group: dict) -> None:
        if not isinstance(param_group, dict):
            raise TypeError(f"param_group must be a dict, got {type(param_group).__name__}")
        params = param_group["params"]
        if isinstance(params, torch.Tensor):
            params = [params]
        param_group["params"] = list(params)
        for p in param_group["params"]:
            if not isinstance(p, torch.Tensor):
                raise TypeError(f"AdamW optimizes tensors, got {type(p).__name__}")
        for key, default in self.defaults.items():
            param_group.setdefault(key, default)
        self.param_groups.append(param_group)

    def zero_grad(self, set_to_none: bool = True) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if set_to_none:
                    p.grad = None
                else:
                    p.grad.detach_().zero_()

    @torch.no_grad()
    def step(self, closure=None):
        if closure is not None:
            raise ValueError("ftlab.optim.AdamW takes no closure")
        for group in self.param_groups:
            lr, (beta1, beta2) = group["lr"], group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = torch.tensor(0.0)
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                m, v = state["exp_avg"], state["exp_avg_sq"]
                state["step"] += 1
                step = state["step"].item()
                if group["weight_decay"]:                     # decoupled weight decay
                    p.mul_(1 - lr * group["weight_decay"])
                m.lerp_(p.grad, 1 - beta1)                    # first moment
                v.mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)  # second moment
                step_size = lr / (1 - beta1 ** step)          # bias corrections
                denom = (v.sqrt() / (1 - beta2 ** step) ** 0.5).add_(group["eps"])
                p.addcdiv_(m, denom, value=-step_size)
        return None
