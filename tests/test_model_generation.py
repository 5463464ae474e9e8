import pytest
import torch

import ftlab
from ftlab.generation import generate, sequence_logprob
from ftlab.model import GPTConfig, TinyGPT


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return TinyGPT(GPTConfig(n_layer=2)).eval()


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="n_head=5"):
        GPTConfig(d_model=64, n_head=5)
    with pytest.raises(ValueError, match="n_layer"):
        GPTConfig(n_layer=0)


def test_names_match_real_models(model):
    names = {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    assert {"q_proj", "k_proj", "v_proj", "o_proj", "up_proj", "down_proj", "lm_head"} <= names


def test_kv_cache_matches_full_forward(model):
    ids = torch.tensor([ftlab.encode("▶rev abcd◆dcba")])
    full = model(ids)
    logits, cache = model(ids[:, :5], use_cache=True)
    steps = [logits]
    for t in range(5, ids.shape[1]):
        logits, cache = model(ids[:, t:t + 1], past_key_values=cache, use_cache=True)
        steps.append(logits)
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-5, rtol=1e-4)


def test_left_padding_gives_same_logits(model):
    a, b = ftlab.encode("▶rev abcdef◆"), ftlab.encode("▶sort ab◆")
    ids, mask = ftlab.tokenizer.pad_batch([a, b], side="left")
    batched = model(ids, attention_mask=mask)[1, -1]
    alone = model(torch.tensor([b]))[0, -1]
    torch.testing.assert_close(batched, alone, atol=1e-5, rtol=1e-4)


def test_generate_batched_equals_alone_and_is_seeded(model):
    prompts = ["▶rev abcdef◆", "▶1+2◆", "▶sort zyx◆"]
    batched = generate(model, prompts, max_new_tokens=6)
    for p, g in zip(prompts, batched):
        assert generate(model, [p], max_new_tokens=6)[0].text == g.text
    s1 = generate(model, prompts, max_new_tokens=6, temperature=1.0, seed=3, num_return_sequences=2)
    s2 = generate(model, prompts, max_new_tokens=6, temperature=1.0, seed=3, num_return_sequences=2)
    assert [g.text for g in s1] == [g.text for g in s2] and len(s1) == 6


def test_generation_logprobs_match_sequence_logprob(model):
    g = generate(model, ["▶rev ab◆"], max_new_tokens=5)[0]
    lp = sequence_logprob(model, ["▶rev ab◆"], [g.text], add_eos=g.finished)
    assert abs(lp.item() - g.logprob) < 1e-4


def test_sequence_logprob_is_batched_and_differentiable(model):
    prompts, comps = ["▶rev ab◆", "▶1+22◆"], ["ba", "23"]
    both = sequence_logprob(model, prompts, comps)
    one = sequence_logprob(model, prompts[1:], comps[1:])
    torch.testing.assert_close(both[1:], one, atol=1e-5, rtol=1e-4)
    both.sum().backward()
    assert model.lm_head.weight.grad is not None
    model.zero_grad()
    per_tok = sequence_logprob(model, prompts, comps, reduction="none")
    torch.testing.assert_close(per_tok.sum(-1), both.detach(), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("kw,match", [
    (dict(prompts="abc"), "list"),
    (dict(prompts=[]), "empty"),
    (dict(prompts=["a"], max_new_tokens=0), "max_new_tokens"),
    (dict(prompts=["a"], temperature=-1.0), "temperature"),
    (dict(prompts=["a" * 95], max_new_tokens=5), "MAX_LEN"),
])
def test_generate_rejects_bad_input(model, kw, match):
    with pytest.raises((ValueError, TypeError), match=match):
        generate(model, **kw)


def test_sequence_logprob_rejects_mismatch(model):
    with pytest.raises(ValueError, match="one completion per prompt"):
        sequence_logprob(model, ["a", "b"], ["x"])
    with pytest.raises(ValueError, match="'max'"):
        sequence_logprob(model, ["a"], ["x"], reduction="max")


def test_forward_rejects_bad_shapes(model):
    with pytest.raises(ValueError, match="attention_mask"):
        model(torch.zeros(1, 3, dtype=torch.long), attention_mask=torch.ones(1, 4))
    with pytest.raises(ValueError, match="block_size"):
        model(torch.zeros(1, 97, dtype=torch.long))
