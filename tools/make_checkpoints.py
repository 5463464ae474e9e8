"""Pretrain the course checkpoints, deterministically, into src/ftlab/checkpoints/.

    python tools/make_checkpoints.py            # all four (tens of minutes on 2 cores)
    python tools/make_checkpoints.py base       # one

Each step draws one task (weighted) and a batch of fresh training-split items of it,
so batches are short and the data never repeats. Then the script measures each
checkpoint on every task and writes the figures to checkpoints/figures.json, which
the README quotes and tests/test_checkpoints.py checks.
"""
from __future__ import annotations

import json
import os
import random
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from ftlab.chat import Example, sft_tensors  # noqa: E402
from ftlab.checkpoints import load, metadata, save  # noqa: E402
from ftlab.evaluate import checkpoint_figures  # noqa: E402
from ftlab.model import GPTConfig, TinyGPT  # noqa: E402
from ftlab.tasks import PRETRAIN_TASKS, TASKS, _split_of, to_examples  # noqa: E402
from ftlab.train import lm_loss, lr_at  # noqa: E402
from ftlab.evaluate import sample_accuracy  # noqa: E402

OUT = Path(os.environ.get("FTLAB_CKPT_OUT", ROOT / "src" / "ftlab" / "checkpoints"))
BASE_MIX = {"add": 2, "sub": 1.5, "add_steps": 1.5, "rev": 1.5, "sort": 1.5, "copy": 1, "dashed": 1,
            "fact": 2, "lookup": 3, "pick": 0.3, "refuse": 0.3}
# Stage 2 re-weights the mix towards the skills that need precise copying (lookup, copy,
# sort) and exact sums, at a lower learning rate, from stage 1's weights.
STAGE2 = dict(mix={"add": 2, "sub": 1, "add_steps": 0.5, "rev": 1, "sort": 1.5, "copy": 2, "dashed": 1,
                   "fact": 1, "lookup": 4, "pick": 0.2, "refuse": 0.3}, steps=6000, lr=1.5e-3)
RECIPES = {
    "base": dict(cfg=GPTConfig(), mix=BASE_MIX, template="chat", steps=15000, lr=3e-3, seed=1, stage2=STAGE2),
    # base-raw sees each prompt after 0-8 leading spaces, so its skills do not hang on the
    # prompt starting at absolute position 0 (TinyGPT's positions are learned and absolute);
    # instruction tuning can then move them behind the chat template's first marker.
    "base-raw": dict(cfg=GPTConfig(), mix=BASE_MIX, template="raw", steps=15000, lr=3e-3, seed=2, stage2=STAGE2,
                     offsets=8),
    "teacher": dict(cfg=GPTConfig(d_model=96, n_layer=4, n_head=4), mix={**BASE_MIX, "add3_steps": 2},
                    template="chat", steps=12000, lr=2e-3, seed=3),
    # Stopped as soon as sampled pass@1 on add3_steps reaches 0.35, checked every 100 steps.
    "math-weak": dict(cfg=GPTConfig(), mix={"add": 1, "add_steps": 1, "add3_steps": 2}, template="chat",
                      steps=4000, lr=3e-3, seed=4, stop_at=("add3_steps", 0.35)),
}
BATCH = 64


def stream(task, rng):
    """Training-split items of ``task``, forever (facts: the whole table)."""
    while True:
        it = task.sample(rng)
        if task.finite is not None or _split_of(it.prompt) == "train":
            yield it


def run_stage(model, name: str, mix: dict, template: str, steps: int, lr: float, seed: int,
              stop_at: tuple | None = None, offsets: int = 0) -> int:
    """One stage of pretraining: AdamW, 200 warmup steps, cosine decay. Returns steps done.
    ``offsets`` > 0 puts 0..offsets spaces before each prompt (uniform)."""
    torch.manual_seed(seed)
    rng = random.Random(seed)
    names, weights = zip(*mix.items())
    streams = {n: stream(TASKS[n], random.Random(seed * 100 + i)) for i, n in enumerate(names)}
    decay = [p for p in model.parameters() if p.dim() >= 2]
    other = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": other, "weight_decay": 0.0}],
                            lr=lr, betas=(0.9, 0.98))
    model.train()
    t0, steps_done, ema = time.time(), 0, None
    for step in range(steps):
        task = rng.choices(names, weights)[0]
        items = [next(streams[task]) for _ in range(BATCH)]
        examples = to_examples(items, template)
        if offsets:
            examples = [Example(" " * rng.randint(0, offsets) + e.prompt, e.completion) for e in examples]
        ids, mask = sft_tensors(examples)
        for g in opt.param_groups:
            g["lr"] = lr_at(step, steps, lr, 200, "cosine")
        loss = lm_loss(model, ids, mask)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        steps_done = step + 1
        ema = loss.item() if ema is None else 0.98 * ema + 0.02 * loss.item()
        if steps_done % 500 == 0:
            print(f"[{name}] step {steps_done} loss {ema:.3f} {time.time() - t0:.0f}s", flush=True)
        if stop_at and steps_done % 100 == 0:
            task_name, target = stop_at
            model.eval()
            acc = sample_accuracy(model, task_name, n=128, k=4, seed=0, split="train")
            model.train()
            print(f"[{name}] step {steps_done} sampled pass@1 on {task_name}: {acc:.3f}", flush=True)
            if acc >= target:
                break
    model.eval()
    return steps_done


def stage2(model, name: str) -> int:
    r = RECIPES[name]
    s2 = r["stage2"]
    return run_stage(model, name + "/2", s2["mix"], r["template"], s2["steps"], s2["lr"], r["seed"] + 100,
                     offsets=r.get("offsets", 0))


def pretrain(name: str) -> dict:
    """Stage 1 from a fresh init; then, where the recipe has one, stage 2 from stage 1's weights."""
    r = RECIPES[name]
    torch.manual_seed(r["seed"])
    model = TinyGPT(r["cfg"])
    t0 = time.time()
    done = [run_stage(model, name, r["mix"], r["template"], r["steps"], r["lr"], r["seed"], r.get("stop_at"),
                      r.get("offsets", 0))]
    if "stage2" in r:
        done.append(stage2(model, name))
    info = {"recipe": {k: (v.to_dict() if k == "cfg" else v) for k, v in r.items()},
            "steps_done": sum(done), "stage_steps": done, "batch_size": BATCH, "seconds": round(time.time() - t0)}
    save(model, OUT / f"{name}.safetensors", info)
    return info


def resume_stage2(name: str) -> dict:
    """Run only stage 2, starting from the stage-1 file already in checkpoints/ (what
    `pretrain` would do after stage 1; stage 1 is deterministic, so the result is the same)."""
    r = RECIPES[name]
    model = load(name)
    info = metadata(name)["info"]
    if len(info.get("stage_steps", [])) > 1:
        sys.exit(f"{name}.safetensors already had its stage 2: {info}")
    t0 = time.time()
    done = [info["steps_done"], stage2(model, name)]
    info = {"recipe": {k: (v.to_dict() if k == "cfg" else v) for k, v in r.items()},
            "steps_done": sum(done), "stage_steps": done, "batch_size": BATCH,
            "seconds": info.get("seconds", 0) + round(time.time() - t0)}
    save(model, OUT / f"{name}.safetensors", info)
    return info


def main(argv):
    if os.environ.get("FTLAB_SEED_OFFSET", "0") != "0":
        sys.exit("unset FTLAB_SEED_OFFSET: checkpoints are made with the canonical seeds")
    if argv and argv[0].startswith("--threads="):  # two runs side by side on a 2-core machine
        torch.set_num_threads(int(argv.pop(0).split("=", 1)[1]))
    if argv == ["--figures"]:  # re-measure the shipped files only
        write_figures()
        return
    if argv and argv[0] == "--stage2":  # continue shipped stage-1 files with their stage 2
        for n in argv[1:]:
            print(resume_stage2(n), flush=True)
        return
    names = argv or list(RECIPES)
    bad = [n for n in names if n not in RECIPES]
    if bad:
        sys.exit(f"unknown checkpoint(s) {bad}; known: {list(RECIPES)}")
    OUT.mkdir(parents=True, exist_ok=True)
    for n in names:
        print(pretrain(n), flush=True)
    if set(names) == set(RECIPES):
        write_figures()


def write_figures():
    """Measure every checkpoint; write figures.json and the README's table from it."""
    figures = checkpoint_figures()
    (OUT / "figures.json").write_text(json.dumps(figures, indent=1, sort_keys=True) + "\n")
    names = list(figures)
    tasks = list(dict.fromkeys(t for f in figures.values() for t in f))
    lines = ["| task | " + " | ".join(f"`{n}`" for n in names) + " |",
             "|---|" + "---:|" * len(names)]
    for t in tasks:
        cells = [f"{figures[n][t]:.3f}" if t in figures[n] else "–" for n in names]
        lines.append(f"| `{t}` | " + " | ".join(cells) + " |")
    readme = ROOT / "README.md"
    head, rest = readme.read_text().split("<!-- figures:start -->")
    _, tail = rest.split("<!-- figures:end -->")
    readme.write_text(head + "<!-- figures:start -->\n" + "\n".join(lines) + "\n<!-- figures:end -->" + tail)
    print(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main(sys.argv[1:])
