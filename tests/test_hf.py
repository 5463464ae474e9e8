"""ftlab.hf: the export matches TinyGPT, the tokenizer matches the course's template,
and the chapter's trainer helpers run on any causal LM (a tiny random Llama, offline)."""
import os
import subprocess
import sys

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("trl")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import ftlab  # noqa: E402
from ftlab import hf  # noqa: E402


@pytest.fixture(scope="module")
def base():
    return ftlab.load("base")


@pytest.fixture(scope="module")
def prompts():
    ps = [ftlab.chat_prompt(it.prompt) for it in ftlab.get_task("add").items(6, seed=0)]
    return ps + [ftlab.chat_prompt("rev kelom")]


def test_import_ftlab_stays_light():
    code = "import sys, ftlab; print(any(m in sys.modules for m in ('transformers', 'peft', 'trl')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", "import ftlab must not import the real stack"


def test_export_matches_tinygpt_on_a_left_padded_batch(base, prompts):
    exported = hf.to_transformers(base)
    assert type(exported).__name__ == "OPTForCausalLM"
    assert hf.logits_gap(base, exported, prompts) < 1e-5


def test_every_checkpoint_exports_exactly(prompts):
    for name in ("teacher", "math-weak"):
        m = ftlab.load(name)
        assert hf.logits_gap(m, hf.to_transformers(m), prompts) < 2e-5, name


def test_tokenizer_and_template_match_ftlab():
    tok = hf.tokenizer()
    msgs = [{"role": "user", "content": "12+34"}, {"role": "assistant", "content": "46"},
            {"role": "user", "content": "sort dabc"}]
    s = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    assert s == ftlab.apply_chat_template(msgs, add_generation_prompt=True)
    assert tok(s)["input_ids"] == ftlab.encode(s)
    assert tok.decode(ftlab.encode(s)) == s
    out = tok.apply_chat_template(msgs[:2], return_dict=True, return_assistant_tokens_mask=True)
    _, mask = ftlab.sft_tensors([ftlab.Example("▶12+34◆", "46")])
    assert out["assistant_masks"] == mask[0].tolist()


def test_template_rejects_turns_out_of_order():
    with pytest.raises(Exception, match="alternate"):
        hf.tokenizer().apply_chat_template([{"role": "assistant", "content": "x"}], tokenize=False)


def test_round_trip_and_greedy_generation(base, prompts, tmp_path):
    folder = hf.save_pretrained(base, tmp_path / "m")
    assert (folder / "model.safetensors").exists() and not list(folder.glob("*.bin"))
    model, tok = hf.load_causal_lm(folder)
    want = [g.text for g in ftlab.generate(base, prompts, max_new_tokens=6)]
    assert hf.hf_generate(model, tok, prompts, max_new_tokens=6) == want


def test_peft_lora_matches_ftlab_lora(base, prompts):
    from peft import get_peft_model

    pm = get_peft_model(hf.to_transformers(base), hf.lora_config(["q_proj", "fc1"], r=2, lora_alpha=4))
    with torch.no_grad():
        for n, p in pm.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)
    twin = hf.ftlab_twin(base, pm)
    assert hf.logits_gap(twin, pm, prompts) < 1e-5
    assert hf.logits_gap(twin, pm.merge_and_unload(), prompts) < 1e-4


def test_gguf_blocks_are_byte_identical(base, tmp_path):
    sd = base.state_dict()
    for kind in ("Q8_0", "Q4_0"):
        raw = hf.gguf_raw_tensors(hf.write_gguf(base, tmp_path / f"{kind}.gguf", kind))
        quantized = {n: b for n, (t, b) in raw.items() if t == kind}
        assert quantized and all(b == hf.gguf_pack(kind, sd[n]) for n, b in quantized.items())


def test_bad_input_is_named():
    with pytest.raises(TypeError, match="TinyGPT"):
        hf.to_transformers(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="not a TinyGPT parameter"):
        hf.opt_name("layers.0.attn.w_proj.weight")
    with pytest.raises(ValueError, match="Q8_0"):
        hf.gguf_pack("Q2_K", torch.zeros(32))
    with pytest.raises(ValueError, match="chat prompt"):
        hf.sft_dataset([ftlab.Example("12+34=", "46")])


def test_trainers_run_on_any_causal_lm(tmp_path):
    """The chapter's cells take the model as a parameter: here a random Llama folder."""
    llama = hf.tiny_llama(tmp_path / "llama")
    ex = ftlab.get_task("rev").examples(16, seed=0)
    sft = hf.sft_trainer(str(llama), hf.sft_dataset(ex), peft_config=hf.lora_config(r=2, lora_alpha=4),
                         max_steps=2, per_device_train_batch_size=8, output_dir=str(tmp_path / "s"))
    sft.train()
    assert type(sft.model.get_base_model()).__name__ == "LlamaForCausalLM"
    from ftlab.align import PreferencePair

    pairs = [PreferencePair(e.prompt[1:-1], e.completion, e.completion[::-1] + "x") for e in ex[:8]]
    dpo = hf.dpo_trainer(str(llama), hf.preference_dataset(pairs), max_steps=1,
                         per_device_train_batch_size=8, output_dir=str(tmp_path / "d"))
    dpo.train()
    assert abs(dpo.state.log_history[0]["loss"] - 0.6931) < 1e-3   # reference reloaded from the folder
