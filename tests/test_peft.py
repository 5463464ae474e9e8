"""ftlab.peft: LoRA against the paper's formula, multi-LoRA routing, prompt and prefix
tuning and bottleneck adapters through the course's own train() and generate()."""
import copy
import math
import re

import pytest
import torch
import torch.nn as nn

from ftlab.chat import chat_prompt
from ftlab.generation import generate
from ftlab.model import GPTConfig, TinyGPT
from ftlab.peft import (BottleneckAdapter, LoRALinear, NF4Linear, PrefixTuningModel, PromptTuningModel,
                        add_adapters, add_lora, add_multi_lora, add_qlora, check_lora_layer, check_lora_param_count,
                        check_nf4_roundtrip, count_trainable, merge_lora, training_state_bytes, use_adapter)
from ftlab.quant import NF4Weight, dequantize_nf4, int4_codebook, quantize_nf4
from ftlab.tasks import get_task
from ftlab.tokenizer import EOS_ID, encode, pad_batch
from ftlab.train import train

PROMPTS = [chat_prompt("rot abc"), chat_prompt("rot hello"), chat_prompt("rot xy")]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # Matrices this small run faster on one thread, and CI may share its cores.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def base():
    torch.manual_seed(0)
    m = TinyGPT(GPTConfig())
    with torch.no_grad():  # a random model would often stop at once; this keeps every decode step in play
        m.lm_head.weight[EOS_ID] = 0.0
    return m.eval()


@pytest.fixture(scope="module")
def rot_data():
    return get_task("rot").examples(64, seed=0)


def randomize_lora(model, seed=1, std=0.1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, LoRALinear):
                m.lora_B.copy_(torch.randn(m.lora_B.shape, generator=g) * std)


def assert_batch_equals_single(model, prompts=PROMPTS):
    batched = generate(model, prompts, max_new_tokens=6)
    single = [generate(model, [p], max_new_tokens=6)[0] for p in prompts]
    assert [g.text for g in batched] == [g.text for g in single]
    for a, b in zip(batched, single):
        torch.testing.assert_close(torch.tensor(a.token_logprobs), torch.tensor(b.token_logprobs),
                                   atol=1e-4, rtol=1e-4)
    assert all(len(g.token_logprobs) == 6 for g in batched)


def assert_cache_matches_full(model):
    """Decoding token by token through the cache gives the logits of one full pass."""
    ids, mask = pad_batch([encode(chat_prompt("rot abc") + "bcd"), encode(chat_prompt("rot x"))], side="left")
    with torch.no_grad():
        full = model(ids, attention_mask=mask)
        k = 5
        logits, cache = model(ids[:, :k], attention_mask=mask[:, :k], use_cache=True)
        steps = [logits]
        for t in range(k, ids.shape[1]):
            logits, cache = model(ids[:, t:t + 1], attention_mask=mask[:, :t + 1], past_key_values=cache,
                                  use_cache=True)
            steps.append(logits)
    real = mask.bool()
    torch.testing.assert_close(torch.cat(steps, 1)[real], full[real], atol=1e-5, rtol=1e-4)


def assert_trains(model, data, **kw):
    """train() lowers the loss, and only the method's own parameters change."""
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    hist = train(model, data, steps=30, lr=1e-2, **kw)
    assert sum(hist.loss[-5:]) / 5 < hist.loss[0] - 0.02, (hist.loss[0], hist.loss[-5:])
    for n, p in model.named_parameters():
        assert torch.equal(p, before[n]) != p.requires_grad, f"{n}: requires_grad={p.requires_grad}"


# --- LoRALinear ---------------------------------------------------------------------------
def test_lora_starts_as_the_base_layer():
    torch.manual_seed(0)
    lin = nn.Linear(32, 24)
    x = torch.randn(3, 7, 32)
    ref = lin(x)
    layer = LoRALinear(lin, r=4, lora_alpha=8)
    torch.testing.assert_close(layer(x), ref, rtol=0, atol=0)
    assert layer.lora_A.shape == (4, 32) and layer.lora_B.shape == (24, 4)
    assert not layer.lora_B.any() and layer.lora_A.abs().sum() > 0


def test_lora_only_adapter_gets_gradients():
    torch.manual_seed(0)
    layer = LoRALinear(nn.Linear(32, 24), r=4, lora_alpha=8)
    layer(torch.randn(5, 32)).pow(2).sum().backward()
    grads = {n for n, p in layer.named_parameters() if p.grad is not None}
    assert grads == {"lora_A", "lora_B"}
    # At init B = 0, so A's gradient is zero and only B moves on the first step (Hu et al. 2021).
    assert not layer.lora_A.grad.any() and layer.lora_B.grad.any()


def test_lora_matches_paper_formula():
    """h = W0 x + (alpha / r) B A x, computed by hand."""
    torch.manual_seed(0)
    lin = nn.Linear(20, 12)
    layer = LoRALinear(lin, r=3, lora_alpha=6)
    with torch.no_grad():
        layer.lora_B.normal_()
    x = torch.randn(4, 20)
    W0, b, A, B = lin.weight, lin.bias, layer.lora_A, layer.lora_B
    by_hand = x @ W0.T + b + (6 / 3) * (B @ A @ x.T).T
    torch.testing.assert_close(layer(x), by_hand)


def test_lora_merge_equals_unmerged():
    torch.manual_seed(0)
    for bias in (True, False):
        layer = LoRALinear(nn.Linear(16, 24, bias=bias), r=8, lora_alpha=16)
        with torch.no_grad():
            layer.lora_B.normal_()
        x = torch.randn(6, 16)
        merged = layer.merge()
        assert type(merged) is nn.Linear and (merged.bias is not None) == bias
        torch.testing.assert_close(merged(x), layer(x))


def test_lora_merge_in_bf16_rounds_once():
    torch.manual_seed(0)
    layer = LoRALinear(nn.Linear(64, 64).to(torch.bfloat16), r=4, lora_alpha=8)
    with torch.no_grad():
        layer.lora_B.normal_(std=1e-3)                 # a small update, as after fine-tuning
    W, A, B = (t.detach().float() for t in (layer.base.weight, layer.lora_A, layer.lora_B))
    exact = W + layer.scaling * (B @ A)
    merged = layer.merge().weight.float()
    assert torch.equal(merged, exact.to(torch.bfloat16).float())      # one rounding only
    naive = (layer.base.weight + layer.scaling * (layer.lora_B @ layer.lora_A)).float()
    assert (merged - exact).abs().sum() <= (naive - exact).abs().sum()


def test_lora_param_count_4096():
    layer = LoRALinear(nn.Linear(4096, 4096, bias=False), r=16, lora_alpha=32)
    assert count_trainable(layer) == 131_072 == 16 * (4096 + 4096)
    assert 4096 * 4096 // 131_072 == 128


def test_lora_scaling_and_rslora():
    lin = nn.Linear(64, 64)
    assert LoRALinear(lin, r=16, lora_alpha=32).scaling == 2.0
    assert LoRALinear(lin, r=16, lora_alpha=32, use_rslora=True).scaling == 32 / math.sqrt(16) == 8.0


# --- add_lora / merge_lora on TinyGPT ---------------------------------------------------------
def test_add_lora_on_tinygpt_and_merge(base):
    cfg = base.config
    n = add_lora(base, ["q_proj", "v_proj"], r=4, lora_alpha=8)
    assert n == cfg.n_layer * 2 * 4 * (cfg.d_model + cfg.d_model) == 3072
    assert n == count_trainable(base)
    assert isinstance(base.layers[0].attn.q_proj, LoRALinear)
    assert isinstance(base.layers[0].attn.k_proj, nn.Linear)
    assert {n.rsplit(".", 1)[-1] for n, p in base.named_parameters() if p.requires_grad} == {"lora_A", "lora_B"}
    randomize_lora(base)
    ids = torch.tensor([encode(PROMPTS[0])])
    before = base(ids)
    assert merge_lora(base) is base
    assert not any(isinstance(m, LoRALinear) for m in base.modules())
    assert type(base.layers[2].attn.v_proj) is nn.Linear
    torch.testing.assert_close(base(ids), before)


def test_lora_trains_and_generates(base, rot_data):
    add_lora(base, ["q_proj", "k_proj", "v_proj", "o_proj"], r=4, lora_alpha=8)
    assert_trains(base, rot_data)
    assert_batch_equals_single(base)


# --- multi-LoRA serving ---------------------------------------------------------------------
def test_multi_lora_routes_each_row(base):
    a, b = copy.deepcopy(base), copy.deepcopy(base)
    add_lora(a, ["q_proj", "v_proj"], r=4, lora_alpha=8)
    add_lora(b, ["q_proj", "o_proj", "down_proj"], r=2, lora_alpha=4)
    randomize_lora(a, seed=1)
    randomize_lora(b, seed=2)
    serve = add_multi_lora(copy.deepcopy(base), {"rot": a, "count": b})
    assert count_trainable(serve) == 0
    ids = torch.tensor([encode(PROMPTS[0])] * 3)
    with torch.no_grad():
        with use_adapter(serve, ["rot", "count", None]):
            mixed = serve(ids)
        with use_adapter(serve, "count"):
            all_b = serve(ids)
        plain = serve(ids)  # outside the context: the base model
        ra, rb, r0 = a(ids[:1]), b(ids[:1]), base(ids[:1])
    torch.testing.assert_close(mixed[0], ra[0])
    torch.testing.assert_close(mixed[1], rb[0])
    torch.testing.assert_close(mixed[2], r0[0])
    torch.testing.assert_close(all_b, rb.expand(3, -1, -1))
    torch.testing.assert_close(plain, r0.expand(3, -1, -1))
    assert not torch.allclose(ra, rb) and not torch.allclose(ra, r0)
    # One batch of generations, each row with its own adapter, equals each model alone.
    with use_adapter(serve, ["rot", "count", None]):
        out = [g.text for g in generate(serve, PROMPTS, max_new_tokens=6)]
    assert out == [generate(m, [p], max_new_tokens=6)[0].text for m, p in zip((a, b, base), PROMPTS)]


def test_multi_lora_bad_input(base):
    a = copy.deepcopy(base)
    add_lora(a, ["q_proj"], r=2, lora_alpha=2)
    serve = add_multi_lora(copy.deepcopy(base), {"rot": a})
    with pytest.raises(ValueError, match="'nope'"):
        with use_adapter(serve, ["rot", "nope"]):
            pass
    with pytest.raises(ValueError, match="2 adapter choices for a batch of 3"):
        with use_adapter(serve, ["rot", None]):
            serve(torch.zeros(3, 4, dtype=torch.long))
    other = TinyGPT(GPTConfig())
    with pytest.raises(ValueError, match="'rot' was trained on different base weights"):
        add_multi_lora(other, {"rot": a})
    with pytest.raises(ValueError, match="'plain' has no LoRALinear"):
        add_multi_lora(copy.deepcopy(base), {"plain": base})
    with pytest.raises(ValueError, match="no MultiLoRALinear"):
        with use_adapter(base, "rot"):
            pass


# --- prompt tuning --------------------------------------------------------------------------
def test_prompt_tuning_layout(base):
    pt = PromptTuningModel(base, num_virtual_tokens=5, init_text="rot")
    assert pt.num_params(trainable_only=True) == count_trainable(pt) == 5 * base.config.d_model
    assert pt.config is base.config and pt.device == base.device
    ids = torch.tensor([encode(PROMPTS[0])])
    with torch.no_grad():
        logits = pt(ids)
        # The documented convention: soft tokens take positions 0..N-1, real tokens follow.
        by_hand = base(inputs_embeds=torch.cat([pt.prompt_embeddings[None], base.embed_tokens(ids)], 1))[:, 5:]
    assert logits.shape == (1, ids.shape[1], base.config.vocab_size)
    torch.testing.assert_close(logits, by_hand)
    # init_text "rot" cycles: r, o, t, r, o
    torch.testing.assert_close(pt.prompt_embeddings, base.embed_tokens(torch.tensor(encode("rotro"))))


def test_prompt_tuning_trains_and_generates(base, rot_data):
    pt = PromptTuningModel(base, num_virtual_tokens=8)
    assert_cache_matches_full(pt)
    assert_trains(pt, rot_data)
    assert_batch_equals_single(pt)


# --- prefix tuning --------------------------------------------------------------------------
@pytest.mark.parametrize("hidden", [None, 32])
def test_prefix_tuning_layout(base, hidden):
    cfg, n = base.config, 6
    pm = PrefixTuningModel(base, num_virtual_tokens=n, encoder_hidden_size=hidden)
    C, L = cfg.d_model, cfg.n_layer
    want = n * L * 2 * C if hidden is None else n * C + (C * hidden + hidden) + (hidden * L * 2 * C + L * 2 * C)
    assert pm.num_params(trainable_only=True) == count_trainable(pm) == want
    kv = pm.prefix_key_values(3)
    assert len(kv) == L and kv[0][0].shape == (3, cfg.n_head, n, C // cfg.n_head)
    ids = torch.tensor([encode(PROMPTS[1])] * 3)
    T = ids.shape[1]
    with torch.no_grad():
        # The documented convention: prefixes take no positions; real tokens keep 0..T-1.
        by_hand = base(ids, position_ids=torch.arange(T).expand(3, T), past_key_values=kv)
        torch.testing.assert_close(pm(ids), by_hand)
        torch.testing.assert_close(pm(ids, attention_mask=torch.ones(3, T, dtype=torch.long)), by_hand)
        assert not torch.allclose(pm(ids), base(ids))


@pytest.mark.parametrize("hidden", [None, 32])
def test_prefix_tuning_trains_and_generates(base, rot_data, hidden):
    pm = PrefixTuningModel(base, num_virtual_tokens=8, encoder_hidden_size=hidden)
    assert_cache_matches_full(pm)
    assert_trains(pm, rot_data)
    assert_batch_equals_single(pm)


# --- bottleneck adapters --------------------------------------------------------------------
def test_adapter_starts_as_identity_and_counts(base):
    ids = torch.tensor([encode(PROMPTS[0])])
    with torch.no_grad():
        before = base(ids)
    cfg, m = base.config, 8
    n = add_adapters(base, bottleneck_dim=m)
    assert n == cfg.n_layer * 2 * (2 * cfg.d_model * m + m + cfg.d_model)
    assert isinstance(base.layers[0].attn.o_proj, BottleneckAdapter)
    assert isinstance(base.layers[0].mlp.down_proj, BottleneckAdapter)
    with torch.no_grad():
        torch.testing.assert_close(base(ids), before, rtol=0, atol=0)
    ln = sum(p.numel() for mod in base.modules() if isinstance(mod, nn.LayerNorm) for p in mod.parameters())
    other = TinyGPT(GPTConfig())
    assert add_adapters(other, m, train_layer_norms=True) == n + ln


def test_adapter_trains_and_generates(base, rot_data):
    add_adapters(base, bottleneck_dim=8)
    assert_trains(base, rot_data)
    assert_batch_equals_single(base)


# --- the exercise checker -------------------------------------------------------------------
class TransposedLoRA(nn.Module):
    """A correct LoRA written the way the source text writes it: A is (in, r), B is (r, out)."""

    def __init__(self, base, r, lora_alpha):
        super().__init__()
        self.base = base.requires_grad_(False)
        self.A = nn.Parameter(torch.randn(base.in_features, r) / r)
        self.B = nn.Parameter(torch.zeros(r, base.out_features))
        self.scaling = lora_alpha / r

    def forward(self, x):
        return self.base(x) + x @ self.A @ self.B * self.scaling

    def merge(self):
        m = copy.deepcopy(self.base)
        m.weight.data += self.scaling * (self.A @ self.B).T
        return m


class RandomB(TransposedLoRA):
    def __init__(self, base, r, lora_alpha):
        super().__init__(base, r, lora_alpha)
        self.B.data.normal_()


class NoScaling(TransposedLoRA):
    def __init__(self, base, r, lora_alpha):
        super().__init__(base, r, lora_alpha)
        self.scaling = 1.0


class AlphaOnly(TransposedLoRA):
    def __init__(self, base, r, lora_alpha):
        super().__init__(base, r, lora_alpha)
        self.scaling = lora_alpha


class BaseNotFrozen(TransposedLoRA):
    def __init__(self, base, r, lora_alpha):
        super().__init__(base, r, lora_alpha)
        base.requires_grad_(True)


class MergeDropsBias(TransposedLoRA):
    def merge(self):
        m = nn.Linear(self.base.in_features, self.base.out_features, bias=False)
        m.weight.data = self.base.weight + self.scaling * (self.A @ self.B).T
        return m


@pytest.mark.parametrize("cls", [LoRALinear, TransposedLoRA])
def test_checker_passes_correct_layers(cls, capsys):
    check_lora_layer(cls)
    assert "all checks passed" in capsys.readouterr().out


@pytest.mark.parametrize("cls, message", [
    (RandomB, "start B at zero"),
    (NoScaling, "scaling is missing"),
    (AlphaOnly, "expected scaling = lora_alpha / r = 2"),
    (BaseNotFrozen, "freeze the base"),
    (MergeDropsBias, "keep the bias"),
])
def test_checker_catches_bugs(cls, message, capsys):
    with pytest.raises(AssertionError, match=re.escape(message)):
        check_lora_layer(cls)
    assert "all checks passed" not in capsys.readouterr().out


def test_checker_wants_a_class():
    with pytest.raises(TypeError, match="LoRALinear"):
        check_lora_layer(LoRALinear(nn.Linear(4, 4), 2, 2))


# --- bad input ------------------------------------------------------------------------------
@pytest.mark.parametrize("kw, exc, shown", [
    (dict(r=0), ValueError, "r must be an int >= 1, got 0"),
    (dict(r=-2), ValueError, "got -2"),
    (dict(r=2.5), ValueError, "got 2.5"),
    (dict(r=17), ValueError, "r=17 exceeds min(in_features, out_features) = 16"),
    (dict(lora_alpha=0), ValueError, "lora_alpha must be a number > 0, got 0"),
    (dict(lora_alpha=-1.0), ValueError, "got -1.0"),
    (dict(lora_alpha="8"), ValueError, "got '8'"),
    (dict(lora_dropout=1.0), ValueError, "lora_dropout must be in [0, 1), got 1.0"),
    (dict(lora_dropout=-0.1), ValueError, "got -0.1"),
])
def test_lora_bad_input(kw, exc, shown):
    args = dict(r=4, lora_alpha=8) | kw
    with pytest.raises(exc, match=re.escape(shown)):
        LoRALinear(nn.Linear(16, 32), **args)


def test_bad_input_elsewhere(base):
    with pytest.raises(TypeError, match="got Embedding"):
        LoRALinear(base.embed_tokens, r=2, lora_alpha=2)
    with pytest.raises(ValueError, match=re.escape("['nope', 'up']")):
        add_lora(copy.deepcopy(base), ["q_proj", "nope", "up"], r=2, lora_alpha=2)
    with pytest.raises(TypeError, match="'q_proj'"):
        add_lora(copy.deepcopy(base), "q_proj", r=2, lora_alpha=2)
    with pytest.raises(ValueError, match="r=65 exceeds"):
        add_lora(copy.deepcopy(base), ["q_proj"], r=65, lora_alpha=2)
    twice = copy.deepcopy(base)
    add_lora(twice, ["q_proj"], r=2, lora_alpha=2)
    with pytest.raises(ValueError, match="already has LoRA layers"):
        add_lora(twice, ["v_proj"], r=2, lora_alpha=2)
    for bad in (0, -3, 1.5):
        with pytest.raises(ValueError, match=re.escape(f"num_virtual_tokens must be an int >= 1, got {bad}")):
            PromptTuningModel(base, bad)
        with pytest.raises(ValueError, match=re.escape(f"num_virtual_tokens must be an int >= 1, got {bad}")):
            PrefixTuningModel(base, bad)
        with pytest.raises(ValueError, match=re.escape(f"bottleneck_dim must be an int >= 1, got {bad}")):
            add_adapters(copy.deepcopy(base), bad)
    with pytest.raises(ValueError, match="num_virtual_tokens=96 leaves no room"):
        PromptTuningModel(base, 96)
    with pytest.raises(ValueError, match="init_text must be a non-empty str or None, got ''"):
        PromptTuningModel(base, 4, init_text="")
    with pytest.raises(ValueError, match="encoder_hidden_size must be an int >= 1, got 0"):
        PrefixTuningModel(base, 4, encoder_hidden_size=0)
    with pytest.raises(ValueError, match="exactly one of input_ids and inputs_embeds"):
        PromptTuningModel(base, 4)()
    with pytest.raises(ValueError, match=re.escape("target_modules ['wq'] match no nn.Linear")):
        add_adapters(copy.deepcopy(base), 4, target_modules=["q_proj", "wq"])


# --- QLoRA: NF4Linear, add_qlora -------------------------------------------------------------
def test_nf4_linear_is_dequantized_base_plus_lora():
    torch.manual_seed(0)
    lin = nn.Linear(64, 32)
    x = torch.randn(4, 5, 64)
    q = NF4Linear(copy.deepcopy(lin), r=4, lora_alpha=8, double_quant=False)
    codes, absmax = quantize_nf4(lin.weight.detach())
    W_hat = dequantize_nf4(codes, absmax, lin.weight.shape)
    # at init B = 0: exactly the layer with the NF4-rounded weight, close to the original
    torch.testing.assert_close(q(x), x @ W_hat.T + lin.bias, rtol=0, atol=1e-6)
    assert 0 < (W_hat - lin.weight).norm() / lin.weight.norm() < 0.15  # NF4 rounding: small, not zero
    assert {n for n, p in q.named_parameters()} == {"lora_A", "lora_B"}   # no float copy of W is kept
    with torch.no_grad():
        q.lora_B.normal_()
    by_hand = x @ W_hat.T + lin.bias + 2.0 * x @ q.lora_A.T @ q.lora_B.T
    torch.testing.assert_close(q(x), by_hand, rtol=1e-5, atol=1e-5)
    merged = q.merge()
    assert type(merged) is nn.Linear
    torch.testing.assert_close(merged(x), q(x), rtol=1e-5, atol=1e-5)


def test_nf4_linear_gradients_and_storage():
    torch.manual_seed(0)
    q = NF4Linear(nn.Linear(128, 64, bias=False), r=2, lora_alpha=2)
    x = torch.randn(3, 128, requires_grad=True)
    q(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0          # gradients flow through the frozen NF4 weight
    assert q.lora_B.grad.abs().sum() > 0 and q.bias is None
    assert 4.12 < q.weight_nf4.bits_per_param < 4.14                # double quantization by default
    assert NF4Linear(nn.Linear(128, 64), 2, 2, double_quant=False).weight_nf4.bits_per_param == 4.5
    assert NF4Linear(nn.Linear(128, 64), 2, 2, use_rslora=True).scaling == 2 / math.sqrt(2)


def test_add_qlora_trains_generates_and_merges(base, rot_data):
    n = add_qlora(base, ["q_proj", "v_proj", "up_proj"], r=2, lora_alpha=4)
    cfg = base.config
    C = cfg.d_model
    assert n == count_trainable(base) == cfg.n_layer * 2 * ((C + C) + (C + C) + (C + 4 * C)) == 3456
    assert isinstance(base.layers[1].mlp.up_proj, NF4Linear) and isinstance(base.layers[1].attn.k_proj, nn.Linear)
    assert_trains(base, rot_data)
    assert_batch_equals_single(base)
    ids = torch.tensor([encode(PROMPTS[0])])
    with torch.no_grad():
        before = base(ids)
    merge_lora(base)
    assert not any(isinstance(m, NF4Linear) for m in base.modules())
    with torch.no_grad():
        torch.testing.assert_close(base(ids), before, rtol=1e-4, atol=1e-4)


def test_training_state_bytes_counts_what_trains(base):
    ids, mask = torch.tensor([encode(PROMPTS[0])] * 2), torch.ones(2, len(PROMPTS[0]), dtype=torch.long)
    full = training_state_bytes(base, ids, mask)
    n_all = sum(p.numel() for p in base.parameters())
    assert full == {"weights": 4 * n_all, "gradients": 4 * n_all, "optimizer": 8 * n_all}
    lo = copy.deepcopy(base)
    n = add_lora(lo, ["q_proj"], r=2, lora_alpha=2)
    got = training_state_bytes(lo, ids, mask)
    assert got["gradients"] == 4 * n and got["optimizer"] == 8 * n and got["weights"] == 4 * (n_all + n)
    q = copy.deepcopy(base)
    n = add_qlora(q, ["q_proj"], r=2, lora_alpha=2)
    qb = training_state_bytes(q, ids, mask)
    assert qb["gradients"] == 4 * n and qb["weights"] < got["weights"]
    assert count_trainable(lo) == n and lo.layers[0].attn.q_proj.lora_A.grad is None  # the copy trained, not lo
    with pytest.raises(ValueError, match="differ in shape"):
        training_state_bytes(lo, ids, mask[:, :3])
    with pytest.raises(ValueError, match="no trainable parameters"):
        training_state_bytes(copy.deepcopy(base).requires_grad_(False), ids, mask)


@pytest.mark.parametrize("kw, shown", [
    (dict(r=0), "r must be an int >= 1, got 0"),
    (dict(r=-1), "got -1"),
    (dict(r=33), "r=33 exceeds min(in_features, out_features) = 32"),
    (dict(lora_alpha=0), "lora_alpha must be a number > 0, got 0"),
])
def test_nf4_linear_bad_lora_args(kw, shown):
    with pytest.raises(ValueError, match=re.escape(shown)):
        NF4Linear(nn.Linear(64, 32), **(dict(r=4, lora_alpha=8) | kw))


def test_qlora_bad_block_sizes(base):
    with pytest.raises(ValueError, match="block_size=100 does not divide"):
        NF4Linear(nn.Linear(64, 32), r=2, lora_alpha=2, block_size=100)
    with pytest.raises(ValueError, match=re.escape("block_size=48 does not divide the 4096 weights of layers.0.attn.q_proj")):
        add_qlora(copy.deepcopy(base), ["q_proj"], r=2, lora_alpha=2, block_size=48)
    with pytest.raises(ValueError, match="block_size must be an int >= 1, got 0"):
        add_qlora(copy.deepcopy(base), ["q_proj"], r=2, lora_alpha=2, block_size=0)
    with pytest.raises(ValueError, match="r=65 exceeds"):
        add_qlora(copy.deepcopy(base), ["q_proj"], r=65, lora_alpha=2)
    with pytest.raises(TypeError, match="got Embedding"):
        NF4Linear(base.embed_tokens, r=2, lora_alpha=2)
    twice = copy.deepcopy(base)
    add_qlora(twice, ["q_proj"], r=2, lora_alpha=2)
    with pytest.raises(ValueError, match="already has LoRA layers"):
        add_lora(twice, ["v_proj"], r=2, lora_alpha=2)
    with pytest.raises(ValueError, match="already has LoRA layers"):
        add_qlora(twice, ["v_proj"], r=2, lora_alpha=2)


# --- the other exercise checkers ----------------------------------------------------------
def _lora_count(shape, r, mods):
    h, kv, ff = shape.d_model, shape.n_kv_heads * shape.head_dim, shape.d_ff
    io = {"q_proj": (h, h), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (h, h),
          "gate_proj": (h, ff), "up_proj": (h, ff), "down_proj": (ff, h)}
    return shape.n_layers * sum(r * sum(io[m]) for m in mods)


def _lora_count_no_gqa(shape, r, mods):
    h, ff = shape.d_model, shape.d_ff
    io = {"q_proj": (h, h), "k_proj": (h, h), "v_proj": (h, h), "o_proj": (h, h),
          "gate_proj": (h, ff), "up_proj": (h, ff), "down_proj": (ff, h)}
    return shape.n_layers * sum(r * sum(io[m]) for m in mods)


def test_check_lora_param_count(capsys):
    check_lora_param_count(_lora_count)
    assert "all checks passed" in capsys.readouterr().out
    with pytest.raises(AssertionError, match="grouped-query attention"):
        check_lora_param_count(_lora_count_no_gqa)
    with pytest.raises(AssertionError, match="expected 4,194,304"):
        check_lora_param_count(lambda shape, r, mods: 0)


def _roundtrip(w, cb, bs):
    blocks = w.reshape(-1, bs)
    amax = blocks.abs().amax(1, keepdim=True)
    return (cb[(blocks / amax).unsqueeze(-1).sub(cb).abs().argmin(-1)] * amax).reshape(w.shape)


def test_check_nf4_roundtrip(capsys):
    check_nf4_roundtrip(_roundtrip)
    assert "all checks passed" in capsys.readouterr().out
    with pytest.raises(AssertionError, match="absmax"):   # one scale for the whole tensor
        check_nf4_roundtrip(lambda w, cb, bs: _roundtrip(w.reshape(1, -1), cb, w.numel()).reshape(w.shape))
    with pytest.raises(AssertionError, match="nearest"):  # rounds down instead of to nearest
        check_nf4_roundtrip(lambda w, cb, bs: (cb[(torch.bucketize((w.reshape(-1, bs) / w.reshape(-1, bs).abs()
                            .amax(1, keepdim=True)), cb, right=True) - 1).clamp(0, 15)] * w.reshape(-1, bs).abs()
                            .amax(1, keepdim=True)).reshape(w.shape))
    with pytest.raises(AssertionError, match="shape"):
        check_nf4_roundtrip(lambda w, cb, bs: _roundtrip(w, cb, bs).reshape(-1))


# --- the chapter's tasks ------------------------------------------------------------------------
def test_letter_tasks_answer_and_verify():
    from ftlab.evaluate import score
    from ftlab.peft import FIRST_LETTER, LAST_LETTER
    for task, pick in ((LAST_LETTER, lambda w: w[-1]), (FIRST_LETTER, lambda w: w[0])):
        items = task.items(50, seed=3)
        assert len({it.prompt for it in items}) == 50 and not task.in_pretraining
        for it in items:
            verb, word = it.prompt.split(" ")
            assert verb == task.name and 3 <= len(word) <= 7 and it.answer == pick(word)
            assert task.verify(it, it.answer) and not task.verify(it, it.answer + "x")
        train = {it.prompt for it in task.items(200, seed=3, split="train")}
        assert train.isdisjoint(it.prompt for it in items)   # the fixed hash split holds
    # a Task object goes through the course's scorer like a named task
    model = TinyGPT(GPTConfig()).eval()
    assert len(score(model, LAST_LETTER, n=4, seed=0).correct) == 4


@pytest.mark.parametrize("kw, shown", [
    (dict(name="Last", position=-1), "name must be a lower-case word, got 'Last'"),
    (dict(name="two words", position=-1), "got 'two words'"),
    (dict(name=3, position=0), "got 3"),
    (dict(name="mid", position=2), "position must be 0 (first letter) or -1 (last letter), got 2"),
    (dict(name="mid", position=True), "got True"),
])
def test_letter_task_bad_input(kw, shown):
    from ftlab.peft import letter_task
    with pytest.raises(ValueError, match=re.escape(shown)):
        letter_task(**kw)
