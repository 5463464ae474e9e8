"""Tests of ftlab.quant: parity with the published tables and reference algorithms, and the
error orderings the quantization chapter claims, with margins that hold across seeds."""
import pytest
import torch

from ftlab.quant import (
    FP8_E4M3_MAX, LAYOUTS, NF4Weight, absmax_scale, awq_apply, awq_quantize, awq_scales,
    bits_per_weight, compare_4bit_formats, constants_bits_per_param, dequantize_blockwise,
    dequantize_nf4, double_dequantize, double_quantize, fake_quantize, fp4_e2m1_values,
    fp8_roundtrip, gguf_nbytes, gguf_roundtrip, gptq_hessian, gptq_quantize, int8_absmax_matmul,
    int8_outlier_matmul, int8_vectorwise_matmul, model_bytes, nf4_codebook, outlier_features,
    pack_4bit, quant_params, quantize_fp8, quantize_nf4, quantize_q4_0, quantize_q8_0, relative_error,
    rtn_quantize, smooth, smooth_scales, unpack_4bit, w8a8_matmul, zeropoint_params,
)

# bitsandbytes' hard-coded NF4 table: get_4bit_type("nf4") in bitsandbytes/functional.py.
BNB_NF4 = [
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
    -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
    0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
    0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0,
]


def gen(seed):
    return torch.Generator().manual_seed(seed)


# --- NF4 ------------------------------------------------------------------------------

def test_nf4_codebook_matches_bitsandbytes_table():
    cb = nf4_codebook()
    assert cb.shape == (16,)
    torch.testing.assert_close(cb.double(), torch.tensor(BNB_NF4, dtype=torch.float64), atol=1e-6, rtol=0)
    assert (cb > 0).sum() == 8 and (cb < 0).sum() == 7 and (cb == 0).sum() == 1


def test_nf4_round_trip():
    w = torch.randn(32, 128, generator=gen(0))
    codes, absmax = quantize_nf4(w)
    assert codes.dtype == torch.uint8 and codes.shape == (32 * 128,) and absmax.shape == (32 * 128 // 64,)
    w_hat = dequantize_nf4(codes, absmax, w.shape)
    assert w_hat.shape == w.shape
    # Nearest code: no weight is further from its code than half the widest gap in the table.
    half_gap = (nf4_codebook().diff().max() / 2).item()
    blocks_err = (w_hat - w).reshape(-1, 64).abs() / absmax[:, None]
    assert blocks_err.max().item() <= half_gap + 1e-6
    # Each block's largest |w| is stored exactly (it maps to ±1).
    i = w.reshape(-1, 64).abs().argmax(1, keepdim=True)
    torch.testing.assert_close(w_hat.reshape(-1, 64).gather(1, i), w.reshape(-1, 64).gather(1, i))
    assert relative_error(w_hat, w) < 0.12, relative_error(w_hat, w)
    # Values already on the scaled grid come back unchanged.
    on_grid = (nf4_codebook()[torch.randint(0, 16, (128,), generator=gen(1))] * 3.0)
    on_grid[0] = 3.0
    on_grid[64] = -3.0
    c, a = quantize_nf4(on_grid)
    torch.testing.assert_close(dequantize_blockwise(c, a, nf4_codebook(), on_grid.shape), on_grid)


def test_4bit_formats_mse_on_normal_weights():
    stats = compare_4bit_formats(torch.randn(2 ** 20, generator=gen(0)), block_size=64)
    print(stats)
    assert stats["nf4"] < stats["int4"] < stats["int4_sym"], stats
    assert stats["nf4"] == pytest.approx(0.0085, abs=4e-4)
    assert stats["int4"] == pytest.approx(0.0099, abs=4e-4)        # 16 levels, −8..7
    assert stats["int4_sym"] == pytest.approx(0.0116, abs=4e-4)    # 15 levels, −7..7
    assert stats["nf4"] < stats["fp4"]


def test_fp4_e2m1_values():
    v = fp4_e2m1_values()
    assert v.shape == (16,)
    assert sorted(set(v.abs().tolist())) == [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0]


def test_double_quantization_bits_and_accuracy():
    assert constants_bits_per_param(64) == 0.5
    assert constants_bits_per_param(64, double_quant=True) == pytest.approx(8 / 64 + 32 / (64 * 256))
    assert constants_bits_per_param(64, double_quant=True) == pytest.approx(0.127, abs=5e-4)
    _, absmax = quantize_nf4(torch.randn(1000 * 64, generator=gen(2)))   # 1000 blocks: last dq block ragged
    dq = double_quantize(absmax, block_size=256)
    assert dq.codes.dtype == torch.int8 and dq.scales.numel() == 4
    back = double_dequantize(dq)
    assert (back - absmax).abs().max().item() < 0.01 * absmax.max().item()
    assert relative_error(back, absmax) < 0.005


def test_nf4_weight_container():
    w = torch.randn(64, 256, generator=gen(3))
    plain, dq = NF4Weight.from_float(w), NF4Weight.from_float(w, double_quant=True)
    codes, absmax = quantize_nf4(w)
    torch.testing.assert_close(plain.dequantize(), dequantize_nf4(codes, absmax, w.shape))
    assert plain.bits_per_param == pytest.approx(4.5)
    assert dq.bits_per_param < 4.14
    assert relative_error(dq.dequantize(), w) < 1.01 * relative_error(plain.dequantize(), w)
    c = torch.randint(0, 16, (7,), dtype=torch.uint8, generator=gen(4))
    assert torch.equal(unpack_4bit(pack_4bit(c), 7), c)


# --- RTN ------------------------------------------------------------------------------

def test_rtn_hand_checked_row():
    w = torch.tensor([[0.2, -0.6, 0.4, 1.0]], dtype=torch.float64)
    # symmetric, absmax = 1: step 1/(2^(b-1)-1); w/step = w·1, w·3, w·7
    torch.testing.assert_close(rtn_quantize(w, 2), torch.tensor([[0.0, -1.0, 0.0, 1.0]], dtype=torch.float64))
    torch.testing.assert_close(rtn_quantize(w, 3), torch.tensor([[1, -2, 1, 3]], dtype=torch.float64) / 3)
    torch.testing.assert_close(rtn_quantize(w, 4), torch.tensor([[1, -4, 3, 7]], dtype=torch.float64) / 7)
    # asymmetric 2 bit: step = 1.6/3, zero = round(0.6/step) = round(1.125) = 1,
    # codes round(w/step) + 1 = [1, 0, 2, 3] -> (code - 1)·step
    step = 1.6 / 3
    torch.testing.assert_close(rtn_quantize(w, 2, symmetric=False),
                               torch.tensor([[0.0, -step, step, 2 * step]], dtype=torch.float64))
    scale, zero = zeropoint_params(w, 2)
    assert scale.item() == pytest.approx(step) and zero.item() == 1
    assert absmax_scale(w, 4).item() == pytest.approx(1 / 7)


def test_rtn_grids_at_4_bit():
    # Symmetric: a range ±1 reaches every code −7..7, and that is only 15 levels.
    assert rtn_quantize(torch.linspace(-1, 1, 1001).reshape(1, -1), 4).unique().numel() == 15
    # Zero-point: a lopsided range (zero lands exactly on code 3) uses all 16.
    assert rtn_quantize(torch.linspace(-0.25, 1, 1001).reshape(1, -1), 4, symmetric=False).unique().numel() == 16


def test_rtn_finer_granularity_lower_error():
    w = torch.randn(64, 256, generator=gen(5)) * torch.rand(1, 256, generator=gen(6)) * 3
    for sym in (True, False):
        errs = [relative_error(rtn_quantize(w, 4, g, sym), w) for g in ("tensor", None, 64, 16)]
        assert errs == sorted(errs, reverse=True), errs


# --- GPTQ -----------------------------------------------------------------------------

def obs_reference(W, X, bits, group_size=None, damp=0.01, symmetric=False):
    """Column-by-column OBS with an explicit inverse Hessian, updated by the OBS formula."""
    W = W.clone().double()
    n_in = W.shape[1]
    H = gptq_hessian(X.double())
    dead = H.diag() == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    H += damp * H.diag().mean() * torch.eye(n_in, dtype=torch.float64)
    Hinv = torch.linalg.inv(H)
    if group_size is None:
        scale, zero = quant_params(W, bits, symmetric, dim=1)
    Q = torch.zeros_like(W)
    for q in range(n_in):
        if group_size is not None and q % group_size == 0:
            scale, zero = quant_params(W[:, q:q + group_size], bits, symmetric, dim=1)
        Q[:, q] = fake_quantize(W[:, q:q + 1], scale, zero, bits, symmetric)[:, 0]
        err = (W[:, q] - Q[:, q]) / Hinv[q, q]
        W[:, q + 1:] -= err[:, None] * Hinv[q, q + 1:][None, :]
        # Remove column q from the problem: H⁻¹ of the remaining columns.
        Hinv = Hinv - torch.outer(Hinv[:, q], Hinv[q, :]) / Hinv[q, q]
    return Q


@pytest.mark.parametrize("group_size,block_size,symmetric,bits",
                         [(None, 128, False, 3), (None, 5, True, 4), (8, 5, False, 3), (6, 4, True, 2), (12, 32, False, 4)])
def test_gptq_matches_obs_reference(group_size, block_size, symmetric, bits):
    g = gen(7)
    W = torch.randn(8, 24, generator=g, dtype=torch.float64)
    X = torch.randn(64, 24, generator=g, dtype=torch.float64) @ torch.randn(24, 24, generator=g, dtype=torch.float64)
    X[:, 3] = 0                                                      # a dead input
    got = gptq_quantize(W, X, bits, group_size=group_size, block_size=block_size, symmetric=symmetric)
    torch.testing.assert_close(got, obs_reference(W, X, bits, group_size, symmetric=symmetric))
    assert (got[:, 3] == 0).all()


def correlated_inputs(seed, n=512, n_in=128, k=32, noise=0.3):
    """Inputs that live mostly in a k-dim subspace, as LLM activations largely do."""
    g = gen(seed)
    X = torch.randn(n, k, generator=g) @ torch.randn(k, n_in, generator=g) / k ** 0.5
    return X + noise * torch.randn(n, n_in, generator=g)


@pytest.mark.parametrize("bits", [3, 4])
def test_gptq_beats_rtn_on_correlated_inputs(bits):
    ratios = []
    for seed in range(3):
        W = torch.randn(64, 128, generator=gen(100 + seed))
        X = correlated_inputs(seed)
        e_rtn = ((W - rtn_quantize(W, bits, symmetric=False)) @ X.T).norm()
        e_gptq = ((W - gptq_quantize(W, X, bits)) @ X.T).norm()
        ratios.append((e_rtn / e_gptq).item())
    print("RTN/GPTQ output error", bits, ratios)
    assert min(ratios) > 1.5, ratios                                 # measured about 1.9-2.1


@pytest.mark.parametrize("group_size", [None, 8])
def test_gptq_act_order_is_gptq_on_permuted_columns(group_size):
    g = gen(8)
    W = torch.randn(8, 24, generator=g, dtype=torch.float64)
    X = torch.randn(64, 24, generator=g, dtype=torch.float64)
    X = X / X.norm(dim=0) * torch.linspace(0.5, 5.0, 24, dtype=torch.float64)   # H[i, i] grows
    rev = torch.arange(23, -1, -1)                                    # so act-order = reversed
    got = gptq_quantize(W, X, 3, group_size=group_size, block_size=5, act_order=True)
    want = obs_reference(W[:, rev], X[:, rev], 3, group_size)[:, rev]
    torch.testing.assert_close(got, want)
    plain = gptq_quantize(W, X, 3, group_size=group_size, block_size=5)
    assert not torch.allclose(got, plain)                           # the order matters
    # Already in decreasing order: act-order changes nothing.
    torch.testing.assert_close(gptq_quantize(W[:, rev], X[:, rev], 3, group_size, act_order=True),
                               gptq_quantize(W[:, rev], X[:, rev], 3, group_size))


@pytest.mark.parametrize("bits,group_size", [(3, None), (4, None), (4, 32)])
def test_gptq_act_order_helps_when_a_few_inputs_dominate(bits, group_size):
    ratios = []
    for seed in range(3):
        g = gen(300 + seed)
        W = torch.randn(64, 128, generator=g)
        X = correlated_inputs(400 + seed)
        X[:, torch.randperm(128, generator=g)[:8]] *= 10              # a few high-energy inputs
        e_nat = ((W - gptq_quantize(W, X, bits, group_size)) @ X.T).norm()
        e_ao = ((W - gptq_quantize(W, X, bits, group_size, act_order=True)) @ X.T).norm()
        ratios.append((e_nat / e_ao).item())
    print("natural/act-order output error", bits, group_size, ratios)
    assert min(ratios) > 1.3, ratios                                 # measured about 1.6-1.8


# --- AWQ ------------------------------------------------------------------------------

def test_awq_beats_rtn_with_salient_channels():
    for seed in range(3):
        g = gen(200 + seed)
        W = torch.randn(64, 128, generator=g)
        salient = torch.randperm(128, generator=g)[:4]
        X_cal, X_test = torch.randn(256, 128, generator=g), torch.randn(256, 128, generator=g)
        X_cal[:, salient] *= 20
        X_test[:, salient] *= 20
        for group_size in (None, 32):
            s, alpha = awq_scales(W, X_cal, 4, group_size)
            assert s.shape == (128,) and 0 <= alpha < 1
            assert s[salient].min() > s.median()                     # the salient channels get scaled up
            W_awq = awq_quantize(W, X_cal, 4, group_size)
            torch.testing.assert_close(W_awq, awq_apply(W, s, 4, group_size))
            e_rtn = ((W - rtn_quantize(W, 4, group_size, symmetric=False)) @ X_test.T).norm()
            e_awq = ((W - W_awq) @ X_test.T).norm()
            assert e_awq * 1.3 < e_rtn, (seed, group_size, e_awq.item(), e_rtn.item())


# --- LLM.int8() and SmoothQuant -------------------------------------------------------

def outlier_activations(seed, scale=25.0):
    g = gen(seed)
    x = torch.randn(64, 256, generator=g)
    W = torch.randn(128, 256, generator=g) * 0.05
    cols = torch.randperm(256, generator=g)[:3]
    x[:, cols] *= scale                                              # |x| up to ~ 80 in 3 features
    return x, W, cols


def test_int8_outlier_decomposition():
    for seed in range(3):
        x, W, cols = outlier_activations(seed)
        y = x @ W.T
        assert set(outlier_features(x).nonzero().flatten().tolist()) == set(cols.tolist())
        e_plain = relative_error(int8_absmax_matmul(x, W), y)
        e_dec = relative_error(int8_outlier_matmul(x, W), y)
        print("int8 per-tensor / LLM.int8()", e_plain / e_dec)
        assert e_plain > 5 * e_dec, (e_plain, e_dec)                  # measured about 14-18×
    x = torch.randn(32, 64, generator=gen(9))                         # no outliers: plain vector-wise int8
    W = torch.randn(16, 64, generator=gen(10))
    torch.testing.assert_close(int8_outlier_matmul(x, W, threshold=100.0), int8_vectorwise_matmul(x, W))


def test_smoothquant_cuts_w8a8_error():
    for seed in range(3):
        x, W, _ = outlier_activations(seed)
        y = x @ W.T
        W_s, x_s, s = smooth(W, x, alpha=0.5)
        torch.testing.assert_close(x_s @ W_s.T, y, rtol=1e-4, atol=1e-4)   # exact in real arithmetic
        errs = {}
        for alpha in (0.0, 0.5):
            W_a, x_a, _ = smooth(W, x, alpha)
            errs[alpha] = relative_error(w8a8_matmul(x_a, W_a), y)
        print("SmoothQuant W8A8 error", errs, errs[0.0] / errs[0.5])
        assert errs[0.0] > 2.5 * errs[0.5], errs                       # measured about 4×
    torch.testing.assert_close(smooth_scales(torch.tensor([4.0]), torch.tensor([0.25]), 0.5), torch.tensor([4.0]))


# --- GGUF blocks and FP8 ----------------------------------------------------------------

def test_gguf_q8_0_and_q4_0_bytes_match_gguf_py():
    """Pack ftlab's codes into ggml's block structs; gguf-py must produce the same bytes."""
    gguf_quants = pytest.importorskip("gguf.quants")
    from gguf import GGMLQuantizationType
    np = pytest.importorskip("numpy")
    w = torch.randn(64, 1024, generator=gen(30)) * 0.02
    q, d = quantize_q8_0(w)                                           # block_q8_0: fp16 d, 32 int8
    ours = np.concatenate([d.numpy().view(np.uint8).reshape(-1, 2),
                           q.numpy().astype(np.int8).view(np.uint8).reshape(-1, 32)], axis=1)
    ref = gguf_quants.quantize(w.numpy(), GGMLQuantizationType.Q8_0)
    assert (ours.reshape(ref.shape) == ref).all()
    q, d = quantize_q4_0(w)                                           # block_q4_0: fp16 d, 16 bytes
    q = q.numpy().reshape(-1, 32).astype(np.uint8)
    nibbles = q[:, :16] | (q[:, 16:] << 4)                            # first 16 in the low nibbles
    ours = np.concatenate([d.numpy().view(np.uint8).reshape(-1, 2), nibbles], axis=1)
    ref = gguf_quants.quantize(w.numpy(), GGMLQuantizationType.Q4_0)
    assert (ours.reshape(ref.shape) == ref).all()


def test_nf4_matches_bitsandbytes_quantize_4bit():
    bnbf = pytest.importorskip("bitsandbytes.functional")
    x = torch.randn(4096, generator=gen(31))
    packed, state = bnbf.quantize_4bit(x, blocksize=64, quant_type="nf4")
    codes, absmax = quantize_nf4(x, 64)
    assert torch.equal(pack_4bit(codes.to(torch.uint8)).reshape(-1), packed.reshape(-1))
    torch.testing.assert_close(absmax.reshape(-1), state.absmax.reshape(-1))
    torch.testing.assert_close(dequantize_nf4(codes, absmax, x.shape, 64),
                               bnbf.dequantize_4bit(packed, state).reshape(-1))


def test_gguf_layouts_match_gguf_py_sizes():
    gguf = pytest.importorskip("gguf")
    for name, lay in LAYOUTS.items():
        block, nbytes = gguf.GGML_QUANT_SIZES[getattr(gguf.GGMLQuantizationType, name)]
        assert (lay.block_weights, lay.block_bytes) == (block, nbytes), name


def test_gguf_layouts_bits_per_weight():
    assert {t: LAYOUTS[t].block_bytes for t in LAYOUTS} == {"Q8_0": 34, "Q4_0": 18, "Q4_K": 144}
    assert bits_per_weight("Q8_0") == 8.5
    assert bits_per_weight("Q4_0") == 4.5
    assert bits_per_weight("Q4_K") == 4.5
    assert gguf_nbytes((4096, 4096), "Q4_K") == 4096 * 4096 // 256 * 144


def test_gguf_round_trip_errors_ordered():
    for seed in range(2):
        w = torch.randn(64, 1024, generator=gen(300 + seed)) * 0.02
        errs = {t: relative_error(gguf_roundtrip(w, t), w) for t in ("Q8_0", "Q4_K", "Q4_0")}
        print(errs)
        assert errs["Q8_0"] < 0.01
        assert errs["Q8_0"] < errs["Q4_K"] <= 1.02 * errs["Q4_0"] and errs["Q4_0"] < 0.12, errs
    # Q4_0 stores each block's largest-magnitude weight exactly, as code 0 (−8·d).
    w = torch.randn(2, 32, generator=gen(11))
    q, d = quantize_q4_0(w)
    i = w.abs().argmax(1)
    assert (q[torch.arange(2), i] == 0).all()


def test_fp8_e4m3_round_trip():
    x = torch.randn(4096, generator=gen(12)) * 3
    x8, scale = quantize_fp8(x)
    assert x8.dtype == torch.float8_e4m3fn
    assert (x8.float().abs().max() == FP8_E4M3_MAX).item()
    back = fp8_roundtrip(x)
    assert relative_error(back, x) < 0.035
    # 3 mantissa bits: relative rounding error ≤ 2^-4 for every value in the normal range.
    normal = x.abs() / scale >= 2.0 ** -6
    assert ((back - x).abs() / x.abs())[normal].max().item() <= 2 ** -4 + 1e-6


def test_model_bytes():
    assert model_bytes(7_000_000_000, 16) == 14e9
    assert model_bytes(7_000_000_000, bits_per_weight("Q4_K")) == pytest.approx(3.9375e9)


# --- bad input gets a clear error --------------------------------------------------------

W_OK, X_OK = torch.randn(4, 8), torch.randn(16, 8)


@pytest.mark.parametrize("call,exc,needle", [
    (lambda: rtn_quantize(W_OK, 1), ValueError, "1"),
    (lambda: rtn_quantize(W_OK, 9), ValueError, "9"),
    (lambda: rtn_quantize(W_OK, 4, group_size=3), ValueError, "3"),
    (lambda: rtn_quantize(W_OK, 4, group_size="row"), ValueError, "row"),
    (lambda: rtn_quantize(torch.randn(8), 4), ValueError, "(8,)"),
    (lambda: rtn_quantize(torch.ones(4, 8, dtype=torch.int32), 4), TypeError, "int32"),
    (lambda: quantize_nf4(torch.randn(100)), ValueError, "100"),
    (lambda: quantize_nf4(torch.randn(128), block_size=0), ValueError, "0"),
    (lambda: gptq_quantize(W_OK, torch.randn(16, 5), 4), ValueError, "5"),
    (lambda: gptq_quantize(W_OK, X_OK, 10), ValueError, "10"),
    (lambda: gptq_quantize(W_OK, X_OK, 4, damp=-0.1), ValueError, "-0.1"),
    (lambda: gptq_quantize(W_OK, X_OK, 4, group_size=5), ValueError, "5"),
    (lambda: gptq_quantize(W_OK, X_OK, 4, act_order="yes"), TypeError, "yes"),
    (lambda: awq_scales(W_OK, X_OK, 4, n_grid=0), ValueError, "0"),
    (lambda: smooth(W_OK, X_OK, alpha=1.5), ValueError, "1.5"),
    (lambda: int8_outlier_matmul(X_OK, W_OK, threshold=0), ValueError, "0"),
    (lambda: int8_outlier_matmul(X_OK, W_OK, threshold=-6.0), ValueError, "-6.0"),
    (lambda: gguf_roundtrip(torch.randn(4, 48), "Q4_0"), ValueError, "32"),
    (lambda: gguf_roundtrip(torch.randn(4, 64), "Q5_K"), ValueError, "Q5_K"),
    (lambda: bits_per_weight("Q3_K"), ValueError, "Q3_K"),
    (lambda: model_bytes(-1, 4), ValueError, "-1"),
    (lambda: model_bytes(10, 0), ValueError, "0"),
    (lambda: quantize_fp8(torch.ones(3, dtype=torch.int64)), TypeError, "int64"),
])
def test_bad_input_is_rejected_with_the_value(call, exc, needle):
    with pytest.raises(exc) as info:
        call()
    assert needle in str(info.value), str(info.value)


# --- whole models: hooks, per-layer quantization, sensitivity ----------------------------

import ftlab  # noqa: E402
from ftlab.quant import (capture_inputs, check_absmax_int8, check_bits_per_weight, check_group_rtn,  # noqa: E402
                         eval_batch, heldout_nll, layer_output_error, layer_sensitivity, linear_names,
                         plant_outlier_channels, quantize_model)


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    model = ftlab.TinyGPT(ftlab.GPTConfig(n_layer=2)).eval()
    ids, mask = eval_batch(["rev", "add"], n_per_task=8, seed=0)
    return model, ids, mask


def test_linear_names_in_forward_order(tiny):
    model, _, _ = tiny
    names = linear_names(model)
    assert names[:6] == ["layers.0.attn.q_proj", "layers.0.attn.k_proj", "layers.0.attn.v_proj",
                         "layers.0.attn.o_proj", "layers.0.mlp.up_proj", "layers.0.mlp.down_proj"]
    assert len(names) == 12 and "lm_head" not in names
    assert linear_names(model, include_head=True)[-1] == "lm_head"


def test_capture_inputs_matches_a_manual_forward(tiny):
    model, ids, _ = tiny
    acts = capture_inputs(model, ids)
    real = ids != ftlab.tokenizer.PAD_ID
    assert set(acts) == set(linear_names(model))
    with torch.no_grad():
        x = model.embed_tokens(ids) + model.embed_positions(torch.arange(ids.shape[1]))[None]
        want = model.layers[0].ln_1(x)[real]                       # q_proj's input on real tokens
    torch.testing.assert_close(acts["layers.0.attn.q_proj"], want)
    assert acts["layers.0.mlp.down_proj"].shape == (int(real.sum()), 4 * 64)
    assert all(not m._forward_hooks for m in model.modules())      # hooks are removed


def test_quantize_model_rtn_per_layer_and_mixed_precision(tiny):
    model, ids, _ = tiny
    before = {k: v.clone() for k, v in model.state_dict().items()}
    q = quantize_model(model, "rtn", 4, bits_for={"layers.1.mlp.up_proj": 16, "layers.0.attn.q_proj": 8})
    for k, v in model.state_dict().items():                         # the original is untouched
        assert torch.equal(v, before[k]), k
    get = lambda m, n: m.get_submodule(n).weight.detach()
    torch.testing.assert_close(get(q, "layers.0.attn.k_proj"),
                               rtn_quantize(get(model, "layers.0.attn.k_proj"), 4, symmetric=False))
    torch.testing.assert_close(get(q, "layers.0.attn.q_proj"),
                               rtn_quantize(get(model, "layers.0.attn.q_proj"), 8, symmetric=False))
    assert torch.equal(get(q, "layers.1.mlp.up_proj"), get(model, "layers.1.mlp.up_proj"))
    assert torch.equal(q.lm_head.weight, model.lm_head.weight)      # the head stays in float
    only = quantize_model(model, "rtn", 3, names=["layers.0.attn.v_proj"])
    changed = [n for n in linear_names(model) if not torch.equal(get(only, n), get(model, n))]
    assert changed == ["layers.0.attn.v_proj"]


def test_gptq_and_awq_whole_model_beat_rtn_on_layer_outputs():
    base = ftlab.load("base")
    cal_ids, _ = eval_batch(n_per_task=8, seed=1, split="train")
    test_ids, _ = eval_batch(n_per_task=8, seed=2, split="test")
    calib, test = capture_inputs(base, cal_ids), capture_inputs(base, test_ids)
    err = {m: sum(layer_output_error(base, quantize_model(base, m, 3, calib=calib), test).values())
           for m in ("rtn", "gptq", "awq")}
    assert err["gptq"] * 1.5 < err["rtn"], err
    assert err["awq"] < err["rtn"], err


def test_planted_outliers_keep_the_function_and_hurt_rtn(tiny):
    model, ids, mask = tiny
    spiky = plant_outlier_channels(model, n_channels=3, factor=20.0, seed=0)
    with torch.no_grad():
        torch.testing.assert_close(spiky(ids), model(ids), rtol=1e-4, atol=1e-4)
    x0, x1 = capture_inputs(model, ids)["layers.0.mlp.up_proj"], capture_inputs(spiky, ids)["layers.0.mlp.up_proj"]
    ratio = x1.abs().mean(0) / x0.abs().mean(0)
    assert int((ratio > 10).sum()) == 3
    assert heldout_nll(spiky, (ids, mask)) == pytest.approx(heldout_nll(model, (ids, mask)), abs=1e-4)


def test_layer_sensitivity_covers_each_layer(tiny):
    model, ids, mask = tiny
    names = linear_names(model)[:3]
    sens = layer_sensitivity(model, (ids, mask), bits=2, names=names)
    assert list(sens) == names and all(isinstance(v, float) for v in sens.values())


@pytest.mark.parametrize("call,exc,needle", [
    (lambda m: quantize_model(m, "hqq", 4), ValueError, "hqq"),
    (lambda m: quantize_model(m, "rtn", 1), ValueError, "1"),
    (lambda m: quantize_model(m, "gptq", 4), ValueError, "calib"),
    (lambda m: quantize_model(m, "rtn", 4, names=["layers.0.attn.x_proj"]), ValueError, "x_proj"),
    (lambda m: quantize_model(m, "rtn", 4, bits_for={"nope": 8}), ValueError, "nope"),
    (lambda m: quantize_model(m, "gptq", 4, calib={}), ValueError, "q_proj"),
    (lambda m: quantize_model(m, "rtn", 4, act_order=True), ValueError, "rtn"),
    (lambda m: quantize_model(m, "gptq", 4, act_order=1), TypeError, "1"),
    (lambda m: linear_names("model"), TypeError, "str"),
    (lambda m: eval_batch(["add"], n_per_task=0), ValueError, "0"),
    (lambda m: eval_batch(["nosuchtask"]), ValueError, "nosuchtask"),
    (lambda m: plant_outlier_channels(m, n_channels=0), ValueError, "0"),
    (lambda m: plant_outlier_channels(m, factor=-2.0), ValueError, "-2.0"),
    (lambda m: plant_outlier_channels(m, n_channels=65), ValueError, "65"),
])
def test_whole_model_bad_input(tiny, call, exc, needle):
    with pytest.raises(exc) as info:
        call(tiny[0])
    assert needle in str(info.value), str(info.value)


# --- exercise checkers accept the right answer and reject a wrong one ----------------------

def test_checkers_accept_reference_and_reject_wrong():
    def absmax_ok(x):
        s = x.abs().max().item() / 127
        return torch.round(x / s).clamp(-127, 127).to(torch.int8), s
    check_absmax_int8(absmax_ok)
    with pytest.raises(AssertionError):
        check_absmax_int8(lambda x: (torch.round(x / (x.abs().max() / 128)).to(torch.int8), x.abs().max().item() / 128))
    check_group_rtn(lambda w, b, g: rtn_quantize(w, b, g))
    with pytest.raises(AssertionError):
        check_group_rtn(lambda w, b, g: rtn_quantize(w, b, None))    # per channel is not per group
    check_bits_per_weight(lambda n, fields: 8 * sum(fields) / n)
    with pytest.raises(AssertionError):
        check_bits_per_weight(lambda n, fields: 8 * fields[-1] / n)  # forgets the scales


def test_heldout_nll_chunks_give_the_padded_batch_loss():
    torch.manual_seed(0)
    model = ftlab.TinyGPT(ftlab.GPTConfig(n_layer=2)).eval()
    ids, mask = eval_batch(["rev", "add", "add3_steps"], n_per_task=50, seed=0)  # 150 rows, > one chunk
    with torch.no_grad():
        padded = float(ftlab.lm_loss(model, ids, mask))
    assert heldout_nll(model, (ids, mask)) == pytest.approx(padded, rel=1e-6)
