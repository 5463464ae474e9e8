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


def check_accumulation_loss(fn) -> None:
    """``fn(token_losses, loss_mask, num_items_in_batch) -> scalar``: one micro-batch's loss
    such that summing the gradients of every micro-batch gives the full batch's gradient."""
    import torch

    gen = torch.Generator().manual_seed(0)
    w = torch.randn(5, generator=gen, requires_grad=True)
    x = torch.randn(6, 9, 5, generator=gen)
    lengths = torch.tensor([9, 2, 7, 1, 3, 8])
    mask = (torch.arange(9)[None] < lengths[:, None]).float()

    def ce(rows):  # a stand-in for per-token cross-entropy: smooth, positive, depends on w
        return (x[rows] @ w).sigmoid() * 2

    full = (ce(slice(None)) * mask).sum() / mask.sum()
    want = torch.autograd.grad(full, w)[0]
    total = mask.sum()
    grad = torch.zeros_like(w)
    for s in range(0, 6, 2):
        loss = fn(ce(slice(s, s + 2)) * mask[s:s + 2], mask[s:s + 2], total)
        assert isinstance(loss, torch.Tensor) and loss.dim() == 0, "return a scalar tensor"
        grad += torch.autograd.grad(loss, w)[0]
    assert torch.allclose(grad, want, atol=1e-6), (
        f"summed micro-batch gradients {grad.tolist()} differ from the full batch's {want.tolist()}: "
        "divide the summed token losses by the target tokens of the whole accumulated batch")
    _ok("accumulation: micro-batch gradients add up to the full-batch gradient")


def check_packing_mask(fn) -> None:
    """``fn(seq_ids) -> bool (T, T)``: token i may attend to token j."""
    import torch

    from .mechanics import packed_attention_mask

    for ids in ([0, 0, 0, 1, 1, 2, 2, 2, 2], [0, 1, 2, 3], [0] * 6, [0, 0, 1, 1, 1, -1, -1]):
        t = torch.tensor(ids)
        got = torch.as_tensor(fn(t)).bool()
        want = packed_attention_mask(t[None])[0, 0]
        assert got.shape == want.shape, f"for seq_ids {ids}: expected shape {tuple(want.shape)}, got {tuple(got.shape)}"
        bad = (got != want).nonzero().tolist()
        assert not bad, (f"for seq_ids {ids}: wrong at (query, key) {bad[:3]}; a token sees itself and the "
                         "earlier tokens of its own example only (padding, id -1, sees only itself)")
    _ok("packing mask: causal and block-diagonal")


def check_kv_cache_bytes(fn) -> None:
    """``fn(n_layers, n_kv_heads, head_dim, tokens, batch, bytes_per_value) -> bytes``."""
    from .mechanics import kv_cache_bytes

    for args in [(32, 32, 128, 4096, 1, 2), (32, 8, 128, 8192, 4, 2), (80, 8, 128, 1000, 1, 1),
                 (3, 4, 16, 40, 7, 4)]:
        got, want = fn(*args), kv_cache_bytes(*args)
        assert abs(got - want) < 1e-6 * want, f"for {args}: expected {want:,.0f} bytes, got {got:,.0f}"
    _ok("KV cache bytes: 2 · layers · KV heads · head dim · tokens · batch · bytes")


def check_zero_bytes(fn) -> None:
    """``fn(n_params, n_gpus, stage) -> bytes per GPU`` of weights, grads and Adam state."""
    from .memory import zero_bytes_per_gpu

    for n, N, s in [(7.5e9, 64, 0), (7.5e9, 64, 1), (7.5e9, 64, 2), (7.5e9, 64, 3), (70e9, 8, 2), (7e9, 8, 3)]:
        got, want = fn(n, N, s), zero_bytes_per_gpu(n, N, s)["gpu_total"]
        assert abs(got - want) < 1e-6 * want, (
            f"{n:.3g} params, {N} GPUs, stage {s}: expected {want / 1e9:.2f} GB, got {got / 1e9:.2f} GB")
    _ok("ZeRO bytes per GPU match Rajbhandari et al. 2020")


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
