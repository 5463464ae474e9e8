"""The lab's model in the real stack: transformers, peft, TRL, bitsandbytes and GGUF.

``to_transformers(model)`` copies a TinyGPT into an ``OPTForCausalLM`` with the same
numbers, and ``tokenizer()`` builds a ``PreTrainedTokenizerFast`` for the course's
characters with the chat template written in Jinja. From there every real library
works on the model the chapters trained.

Why OPT and not GPT-2? Both are pre-LayerNorm decoders with learned absolute positions,
GELU and biases, so either maps exactly. OPT fits with no reshaping and no extra
arguments: separate ``q_proj``/``k_proj``/``v_proj`` linears (GPT-2 fuses them into one
transposed ``Conv1D``, so a peft ``target_modules=["q_proj"]`` cannot pick out the
queries), ``fc1``/``fc2`` plain linears, and position ids counted from the attention
mask (``OPTLearnedPositionalEmbedding``), which is exactly what TinyGPT does for a
left-padded batch. GPT-2 in transformers 5 counts positions from the first column
unless every caller passes ``position_ids``.

The transformers, peft, TRL, bitsandbytes and gguf imports live inside the functions:
``import ftlab`` stays fast and works without them (``pip install -e .[stack]``).

The ``*_config`` functions at the bottom build the config objects that the chapters'
"In the real stack" boxes show; ``tests/test_real_stack.py`` constructs every one.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch

from .model import TinyGPT
from .tokenizer import ASSISTANT, EOS, EOS_ID, MAX_LEN, PAD, PAD_ID, USER, VOCAB

# OPT's learned position table starts at row 2 (a fairseq heritage: rows 0-1 were for
# padding); modeling_opt.OPTLearnedPositionalEmbedding adds this offset.
OPT_POSITION_OFFSET = 2

# The chat template of ftlab.chat.apply_chat_template in Jinja. {% generation %} marks
# what the assistant writes (its answer and the end marker, not the "◆" that opens the
# turn): apply_chat_template(return_assistant_tokens_mask=True) turns it into the mask
# TRL's assistant_only_loss trains on, the same mask as ftlab.sft_tensors.
CHAT_TEMPLATE = (
    "{%- for m in messages -%}"
    "{%- if m['role'] != ['user', 'assistant'][loop.index0 % 2] -%}"
    "{{ raise_exception('turns must alternate user, assistant, ...') }}"
    "{%- endif -%}"
    "{%- if m['role'] == 'user' -%}" + USER + "{{ m['content'] }}"
    "{%- else -%}" + ASSISTANT + "{% generation %}{{ m['content'] }}" + EOS + "{% endgeneration %}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}" + ASSISTANT + "{%- endif -%}"
)


def quiet() -> None:
    """Silence the libraries' progress bars and info logs (the book renders every line)."""
    import datasets
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    datasets.disable_progress_bars()
    datasets.utils.logging.set_verbosity_error()


def _check_tinygpt(model) -> None:
    if not isinstance(model, TinyGPT):
        raise TypeError(f"expected a TinyGPT (ftlab.load(...)), got {type(model).__name__}")


def opt_config(model: TinyGPT):
    """The ``OPTConfig`` with TinyGPT's sizes: pre-LN, exact GELU, biases, untied embeddings."""
    from transformers import OPTConfig

    _check_tinygpt(model)
    c = model.config
    return OPTConfig(
        vocab_size=c.vocab_size, hidden_size=c.d_model, num_hidden_layers=c.n_layer,
        num_attention_heads=c.n_head, ffn_dim=c.mlp_ratio * c.d_model,
        max_position_embeddings=c.block_size, word_embed_proj_dim=c.d_model,
        do_layer_norm_before=True, activation_function="gelu", enable_bias=True,
        layer_norm_elementwise_affine=True, tie_word_embeddings=False,
        dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, layerdrop=0.0,
        pad_token_id=PAD_ID, bos_token_id=EOS_ID, eos_token_id=EOS_ID,
    )


# TinyGPT module name -> OPT module name, inside each block (layers.{i} -> model.decoder.layers.{i}).
OPT_NAMES = {"ln_1": "self_attn_layer_norm", "ln_2": "final_layer_norm",
             "attn.q_proj": "self_attn.q_proj", "attn.k_proj": "self_attn.k_proj",
             "attn.v_proj": "self_attn.v_proj", "attn.o_proj": "self_attn.out_proj",
             "mlp.up_proj": "fc1", "mlp.down_proj": "fc2"}
_TOP = {"embed_tokens": "model.decoder.embed_tokens", "embed_positions": "model.decoder.embed_positions",
        "ln_f": "model.decoder.final_layer_norm", "lm_head": "lm_head"}


def opt_name(key: str) -> str:
    """The OPT state-dict key of a TinyGPT key, e.g. ``layers.0.mlp.up_proj.weight`` -> ``...fc1.weight``."""
    if not isinstance(key, str):
        raise TypeError(f"key must be a str, got {type(key).__name__}")
    module, _, kind = key.rpartition(".")
    if module in _TOP:
        return f"{_TOP[module]}.{kind}"
    parts = module.split(".", 2)
    if len(parts) == 3 and parts[0] == "layers" and parts[2] in OPT_NAMES:
        return f"model.decoder.layers.{parts[1]}.{OPT_NAMES[parts[2]]}.{kind}"
    raise ValueError(f"{key!r} is not a TinyGPT parameter name")


def _opt_state_dict(model: TinyGPT) -> dict[str, torch.Tensor]:
    """TinyGPT's tensors under OPT's names."""
    out = {opt_name(k): v.detach().clone() for k, v in model.state_dict().items()}
    pos = out["model.decoder.embed_positions.weight"]
    # OPT reads row position + 2. Rows 0 and 1 never hold a real token; padding lands on
    # row 1 (position -1), and TinyGPT clamps padding to position 0, so copy that row.
    out["model.decoder.embed_positions.weight"] = torch.cat(
        [pos[:1].expand(OPT_POSITION_OFFSET, -1), pos])
    return out


def to_transformers(model: TinyGPT):
    """An ``OPTForCausalLM`` with the same logits as ``model`` (eval mode, float32)."""
    from transformers import OPTForCausalLM

    _check_tinygpt(model)
    quiet()
    hf = OPTForCausalLM(opt_config(model))
    missing, unexpected = hf.load_state_dict(_opt_state_dict(model), strict=False)
    if missing or unexpected:  # a transformers release that renames a module lands here
        raise RuntimeError(
            f"OPT layout changed: missing {missing}, unexpected {unexpected}"
        )
    hf.generation_config.pad_token_id = PAD_ID
    hf.generation_config.eos_token_id = EOS_ID
    return hf.eval()


def tokenizer():
    """A ``PreTrainedTokenizerFast``: one token per character, the course's ids, the chat template.

    A character outside the vocabulary becomes PAD here, where ``ftlab.encode`` raises.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({ch: i for i, ch in enumerate(VOCAB)}, unk_token=PAD))
    # Every character is its own word; Fuse joins them back without spaces.
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tok.decoder = decoders.Fuse()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=PAD, eos_token=EOS,
                                   padding_side="left", clean_up_tokenization_spaces=False,
                                   model_max_length=MAX_LEN)
    fast.chat_template = CHAT_TEMPLATE
    return fast


def logits_gap(model: TinyGPT, hf_model, prompts: Sequence[str]) -> float:
    """Largest |logit difference| between TinyGPT and its export on a left-padded batch, real tokens only."""
    from .tokenizer import encode, pad_batch

    ids, mask = pad_batch([encode(p) for p in prompts], side="left")
    with torch.no_grad():
        ours = model(ids, attention_mask=mask)
        theirs = hf_model(input_ids=ids, attention_mask=mask).logits
    real = mask.bool()
    return float((ours[real] - theirs[real]).abs().max())


def hf_generate(hf_model, tok, prompts: Sequence[str], max_new_tokens: int = 16) -> list[str]:
    """Greedy answers from ``hf_model.generate`` on a left-padded batch, EOS and padding removed."""
    batch = tok(list(prompts), return_tensors="pt", padding=True)
    with torch.no_grad():
        out = hf_model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False,
                                pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    new = out[:, batch["input_ids"].shape[1]:]
    texts = tok.batch_decode(new, skip_special_tokens=False)
    return [t.split(EOS)[0].replace(PAD, "") for t in texts]


def save_pretrained(model: TinyGPT, path: str | Path):
    """Export ``model`` and the tokenizer to ``path`` (safetensors); returns the folder."""
    path = Path(path)
    to_transformers(model).save_pretrained(path, safe_serialization=True)
    tokenizer().save_pretrained(path)
    return path


def load_causal_lm(name_or_path: str | Path):
    """(model, tokenizer) from a folder or a hub id: the export, or any causal LM."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    quiet()
    tok = AutoTokenizer.from_pretrained(str(name_or_path))
    model = AutoModelForCausalLM.from_pretrained(str(name_or_path), use_safetensors=True)
    if tok.pad_token is None:  # Llama-style tokenizers ship without one
        tok.pad_token = tok.eos_token
    return model, tok


# --- peft ---------------------------------------------------------------------------

def lora_config(target_modules=("q_proj", "v_proj"), r: int = 4, lora_alpha: float = 8,
                lora_dropout: float = 0.0, **kwargs):
    """peft's ``LoraConfig`` for a causal LM; the names are those of OPT, Llama and TinyGPT alike."""
    from peft import LoraConfig

    if not isinstance(target_modules, str):  # "all-linear" stays a string
        target_modules = list(target_modules)
    return LoraConfig(r=r, lora_alpha=lora_alpha, lora_dropout=lora_dropout,
                      target_modules=target_modules, bias="none", task_type="CAUSAL_LM",
                      **kwargs)


def copy_lora_to_ftlab(peft_layer, base: torch.nn.Linear):
    """An ``ftlab.peft.LoRALinear`` on ``base`` with the A, B and scaling of a peft LoRA layer."""
    from .peft import LoRALinear

    A = peft_layer.lora_A["default"].weight
    r = A.shape[0]
    ours = LoRALinear(base, r=r, lora_alpha=peft_layer.scaling["default"] * r)
    with torch.no_grad():
        ours.lora_A.copy_(A)
        ours.lora_B.copy_(peft_layer.lora_B["default"].weight)
    return ours


def ftlab_twin(model: TinyGPT, peft_model):
    """A copy of ``model`` whose layers carry ``ftlab.peft.LoRALinear``s with peft's A, B and scaling."""
    import copy

    _check_tinygpt(model)
    twin = copy.deepcopy(model)
    inverse = {v: k for k, v in OPT_NAMES.items()}
    for name, module in peft_model.named_modules():
        if not hasattr(module, "lora_A") or "default" not in module.lora_A:
            continue
        i, opt_module = name.split("layers.", 1)[1].split(".", 1)
        parent, _, leaf = inverse[opt_module].rpartition(".")
        holder = twin.layers[int(i)].get_submodule(parent)
        setattr(holder, leaf, copy_lora_to_ftlab(module, getattr(holder, leaf)))
    return twin


# --- TRL ----------------------------------------------------------------------------

def sft_dataset(examples):
    """A ``datasets.Dataset`` of chat ``messages`` from ftlab chat Examples (``▶prompt◆`` + answer)."""
    from datasets import Dataset

    rows = []
    for ex in examples:
        p = ex.prompt
        if not (p.startswith(USER) and p.endswith(ASSISTANT)):
            raise ValueError(f"expected a chat prompt '▶...◆', got {p!r}")
        rows.append({"messages": [{"role": "user", "content": p[1:-1]},
                                  {"role": "assistant", "content": ex.completion}]})
    return Dataset.from_list(rows)


def preference_dataset(pairs):
    """A ``datasets.Dataset`` of conversational preference pairs from ``ftlab.align.PreferencePair``s."""
    from datasets import Dataset

    return Dataset.from_list([
        {"prompt": [{"role": "user", "content": p.prompt}],
         "chosen": [{"role": "assistant", "content": p.chosen}],
         "rejected": [{"role": "assistant", "content": p.rejected}]} for p in pairs])


def _quiet(kwargs: dict) -> dict:
    # A run of tens of steps on a CPU: no checkpoints, no reports, no progress bars, and
    # float32. TRL's configs default to bf16=True, and accelerate then runs the prepared
    # reference model under bf16 autocast even on a CPU: DPO's step-0 loss moves by ~1e-3.
    base = dict(output_dir=kwargs.pop("output_dir", "trl-out"), report_to="none", save_strategy="no",
                bf16=False,
                logging_steps=1, disable_tqdm=True, use_cpu=True, seed=kwargs.pop("seed", 0),
                dataloader_num_workers=0)
    base.update(kwargs)
    return base


def sft_config(**kwargs):
    """TRL ``SFTConfig``: loss on the assistant's tokens only, sequences packed into rows."""
    from trl import SFTConfig

    args = dict(assistant_only_loss=True, packing=True, max_length=96, learning_rate=1e-3,
                per_device_train_batch_size=16, max_steps=10)
    args.update(kwargs)
    return SFTConfig(**_quiet(args))


def dpo_config(**kwargs):
    """TRL ``DPOConfig``: the sigmoid loss of Rafailov et al. 2023 at beta = 0.1."""
    from trl import DPOConfig

    args = dict(beta=0.1, loss_type=["sigmoid"], max_length=96, learning_rate=1e-3,
                per_device_train_batch_size=16, max_steps=10)
    args.update(kwargs)
    return DPOConfig(**_quiet(args))


def grpo_config(**kwargs):
    """TRL ``GRPOConfig``: groups of 8 samples per prompt, no KL term (beta = 0), as TRL defaults."""
    from trl import GRPOConfig

    args = dict(num_generations=8, max_completion_length=16, beta=0.0, learning_rate=1e-3,
                per_device_train_batch_size=32, max_steps=5, temperature=1.0)
    args.update(kwargs)
    return GRPOConfig(**_quiet(args))


def _model_and_tokenizer(model, processing_class):
    """A path or hub id is loaded (model and tokenizer); a model object keeps ``processing_class``."""
    if isinstance(model, (str, Path)):
        loaded, tok = load_causal_lm(model)
        return loaded, processing_class or tok
    return model, processing_class or tokenizer()


def _no_printer(trainer):
    """Drop the callback that prints every log line (``disable_tqdm=True`` installs it)."""
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)
    return trainer


def sft_trainer(
    model, train_dataset, peft_config=None, processing_class=None, **config
):
    """A TRL ``SFTTrainer`` on ``model``.

    ``model`` is the export's folder, any causal LM's folder or hub id, or a model.
    """
    from trl import SFTTrainer

    quiet()
    model, tok = _model_and_tokenizer(model, processing_class)
    return _no_printer(
        SFTTrainer(
            model=model,
            args=sft_config(**config),
            train_dataset=train_dataset,
            processing_class=tok,
            peft_config=peft_config,
        )
    )


def dpo_trainer(model, train_dataset, ref_model=None, peft_config=None, processing_class=None, **config):
    """A TRL ``DPOTrainer``. With ``ref_model=None`` TRL builds the reference itself: it reloads
    ``model.config._name_or_path`` (so pass a saved folder), or, with a peft model, disables the adapter."""
    from trl import DPOTrainer

    quiet()
    model, tok = _model_and_tokenizer(model, processing_class)
    if isinstance(ref_model, (str, Path)):
        ref_model = load_causal_lm(ref_model)[0]
    return _no_printer(DPOTrainer(model=model, ref_model=ref_model, args=dpo_config(**config),
                                  train_dataset=train_dataset, processing_class=tok,
                                  peft_config=peft_config))


def grpo_trainer(model, train_dataset, reward_funcs, peft_config=None, processing_class=None, **config):
    """A TRL ``GRPOTrainer``; ``train_dataset`` has a conversational ``prompt`` column."""
    from trl import GRPOTrainer

    quiet()
    model, tok = _model_and_tokenizer(model, processing_class)
    return _no_printer(GRPOTrainer(model=model, reward_funcs=reward_funcs, args=grpo_config(**config),
                                   train_dataset=train_dataset, processing_class=tok,
                                   peft_config=peft_config))


def prompt_dataset(items):
    """A ``datasets.Dataset`` for GRPO: conversational ``prompt`` plus the reference ``answer``."""
    from datasets import Dataset

    return Dataset.from_list([{"prompt": [{"role": "user", "content": it.prompt}], "answer": it.answer}
                              for it in items])


def tiny_llama(path: str | Path, hidden_size: int = 32, num_hidden_layers: int = 2, seed: int = 0) -> Path:
    """Save a randomly initialised ``LlamaForCausalLM`` with the course tokenizer to ``path``.

    Not a lab model: a stand-in for "any causal LM" that proves the chapter's cells are
    not specific to the OPT export (different module names, RoPE, RMSNorm, SwiGLU).
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    quiet()
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(VOCAB), hidden_size=hidden_size, intermediate_size=2 * hidden_size,
                      num_hidden_layers=num_hidden_layers, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=128, pad_token_id=PAD_ID, bos_token_id=EOS_ID,
                      eos_token_id=EOS_ID, tie_word_embeddings=False)
    LlamaForCausalLM(cfg).save_pretrained(path)
    tokenizer().save_pretrained(path)
    return Path(path)


def verifier_reward(task):
    """A TRL reward function: 1.0 when the course's verifier accepts the completion, else 0.0."""
    from .tasks import Item, get_task

    t = get_task(task) if isinstance(task, str) else task

    def reward(prompts, completions, answer, **_):
        out = []
        for c, a in zip(completions, answer):
            text = c[0]["content"] if isinstance(c, list) else c
            out.append(float(t.verify(Item(t.name, "", a), text.split(EOS)[0])))
        return out

    reward.__name__ = f"verifier_{t.name}"
    return reward


# --- bitsandbytes and GGUF ----------------------------------------------------------

def bnb_4bit_config(**kwargs):
    """transformers' ``BitsAndBytesConfig`` for QLoRA: NF4, double quantization, bf16 compute."""
    from transformers import BitsAndBytesConfig

    args = dict(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                bnb_4bit_compute_dtype=torch.bfloat16)
    args.update(kwargs)
    return BitsAndBytesConfig(**args)


def gguf_pack(type_name: str, w: torch.Tensor) -> bytes:
    """The raw ggml block bytes of ``w`` in Q8_0 or Q4_0.

    They are built from ``ftlab.quant.gguf``.
    """
    from .quant.gguf import quantize_q4_0, quantize_q8_0

    if type_name == "Q8_0":
        q, d = quantize_q8_0(w)
        blocks = [d.view(torch.uint8).reshape(-1, 2), q.view(torch.uint8)]
    elif type_name == "Q4_0":
        q, d = quantize_q4_0(w)
        # ggml packs element j in the low nibble and element j + 16 in the high nibble.
        packed = q[:, :16] | (q[:, 16:] << 4)
        blocks = [d.view(torch.uint8).reshape(-1, 2), packed]
    else:
        raise ValueError(f"type_name must be 'Q8_0' or 'Q4_0', got {type_name!r}")
    return torch.cat(blocks, dim=1).contiguous().numpy().tobytes()


def write_gguf(model: TinyGPT, path: str | Path, type_name: str = "Q8_0") -> Path:
    """Write ``model`` to a GGUF file with the ``gguf`` package: 2-D weights in ``type_name``."""
    import gguf
    import numpy as np

    _check_tinygpt(model)
    qtype = {"Q8_0": gguf.GGMLQuantizationType.Q8_0, "Q4_0": gguf.GGMLQuantizationType.Q4_0}
    if type_name not in qtype:
        raise ValueError(f"type_name must be 'Q8_0' or 'Q4_0', got {type_name!r}")
    c = model.config
    w = gguf.GGUFWriter(str(path), arch="gpt2")
    w.add_context_length(c.block_size)
    w.add_embedding_length(c.d_model)
    w.add_block_count(c.n_layer)
    w.add_feed_forward_length(c.mlp_ratio * c.d_model)
    w.add_head_count(c.n_head)
    w.add_layer_norm_eps(1e-5)
    w.add_tokenizer_model("gpt2")
    w.add_token_list(list(VOCAB))
    w.add_eos_token_id(EOS_ID)
    w.add_pad_token_id(PAD_ID)
    w.add_chat_template(CHAT_TEMPLATE)
    for name, t in model.state_dict().items():
        a = t.detach().float().numpy()
        if a.ndim == 2 and a.shape[1] % 32 == 0:
            raw = np.frombuffer(gguf.quantize(a, qtype[type_name]).tobytes(), dtype=np.uint8)
            w.add_tensor(name, raw.reshape(a.shape[0], -1), raw_dtype=qtype[type_name])
        else:
            w.add_tensor(name, a)   # biases and norms stay float32, as llama.cpp keeps them
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return Path(path)


def read_gguf(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a GGUF file back and dequantize every tensor to float32, in TinyGPT's shapes."""
    import gguf

    r = gguf.GGUFReader(str(path))
    out = {}
    for t in r.tensors:
        a = gguf.dequantize(t.data, t.tensor_type)
        shape = tuple(int(s) for s in reversed(t.shape.tolist()))  # ggml lists dims innermost first
        out[t.name] = torch.from_numpy(a.copy()).float().reshape(shape)
    return out


def gguf_raw_tensors(path: str | Path) -> dict[str, tuple[str, bytes]]:
    """Each tensor's ggml type name and its raw bytes, as stored in the file."""
    import gguf

    r = gguf.GGUFReader(str(path))
    return {t.name: (t.tensor_type.name, t.data.tobytes()) for t in r.tensors}


def param_bytes(model) -> int:
    """Bytes held by a model's parameters and buffers (what ``get_memory_footprint`` counts)."""
    return sum(p.numel() * p.element_size() for p in model.parameters()) + \
        sum(b.numel() * b.element_size() for b in model.buffers())
