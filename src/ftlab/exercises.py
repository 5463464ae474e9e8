"""Checkers for the chapters' exercises: they test what your code does, not how it looks.

Each checker raises ``AssertionError`` with a hint on the first failure and prints
one line on success.
"""
from __future__ import annotations

from math import comb

from .chat import Example, sft_tensors
from .evaluate import pass_at_k


def _ok(msg: str) -> None:
    print(f"✓ {msg}")


def check_loss_mask(fn) -> None:
    """``fn(prompt, completion) -> list[int]``: 1 on the completion and the end marker only."""
    cases = [("▶rev ab◆", "ba"), ("▶12+34◆", "46"), ("▶§a:b§who lives in b?◆", "a"), ("x=", "")]
    for prompt, completion in cases:
        got = list(fn(prompt, completion))
        _, ref = sft_tensors([Example(prompt, completion)])
        want = ref[0].tolist()[: len(prompt) + len(completion) + 1]
        assert len(got) == len(want), (
            f"for {prompt!r} + {completion!r} + '■' the mask needs {len(want)} entries, got {len(got)}")
        assert got == want, f"for {prompt!r} + {completion!r}: expected {want}, got {got}"
    _ok("loss mask: prompt masked, completion and end marker trained")


def check_pass_at_k(fn) -> None:
    """``fn(n, c, k) -> float``: the unbiased pass@k estimator."""
    for n, c, k in [(10, 0, 1), (10, 3, 1), (10, 3, 5), (10, 8, 3), (200, 13, 10), (5, 5, 5)]:
        want = 1 - comb(n - c, k) / comb(n, k)
        got = float(fn(n, c, k))
        assert abs(got - want) < 1e-9, f"pass@{k} with n={n}, c={c}: expected {want:.6f}, got {got:.6f}"
    got = float(fn(2000, 50, 100))
    assert abs(got - pass_at_k(2000, 50, 100)) < 1e-9, "large n: use the product form, not huge binomials"
    _ok("pass@k matches 1 - C(n-c, k)/C(n, k), including large n")


def check_opt_name(fn) -> None:
    """``fn(tinygpt_key) -> opt_key``: TinyGPT's state-dict names in OPTForCausalLM's layout."""
    from .hf import opt_name
    from .model import GPTConfig, TinyGPT

    for key in TinyGPT(GPTConfig(n_layer=2, d_model=16, n_head=2)).state_dict():
        got, want = fn(key), opt_name(key)
        assert got == want, f"{key!r}: expected {want!r}, got {got!r}"
    _ok("every TinyGPT tensor lands on its OPT name")


def check_reward_fn(fn) -> None:
    """``fn(prompts, completions, answer, **kw) -> list[float]``: a TRL reward from the course verifier."""
    from .hf import verifier_reward

    want_fn = verifier_reward("add3_steps")
    answer = ["⟨9+1=10,9+2+1=12,1+8+1=10⟩1020"] * 4
    texts = [answer[0], "⟨9+1=10,9+2+1=12,1+8+1=10⟩1090", "⟨wrong steps⟩1020", ""]
    for completions in ([[{"role": "assistant", "content": t}] for t in texts], texts):
        got = [float(x) for x in fn(prompts=[""] * 4, completions=completions, answer=answer)]
        want = want_fn(prompts=[""] * 4, completions=completions, answer=answer)
        assert got == want, f"completions {texts!r}: expected rewards {want}, got {got}"
    _ok("the reward is 1.0 exactly when the verifier accepts the final answer")
