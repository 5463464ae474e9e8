"""Every config object an "In the real stack" box shows is built with the pinned libraries.

The boxes in chapters/*.md are the one source: this test reads each
``{admonition} In the real stack`` block, finds the calls to config classes
(``LoraConfig``, ``BitsAndBytesConfig``, ``SFTConfig``, ``DPOConfig``, ``GRPOConfig``,
``GPTQConfig``, ``TrainingArguments``, ...) with ``ast`` and constructs them. A library
release that renames or removes an argument then fails here, not in a reader's notebook.

Names a box leaves free (``model_id``, ``tok``) become placeholders; ``torch.bfloat16`` and
enums such as ``PromptTuningInit.TEXT`` resolve against the real modules. Arguments that
need a GPU (``bf16=True``) are dropped and the rest retried, since CI is a CPU.
"""
from __future__ import annotations

import ast
import importlib.metadata
import inspect
import re
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytest.importorskip("transformers")
pytest.importorskip("peft")
pytest.importorskip("trl")

BOX = re.compile(r"^```\{admonition\} In the real stack[^\n]*\n(.*?)^```\s*$", re.S | re.M)
# A config class: any name these libraries export that ends in Config or Arguments.
CONFIG_NAME = re.compile(r"^[A-Z]\w*(Config|Arguments)$")
GPU_ONLY = ("bf16", "fp16", "tf32", "half_precision_backend")
# Boxes that fail with the pinned versions, and why (found when this test was written).
# Not strict, so a chapter that fixes its box does not break CI; delete the line then.
# Boxes known to fail with the pinned versions, with the reason. Empty: every box builds.
KNOWN: dict[str, str] = {}


def _code_of(box: str) -> str:
    """The python in a box: its fenced ``python`` blocks and its indented (4-space) blocks."""
    fenced = re.findall(r"```(?:python|py|ipython3)?\n(.*?)```", box, re.S)
    lines = box.splitlines()
    indented, block = [], []
    for line in lines:
        if line.startswith("    ") or (block and not line.strip()):
            block.append(line)
        elif block:
            indented.append(textwrap.dedent("\n".join(block)))
            block = []
    if block:
        indented.append(textwrap.dedent("\n".join(block)))
    return "\n".join(fenced + indented)


def _calls(code: str) -> list[str]:
    """Source of each ``Name(...)`` call whose name looks like a config class, parens balanced."""
    out = []
    for m in re.finditer(r"\b([A-Z]\w*(?:Config|Arguments))\(", code):
        depth, i = 0, m.end() - 1
        while i < len(code):
            depth += {"(": 1, ")": -1}.get(code[i], 0)
            if depth == 0:
                break
            i += 1
        out.append(code[m.start():i + 1])
    return out


CHECKED = ("transformers", "peft", "trl", "torch", "bitsandbytes", "datasets", "accelerate")


def _imports(code: str) -> list[str]:
    """The box's import statements from the checked libraries (vllm, awq... are not pinned here)."""
    out, lines, i = [], code.splitlines(), 0
    while i < len(lines):
        m = re.match(r"\s*(?:from\s+(\S+)\s+)?import\s+(\S+)", lines[i])
        if not m:
            i += 1
            continue
        stmt = lines[i].split("#")[0].strip()
        while stmt.count("(") > stmt.count(")") and i + 1 < len(lines):
            i += 1
            stmt += " " + lines[i].split("#")[0].strip()
        if (m.group(1) or m.group(2)).split(".")[0] in CHECKED:
            out.append(stmt)
        i += 1
    return out


def _boxes():
    for md in sorted((ROOT / "chapters").glob("*.md")):
        if md.stem.startswith("09"):
            continue  # chapter 09 runs its configs for real
        text = md.read_text(encoding="utf-8")
        seen: dict[str, int] = {}
        for b in BOX.finditer(text):
            code = _code_of(b.group(1))
            imports = _imports(code)
            for call in _calls(code):
                name = call.split("(")[0]
                seen[name] = seen.get(name, 0) + 1
                pid = f"{md.stem}:{name}#{seen[name]}"  # e.g. 04_alignment:DPOConfig#2
                marks = [pytest.mark.xfail(reason=KNOWN[pid], strict=True)] if pid in KNOWN else []
                yield pytest.param(call, imports, id=pid, marks=marks)


class _Free(dict):
    """Locals for eval: the libraries' names, and a placeholder string for a name the box leaves free."""

    def __init__(self, ns):
        super().__init__()
        self.ns = ns

    def __missing__(self, key):
        import builtins

        if key in self.ns:
            return self.ns[key]
        if hasattr(builtins, key):
            return getattr(builtins, key)
        # A free plural name (my_calibration_texts) stands for a list, a singular for a string.
        return [f"<{key}>"] if key.endswith("s") else f"<{key}>"


def _namespace():
    import peft
    import torch
    import transformers
    import trl

    ns = {"torch": torch, "peft": peft, "transformers": transformers, "trl": trl}
    for mod in (transformers, peft, trl):
        for name in dir(mod):
            if name[:1].isupper() and name not in ns:
                try:
                    ns[name] = getattr(mod, name)
                except Exception:  # lazy modules can fail to import optional backends
                    pass
    return ns


NS = None


def build(call: str, imports=()):
    """Construct the config the call describes, after the box's own imports.

    A name the box imports must import (``from trl import PPOConfig`` fails when TRL drops
    it); a name it does not import is looked up in transformers, peft and trl. GPU-only
    switches (``bf16=True``) are dropped and ``use_cpu=True`` added on a CPU.
    """
    global NS
    NS = NS or _namespace()
    ns = dict(NS)
    for stmt in imports:
        exec(stmt, ns)  # an ImportError here is the box's own import failing
    call = re.sub(r",\s*\.\.\.\s*\)$", ")", call.strip())   # "Config(a=1, ...)": shown, not built
    tree = ast.parse(call, mode="eval")
    name = tree.body.func.id
    if not CONFIG_NAME.match(name) or name not in ns:
        raise NameError(f"{name} is not exported by transformers, peft or trl")
    try:
        return eval(compile(tree, "<box>", "eval"), ns, _Free(ns))
    except importlib.metadata.PackageNotFoundError as e:
        # An integration the book does not install (DeepSpeed): the config refuses to be
        # built without it, so check what drift would break, the argument names.
        if "deepspeed" not in str(e):
            raise
        params = inspect.signature(ns[name]).parameters
        unknown = [k.arg for k in tree.body.keywords if k.arg not in params]
        assert not unknown, f"{name} has no argument(s) {unknown}"
        return None
    except (ValueError, ImportError, RuntimeError) as e:
        if not any(k in str(e) for k in ("bf16", "fp16", "GPU", "gpu", "cuda", "CUDA", "bfloat16")):
            raise
        tree.body.keywords = [k for k in tree.body.keywords if k.arg not in GPU_ONLY]
        tree.body.keywords.append(ast.keyword("use_cpu", ast.Constant(True)))
        return eval(compile(ast.fix_missing_locations(tree), "<box>", "eval"), ns, _Free(ns))


@pytest.mark.parametrize("call,imports", list(_boxes()))
def test_real_stack_box_builds(call, imports, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # TrainingArguments may create output_dir
    build(call, imports)


def test_the_parser_finds_calls_in_both_box_styles():
    box = ("Shown, not run:\n\n    cfg = LoraConfig(r=8,\n        target_modules=['q_proj'])\n    x = 1\n\n"
           "```python\nSFTConfig(assistant_only_loss=True)\n```\n")
    assert sorted(_calls(_code_of(box))) == ["LoraConfig(r=8,\n    target_modules=['q_proj'])",
                                             "SFTConfig(assistant_only_loss=True)"]


def test_a_renamed_argument_fails():
    with pytest.raises(TypeError):
        build("DPOConfig(rpo_alpha_renamed=1.0)")
    with pytest.raises(NameError):
        build("NoSuchConfig(r=1)")
    with pytest.raises(ImportError):
        build("PPOConfig(learning_rate=1e-5)", ["from trl import PPOConfig"])


def test_free_names_and_enums_resolve():
    cfg = build("PromptTuningConfig(task_type='CAUSAL_LM', num_virtual_tokens=4, "
                "prompt_tuning_init=PromptTuningInit.TEXT, prompt_tuning_init_text='x', "
                "tokenizer_name_or_path=model_id)")
    assert cfg.tokenizer_name_or_path == "<model_id>"
    q = build("BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype=torch.bfloat16)")
    assert q.bnb_4bit_compute_dtype.__str__() == "torch.bfloat16"


def test_ftlab_hf_configs_build():
    """The configs chapter 09 runs come from ftlab.hf; they must build with the pins too."""
    from ftlab import hf

    assert hf.lora_config().r == 4
    assert hf.sft_config(output_dir="o").assistant_only_loss
    assert hf.dpo_config(output_dir="o").beta == 0.1
    assert hf.grpo_config(output_dir="o").num_generations == 8
    assert hf.bnb_4bit_config().bnb_4bit_quant_type == "nf4"
