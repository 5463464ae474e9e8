"""ftlab.memory against the published figures, and its refusals of bad input."""
import pytest

from ftlab.memory import (
    A100_BF16_TFLOPS, GB, LLAMA2_7B, LLAMA2_13B, LLAMA2_70B, LLAMA_MODULES, Adapters,
    ModelShape,
    activation_bytes, activation_terms, bits_per_param_nf4, count_params, format_table,
    full_ft_bytes, gpu_cost,
    gpu_hours, lora_bytes, lora_params, memory_table, qlora_bytes, target_shapes, train_flops,
)

QV = ("q_proj", "v_proj")


# --- published figures ---

@pytest.mark.parametrize("shape, published", [(LLAMA2_7B, 6.74e9), (LLAMA2_13B, 13.0e9), (LLAMA2_70B, 69.0e9)])
def test_param_count_from_shape_matches_published(shape, published):
    assert abs(count_params(shape) / published - 1) < 0.01, (count_params(shape), published)
    assert abs(shape.n_params / published - 1) < 0.01


def test_param_count_of_llama2_7b_is_exact():
    # peft prints "all params: 6,742,609,920" for Llama-2-7b with a 4,194,304-parameter adapter.
    assert count_params(LLAMA2_7B) == 6_742_609_920 - 4_194_304


def test_full_ft_is_16_bytes_per_param_zero_breakdown():
    b = full_ft_bytes(1)
    assert (b["weights"], b["grads"], b["master"], b["adam_m"], b["adam_v"]) == (2, 2, 4, 4, 4)
    assert b["optimizer"] == 12 and b["total"] == 16
    # ZeRO's example: 7.5B parameters need 120 GB of model states.
    assert full_ft_bytes(7.5e9)["total"] == pytest.approx(120e9)


def test_full_ft_7b():
    assert full_ft_bytes(7e9)["total"] / GB == pytest.approx(112.0)
    # With the real count it is a little less: 6.74e9 · 16 = 107.8 GB.
    assert full_ft_bytes(LLAMA2_7B.n_params)["total"] / GB == pytest.approx(107.81, abs=0.01)
    # "4-5x the model's parameter memory" understates it: 16 B against 2 B of bf16 weights is 8x.
    assert full_ft_bytes(7e9)["total"] / (2 * 7e9) == 8


def test_lora_single_4096_layer_r16():
    assert lora_params([(4096, 4096)], r=16) == 131_072


def test_lora_7b_q_v():
    shapes = target_shapes(LLAMA2_7B, QV)
    assert len(shapes) == 2 * 32
    assert lora_params(shapes, r=16) == 8_388_608
    assert lora_params(shapes, r=8) == 4_194_304  # what peft prints for Llama-2-7b, r=8, q_proj+v_proj
    fraction = lora_params(shapes, r=16) / LLAMA2_7B.n_params
    assert 0.001 < fraction < 0.0015, fraction  # "about 0.1%"


def test_lora_7b_all_linear_r16():
    # 7 modules x 32 layers; matches peft's 39,976,960 for Llama-2-7b at r=16 on all linears.
    assert lora_params(target_shapes(LLAMA2_7B), r=16) == 39_976_960


def test_gqa_shrinks_k_and_v():
    shapes = target_shapes(LLAMA2_70B, ("q_proj", "k_proj", "v_proj"))
    assert shapes[:3] == [(8192, 8192), (8192, 1024), (8192, 1024)]  # 8 kv heads x 128
    assert len(shapes) == 3 * 80


def test_nf4_bits_per_param():
    assert bits_per_param_nf4(double_quant=False) == pytest.approx(4.5)
    extra = bits_per_param_nf4(double_quant=True) - 4
    assert abs(extra - 0.127) < 1e-3, extra
    saved = bits_per_param_nf4(False) - bits_per_param_nf4(True)
    assert abs(saved - 0.373) < 1e-3, saved  # QLoRA paper: "0.373 bits per parameter"
    assert bits_per_param_nf4(True) / 8 == pytest.approx(0.516, abs=1e-3)


def test_qlora_7b_weights():
    k = lora_params(target_shapes(LLAMA2_7B), r=16)
    b = qlora_bytes(LLAMA2_7B.n_params, k)
    # Everything in NF4: 6.74e9 x 0.516 B = 3.48 GB, plus the 0.08 GB bf16 adapter.
    assert 3.4 < b["weights"] / GB < 3.6, b["weights"] / GB
    # bitsandbytes quantizes only the block linears. Evidence: for Llama-2-7b in 4-bit with this
    # adapter, peft prints "all params: 3,540,389,888", counting each packed NF4 weight as half.
    linear = sum(i * o for i, o in target_shapes(LLAMA2_7B))
    assert LLAMA2_7B.n_params - linear // 2 + k == 3_540_389_888
    # So embeddings, lm_head and norms stay in bf16: about 0.4 GB more than all-NF4.
    table = {row["method"]: row for row in memory_table(LLAMA2_7B)}
    assert 3.8 < table["QLoRA r=16"]["weights_gb"] < 4.1, table["QLoRA r=16"]


def test_lora_and_qlora_train_only_the_adapter():
    n, k = 7e9, 4e7
    lo, q = lora_bytes(n, k), qlora_bytes(n, k)
    for b in (lo, q):
        assert b["grads"] == 2 * k and b["optimizer"] == 12 * k
    assert lo["weights"] == 2 * n + 2 * k
    assert q["weights"] < lo["weights"] / 3


def test_memory_table_ordering_and_totals():
    rows = memory_table(LLAMA2_7B, r=16, batch=1, seq_len=2048, checkpointing=True)
    assert [r["method"] for r in rows] == ["full FT", "LoRA r=16", "QLoRA r=16"]
    full, lora, qlora = (r["total_gb"] for r in rows)
    assert full > lora > qlora
    for r in rows:
        parts = r["weights_gb"] + r["grads_gb"] + r["optimizer_gb"] + r["activations_gb"]
        assert r["total_gb"] == pytest.approx(parts)
    # With checkpointing and fused attention: full FT of 7B ~109 GB, LoRA ~15 GB, QLoRA ~5.4 GB.
    assert 105 < full < 112 and 14 < lora < 16 and 5 < qlora < 6, (full, lora, qlora)
    text = format_table(rows)
    assert "QLoRA r=16" in text and "total_gb" in text


def test_lora_keeps_more_activations_than_full_ft_without_checkpointing():
    # peft's per-module input copies outweigh the norm copies LoRA does not need.
    rows = {r["method"].split()[0]: r["activations_gb"]
            for r in memory_table(LLAMA2_7B, checkpointing=False)}
    fp32 = {r["method"].split()[0]: r["activations_gb"]
            for r in memory_table(LLAMA2_7B, checkpointing=False, autocast=False)}
    drop = {r["method"].split()[0]: r["activations_gb"]
            for r in memory_table(LLAMA2_7B, checkpointing=False, lora_dropout=True)}
    assert rows["QLoRA"] < rows["full"] < rows["LoRA"] < fp32["LoRA"], (rows, fp32)
    assert 12 < rows["full"] < 12.5 and 13 < rows["LoRA"] < 14 and 17 < fp32["LoRA"] < 19
    assert drop["LoRA"] > rows["LoRA"] + 2, drop


def test_korthikanti_formula_per_layer():
    # Korthikanti et al. 2022, eq. 1: a GPT layer (4h GeLU MLP, dropout, eager attention)
    # stores sbh·(34 + 5as/h) bytes; dropping the s×s terms leaves 34·sbh.
    gpt = ModelShape(1e9, d_model=4096, n_layers=1, n_heads=32, d_ff=4 * 4096)
    s, b, h, a = 2048, 1, 4096, 32
    kw = dict(checkpointing=False, mlp="gelu", accounting="korthikanti")
    eager = activation_bytes(gpt, b, s, flash_attention=False, dropout=True, **kw)
    assert eager == s * b * h * (34 + 5 * a * s / h)
    fused = activation_bytes(gpt, b, s, flash_attention=True, dropout=True, **kw)
    assert fused == 34 * s * b * h + 4 * a * s * b  # plus FlashAttention's fp32 log-sum-exp
    # Without dropout, section 4.1's list loses the masks and the stored dropout outputs.
    no_drop = activation_bytes(gpt, b, s, flash_attention=False, dropout=False, **kw)
    assert no_drop == 32 * s * b * h + 2 * a * s * s * b


def test_llama_block_terms():
    # Llama-2-7B by hand: Q, K, V and the SDPA output 8·sbh, the linear inputs (q/k/v,
    # MLP, down_proj) 4·sbh + 2·sbf, SwiGLU's gate, silu, up 6·sbf, two RMSNorms with
    # fp32 inputs, 1/rms rows and 16-bit normalised copies; the LSE is 4·a·s·b bytes.
    s, b, h, f, a = 2048, 1, 4096, 11008, 32
    terms = activation_terms(LLAMA2_7B, b, s)
    assert terms == {"attention": 8 * s * b * h, "scores": 4 * a * s * b,
                     "mlp": 6 * s * b * f, "linear_inputs": 4 * s * b * h + 2 * s * b * f,
                     "norms": 2 * (6 * s * b * h + 4 * s * b), "dropout_masks": 0}
    assert 12.0e9 < activation_bytes(LLAMA2_7B, b, s, checkpointing=False) < 12.5e9
    # Eager: the fp32 softmax and its bf16 copy, 6 bytes per score, plus o_proj's input.
    eager = activation_terms(LLAMA2_7B, b, s, flash_attention=False)
    assert eager["scores"] == 6 * a * s * s * b
    assert eager["linear_inputs"] == terms["linear_inputs"] + 2 * s * b * h
    assert 37e9 < activation_bytes(LLAMA2_7B, b, s, False, flash_attention=False) < 39e9
    # Grouped-query attention: 70B stores K and V at 8 of 64 heads' width.
    t70 = activation_terms(LLAMA2_70B, 1, 128)
    assert t70["attention"] == 2 * 128 * (2 * 8192 + 2 * 1024)


def _saved_per_layer(attn, adapter_dtype=None, autocast=False, lora_dropout=0.0):
    """Bytes autograd saves in one real transformers LlamaDecoderLayer (bf16, train mode).

    Counts each saved storage once, leaving out the parameters, the layer input and the
    rotary cos/sin (shared by all layers); with adapters, also the r-sized casts of the
    adapter weights that autocast caches (no sequence dimension).
    """
    torch = pytest.importorskip("torch")
    llama = pytest.importorskip("transformers.models.llama.modeling_llama")
    from transformers import LlamaConfig

    s, h, a, f = 40, 64, 4, 172
    torch.manual_seed(0)
    cfg = LlamaConfig(hidden_size=h, num_attention_heads=a, num_key_value_heads=2,
                      intermediate_size=f, num_hidden_layers=1)
    cfg._attn_implementation = attn
    layer = llama.LlamaDecoderLayer(cfg, 0).to(torch.bfloat16).train()
    if adapter_dtype is not None:
        peft = pytest.importorskip("peft")
        lcfg = peft.LoraConfig(r=4, target_modules=list(LLAMA_MODULES),
                               lora_dropout=lora_dropout)
        layer = peft.inject_adapter_in_model(lcfg, layer)
        for name, p in layer.named_parameters():
            p.requires_grad_("lora_" in name)
            if "lora_" in name:
                p.data = p.data.to(adapter_dtype)
    x = torch.randn(1, s, h, dtype=torch.bfloat16, requires_grad=True)
    pos = torch.arange(s)[None]
    cos, sin = llama.LlamaRotaryEmbedding(cfg)(x, pos)
    skip = {t.untyped_storage().data_ptr() for t in [*layer.parameters(), x, cos, sin]}
    seen = {}

    def pack(t):
        key = t.untyped_storage().data_ptr()
        if key not in skip and s in t.shape:
            seen[key] = t.untyped_storage().nbytes()
        return t

    mask = None
    if attn == "eager":
        mask = torch.full((s, s), float("-inf")).triu(1)[None, None].to(torch.bfloat16)
    ctx = torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast)
    with ctx, torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        layer(x, attention_mask=mask, position_ids=pos, position_embeddings=(cos, sin))
    shape = ModelShape(1e6, d_model=h, n_layers=1, n_heads=a, d_ff=f, n_kv_heads=2)
    return sum(seen.values()), shape, s


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_full_ft_terms_match_a_real_transformers_layer(attn):
    saved, shape, s = _saved_per_layer(attn)
    model = activation_bytes(shape, 1, s, False, flash_attention=attn == "sdpa")
    assert saved == model, (attn, saved, model)


@pytest.mark.parametrize("adapter_dtype, autocast, copy_bytes", [
    ("float32", False, 4),    # peft's default fp32 adapters, no autocast
    ("float32", True, 2),     # ... under bf16 autocast, as Trainer runs them
    ("bfloat16", False, None),  # adapters in the input's dtype: no cast, shared inputs
])
def test_lora_terms_match_a_real_peft_layer(adapter_dtype, autocast, copy_bytes):
    torch = pytest.importorskip("torch")
    saved, shape, s = _saved_per_layer("sdpa", getattr(torch, adapter_dtype), autocast)
    adapters = Adapters(r=4, copy_bytes=copy_bytes)
    model = activation_bytes(shape, 1, s, False, adapters=adapters)
    assert saved == model, (adapter_dtype, autocast, saved, model)


def test_lora_dropout_matches_peft_up_to_the_cpu_mask_width():
    torch = pytest.importorskip("torch")
    saved, shape, s = _saved_per_layer("sdpa", torch.float32, lora_dropout=0.1)
    model = activation_bytes(shape, 1, s, False, adapters=Adapters(4, copy_bytes=4,
                                                                   lora_dropout=True))
    # The model counts a 1-byte mask (GPU); PyTorch's CPU dropout keeps an fp32 one.
    inputs = 6 * shape.d_model + shape.d_ff  # the inputs of the seven adapted modules
    assert saved == model + (4 - 1) * s * inputs, (saved, model)


def test_checkpointing_cuts_activations_by_a_large_factor():
    full = activation_bytes(LLAMA2_7B, 1, 2048, checkpointing=False)
    ckpt = activation_bytes(LLAMA2_7B, 1, 2048, checkpointing=True)
    assert full / ckpt > 10, (full, ckpt)
    # Checkpointed: the 16-bit input of each of 32 layers, plus one layer being recomputed.
    one_layer = full / 32
    assert ckpt == pytest.approx(32 * 2 * 2048 * 4096 + one_layer)


def test_activations_scale_with_batch():
    assert activation_bytes(LLAMA2_7B, 4, 512, False) == pytest.approx(4 * activation_bytes(LLAMA2_7B, 1, 512, False))


def test_six_n_d_and_cost():
    assert train_flops(7e9, 1e6) == pytest.approx(4.2e16)
    assert train_flops(7e9, 1e6, flops_per_param_token=4) == pytest.approx(2.8e16)
    hours = gpu_hours(312e12 * 0.4 * 3600)  # one hour's work at the default peak and MFU
    assert hours == pytest.approx(1.0)
    assert gpu_hours(1e18, peak_tflops=A100_BF16_TFLOPS, mfu=0.5) == pytest.approx(1e18 / 156e12 / 3600)
    assert gpu_cost(10, 2.5) == 25


# --- bad input: a clear error that names the value ---

@pytest.mark.parametrize("call, exc, match", [
    (lambda: full_ft_bytes(0), ValueError, "n_params.*0"),
    (lambda: full_ft_bytes(-7e9), ValueError, r"-7000000000\.0"),
    (lambda: full_ft_bytes(float("nan")), ValueError, "nan"),
    (lambda: full_ft_bytes("7B"), TypeError, "'7B'"),
    (lambda: full_ft_bytes(True), TypeError, "True"),
    (lambda: lora_params([(4096, 4096)], 0), ValueError, "r must be >= 1, got 0"),
    (lambda: lora_params([(4096, 4096)], 16.0), TypeError, "16.0"),
    (lambda: lora_params([(4096, 8)], 16), ValueError, r"r=16 exceeds min\(in, out\)=8"),
    (lambda: lora_params([], 8), ValueError, "empty"),
    (lambda: lora_params((4096, 4096), 8), TypeError, "4096"),
    (lambda: lora_params([(4096, -1)], 8), ValueError, "out_features.*-1"),
    (lambda: target_shapes(LLAMA2_7B, ["q_proj", "qkv"]), ValueError, "'qkv'"),
    (lambda: target_shapes(LLAMA2_7B, "q_proj"), TypeError, "'q_proj'"),
    (lambda: target_shapes(LLAMA2_7B, []), ValueError, "empty"),
    (lambda: target_shapes(LLAMA2_7B, ["q_proj", "q_proj"]), ValueError, "twice"),
    (lambda: target_shapes("7b"), TypeError, "str"),
    (lambda: lora_bytes(7e9, 0), ValueError, "n_lora_params.*0"),
    (lambda: lora_bytes(4e7, 7e9), ValueError, "swapped"),
    (lambda: qlora_bytes(7e9, 4e7, n_unquantized=8e9), ValueError, "n_unquantized=8000000000"),
    (lambda: qlora_bytes(7e9, 4e7, n_unquantized=-1), ValueError, "-1"),
    (lambda: bits_per_param_nf4("yes"), TypeError, "'yes'"),
    (lambda: bits_per_param_nf4(True, block_size=0), ValueError, "block_size.*0"),
    (lambda: activation_bytes(LLAMA2_7B, 0, 2048, True), ValueError, "batch.*0"),
    (lambda: activation_bytes(LLAMA2_7B, 1, -5, True), ValueError, "seq_len.*-5"),
    (lambda: activation_bytes(LLAMA2_7B, 1, 2048, "yes"), TypeError, "'yes'"),
    (lambda: activation_bytes(LLAMA2_7B, 1, 2048, True, dropout=1), TypeError, "dropout"),
    (lambda: activation_terms(LLAMA2_7B, 1, 2048, mlp="relu"), ValueError, "'relu'"),
    (lambda: activation_terms(LLAMA2_7B, 1, 8, accounting="gpt"), ValueError, "'gpt'"),
    (lambda: activation_terms(LLAMA2_7B, 1, 8, adapters=16), TypeError, "16"),
    (lambda: activation_terms(LLAMA2_7B, 1, 8, mlp="gelu", adapters=Adapters()),
     ValueError, "swiglu"),
    (lambda: Adapters(r=0), ValueError, "r must be >= 1, got 0"),
    (lambda: Adapters(target_modules=["lm_head"]), ValueError, "'lm_head'"),
    (lambda: Adapters(target_modules="q_proj"), TypeError, "'q_proj'"),
    (lambda: Adapters(copy_bytes=2.0), TypeError, "2.0"),
    (lambda: memory_table(LLAMA2_7B, autocast="yes"), TypeError, "'yes'"),
    (lambda: qlora_bytes(7e9, 4e7, unquantized_bytes=0), ValueError, "unquantized_bytes"),
    (lambda: train_flops(7e9, 0), ValueError, "tokens.*0"),
    (lambda: gpu_hours(1e18, mfu=40), ValueError, "40"),
    (lambda: gpu_hours(1e18, peak_tflops=-312), ValueError, "-312"),
    (lambda: gpu_cost(10, -1), ValueError, "usd_per_hour.*-1"),
    (lambda: memory_table(LLAMA2_7B, r=5000), ValueError, "r=5000"),
    (lambda: memory_table(LLAMA2_7B, target_modules=["lm_head"]), ValueError, "'lm_head'"),
    (lambda: ModelShape(7e9, d_model=4096, n_layers=32, n_heads=30, d_ff=11008), ValueError, "n_heads=30"),
    (lambda: ModelShape(7e9, d_model=4096, n_layers=32, n_heads=32, d_ff=11008, n_kv_heads=5),
     ValueError, "n_kv_heads=5"),
    (lambda: ModelShape(7e9, d_model=0, n_layers=32, n_heads=32, d_ff=11008), ValueError, "d_model.*0"),
    (lambda: format_table([]), ValueError, "empty"),
])
def test_bad_input_raises_naming_the_value(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_all_llama_modules_are_known():
    assert len(target_shapes(LLAMA2_13B, LLAMA_MODULES)) == 7 * 40


def test_peft_counts_a_packed_params4bit_as_two_weights_per_byte():
    # The rule behind the 6,742,609,920 "all params" peft prints for a 4-bit Llama-2-7B:
    # a bitsandbytes Params4bit packs two 4-bit weights per uint8, and peft multiplies.
    torch = pytest.importorskip("torch")
    peft = pytest.importorskip("peft")
    bnb_nn = pytest.importorskip("bitsandbytes.nn")
    m = torch.nn.Module()
    m.packed = bnb_nn.Params4bit(torch.zeros(2048, 1, dtype=torch.uint8),
                                 requires_grad=False)  # 4,096 weights
    m.adapter = torch.nn.Parameter(torch.zeros(8, 64))
    assert peft.PeftModel.get_nb_trainable_parameters(m) == (512, 4096 + 512)
