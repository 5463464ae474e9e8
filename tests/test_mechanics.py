"""ftlab.mechanics: packing, accumulation, decoding knobs, new tokens and the meters."""
import math

import pytest
import torch

import ftlab
from ftlab import exercises, mechanics as M
from ftlab.model import GPTConfig, TinyGPT
from ftlab.tokenizer import EOS_ID, PAD_ID


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return TinyGPT(GPTConfig(n_layer=2)).eval()


def _examples(n=12):
    return ftlab.get_task("rev").examples(n, seed=0) + ftlab.get_task("lookup").examples(n, seed=0)


def test_pack_restarts_positions_and_fills_rows():
    ex = _examples()
    p = M.pack(ex, max_len=96)
    assert p.input_ids.shape[1] == 96
    assert int(p.loss_mask.sum()) == sum(len(e.completion) + 1 for e in ex)
    starts = (p.position_ids == 0) & (p.seq_ids >= 0)
    assert int(starts.sum()) == len(ex)           # one restart per example
    assert 0 <= p.pad_fraction < 0.3
    ids, _ = ftlab.sft_tensors(ex)
    assert p.input_ids.numel() < ids.numel()
    no_eos = M.pack(ex, add_eos=False)
    assert int((no_eos.input_ids == EOS_ID).sum()) == 0


def test_packed_example_is_independent_of_its_neighbour(model):
    ex = _examples(3)
    alone = M.packed_token_losses(model, M.pack([ex[1]]))[0].sum()
    for first in (ex[0], ex[2]):
        p = M.pack([first, ex[1]])
        iso = M.packed_token_losses(model, p)[0][p.seq_ids[0] == 1].sum()
        assert torch.allclose(iso, alone, atol=1e-5)
    naive = [M.packed_token_losses(model, M.pack([f, ex[1]]), isolate=False)[0] for f in (ex[0], ex[2])]
    assert not torch.allclose(naive[0].sum(), naive[1].sum())


def test_accumulation_global_matches_full_batch(model):
    ids, mask = ftlab.sft_tensors(sorted(_examples(), key=lambda e: len(e.prompt)))
    full = M.accumulated_grads(model, ids, mask, ids.shape[0])
    glob = M.accumulated_grads(model, ids, mask, 6, "global")
    per = M.accumulated_grads(model, ids, mask, 6, "per_micro")
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(glob, full))
    assert not all(torch.allclose(a, b, atol=1e-4) for a, b in zip(per, full))
    with pytest.raises(ValueError, match="normalization"):
        M.accumulated_grads(model, ids, mask, 6, "mean")
    with pytest.raises(ValueError, match="micro_batch_size"):
        M.accumulated_grads(model, ids, mask, 0)


def test_all_masked_mean_is_nan_and_lm_loss_guards():
    ce = torch.rand(2, 5)
    assert torch.isnan(M.masked_mean_naive(ce, torch.zeros(2, 5)))
    assert M.masked_mean_naive(ce, torch.ones(2, 5)) == pytest.approx(float(ce.mean()))


def test_greedy_ids_left_padding_matches_one_at_a_time(model):
    prompts = [ftlab.chat_prompt(it.prompt) for it in ftlab.get_task("rev").items(6, seed=0)]
    batch, done = M.greedy_ids(model, prompts, 5)
    alone = [M.greedy_ids(model, [p], 5)[0][0] for p in prompts]
    assert batch == alone and len(done) == 6
    gen = ftlab.generate(model, prompts, max_new_tokens=5)
    assert [g.text for g in gen] == [ftlab.decode(o) for o in alone]
    with pytest.raises(ValueError, match="padding_side"):
        M.greedy_ids(model, prompts, 5, padding_side="middle")
    with pytest.raises(ValueError, match="position_ids"):
        M.greedy_ids(model, prompts, 5, position_ids="zero")
    with pytest.raises(ValueError, match="max_new_tokens"):
        M.greedy_ids(model, prompts, 0)
    with pytest.raises(ValueError, match="prompts"):
        M.greedy_ids(model, "▶rev ab◆", 3)


def test_resize_mean_init_logit_is_the_mean_logit():
    torch.manual_seed(0)
    m = TinyGPT(GPTConfig(n_layer=1)).eval()
    V = m.config.vocab_size
    new = M.resize_token_embeddings(m, 2, init="mean")
    assert new == [V, V + 1] and m.lm_head.weight.shape[0] == V + 2
    logits = m(torch.tensor([[3, 4, 5]]))
    assert torch.allclose(logits[..., V], logits[..., :V].mean(-1), atol=1e-5)
    assert bool((logits[..., V] < logits[..., :V].max(-1).values).all())
    with pytest.raises(ValueError, match="init"):
        M.resize_token_embeddings(m, 1, init="zeros")
    with pytest.raises(ValueError, match="n_new"):
        M.resize_token_embeddings(m, 0)


def test_checkpointing_saves_fewer_bytes_and_recomputes(model):
    ids = torch.randint(1, 60, (4, 20))
    model.train()
    out = {}
    for ckpt in (False, True):
        with M.linear_flops(model) as fl:
            logits, saved = M.saved_activation_bytes(M.forward_checkpointed, model, ids, checkpoint=ckpt)
            logits.sum().backward()
        out[ckpt] = (saved, fl["flops"], logits.detach())
    model.zero_grad(set_to_none=True)
    model.eval()
    assert torch.allclose(out[False][2], out[True][2], atol=1e-5)
    assert out[True][0] < 0.5 * out[False][0]
    assert out[True][1] > out[False][1]


def test_kv_cache_bytes_matches_the_real_cache(model):
    ids = torch.randint(1, 60, (3, 11))
    with torch.no_grad():
        _, cache = model(ids, use_cache=True)
    real = sum(k.nbytes + v.nbytes for k, v in cache)
    cfg = model.config
    assert real == M.kv_cache_bytes(cfg.n_layer, cfg.n_head, cfg.d_model // cfg.n_head, 11, 3, 4)
    assert M.kv_cache_bytes(32, 32, 128, 1) == 2 * 32 * 32 * 128 * 2
    with pytest.raises(ValueError, match="n_kv_heads"):
        M.kv_cache_bytes(32, 0, 128, 1)
    with pytest.raises(ValueError, match="bytes_per_value"):
        M.kv_cache_bytes(32, 8, 128, 1, 1, 0)
    for dtype in ("int8", "fp8"):
        q = M.fake_quantize_kv(cache, dtype)
        err = max(float((a - b).abs().max() / b.abs().max()) for (a, _), (b, _) in zip(q, cache))
        assert 0 < err < 0.1, (dtype, err)
    with pytest.raises(ValueError, match="int4"):
        M.fake_quantize_kv(cache, "int4")


def test_log_grad_norms_sees_every_step():
    torch.manual_seed(0)
    m = TinyGPT(GPTConfig(n_layer=1))
    with M.log_grad_norms() as log:
        ftlab.train(m, ftlab.get_task("copy").examples(32), steps=3, lr=1e-3, grad_clip=None)
    assert len(log.norms) == 3 and all(n > 0 and math.isfinite(n) for n in log.norms)
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    opt.step()  # outside the block: not logged
    assert len(log.norms) == 3


def test_pack_bad_input():
    with pytest.raises(ValueError, match="max_len"):
        M.pack(_examples(2), max_len=1)
    with pytest.raises(TypeError, match="Example"):
        M.pack(["abc"])
    with pytest.raises(ValueError, match="exceeds max_len"):
        M.pack(_examples(2), max_len=5)
    with pytest.raises(ValueError, match="seq_ids"):
        M.packed_attention_mask(torch.zeros(4))


def test_checkers_accept_solutions_and_reject_mistakes():
    exercises.check_accumulation_loss(lambda ce, mask, n: ce.sum() / n)
    with pytest.raises(AssertionError, match="whole accumulated batch"):
        exercises.check_accumulation_loss(lambda ce, mask, n: ce.sum() / mask.sum() / 3)

    def mask_fn(s):
        T = len(s)
        return (torch.ones(T, T).tril().bool() & (s[:, None] == s[None])) | torch.eye(T).bool()
    exercises.check_packing_mask(mask_fn)
    with pytest.raises(AssertionError, match="own example"):
        exercises.check_packing_mask(lambda s: torch.ones(len(s), len(s)).tril().bool())
    exercises.check_kv_cache_bytes(lambda L, H, d, t, b, by: 2 * L * H * d * t * b * by)
    with pytest.raises(AssertionError):
        exercises.check_kv_cache_bytes(lambda L, H, d, t, b, by: L * H * d * t * b * by)
    exercises.check_zero_bytes(lambda n, N, s: n * (2 / (N if s >= 3 else 1) + 2 / (N if s >= 2 else 1)
                                                    + 12 / (N if s >= 1 else 1)))
    with pytest.raises(AssertionError):
        exercises.check_zero_bytes(lambda n, N, s: 16 * n / N)


def test_labels_mask_with_pad_as_eos_drops_every_eos():
    ids, mask = ftlab.sft_tensors(_examples(4))
    assert int((M.labels_mask(ids, mask) * (ids == EOS_ID)).sum()) == 8
    assert int((M.labels_mask(ids, mask, pad_id=EOS_ID) * (ids == EOS_ID)).sum()) == 0
    with pytest.raises(TypeError, match="pad_id"):
        M.labels_mask(ids, mask, pad_id="■")
