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

from ftlab.chat import sft_tensors  # noqa: E402
from ftlab.checkpoints import save  # noqa: E402
from ftlab.evaluate import checkpoint_figures  # noqa: E402
from ftlab.model import GPTConfig, TinyGPT  # noqa: E402
from ftlab.tasks import PRETRAIN_TASKS, TASKS, _split_of, to_examples  # noqa: E402
from ftlab.train import lm_loss, lr_at  # noqa: E402
from ftlab.evaluate import sample_accuracy  # noqa: E402

OUT = ROOT / "src" / "ftlab" / "checkpoints"
BASE_MIX = {"add": 2, "sub": 1.5, "add_steps": 1.5, "rev": 1.5, "sort": 1.5, "copy": 1, "dashed": 1,
            "fact": 2, "lookup": 3, "pick": 0.3, "refuse": 0.3}
RECIPES = {
    "base": dict(cfg=GPTConfig(), mix=BASE_MIX, template="chat", steps=15000, lr=3e-3, seed=1),
    "base-raw": dict(cfg=GPTConfig(), mix=BASE_MIX, template="raw", steps=15000, lr=3e-3, seed=2),
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


def pretrain(name: str) -> dict:
    r = RECIPES[name]
    torch.manual_seed(r["seed"])
    rng = random.Random(r["seed"])
    model = TinyGPT(r["cfg"])
    names, weights = zip(*r["mix"].items())
    streams = {n: stream(TASKS[n], random.Random(r["seed"] * 100 + i)) for i, n in enumerate(names)}
    decay = [p for p in model.parameters() if p.dim() >= 2]
    other = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": other, "weight_decay": 0.0}],
                            lr=r["lr"], betas=(0.9, 0.98))
    t0, steps_done, ema = time.time(), 0, None
    for step in range(r["steps"]):
        task = rng.choices(names, weights)[0]
        items = [next(streams[task]) for _ in range(BATCH)]
        ids, mask = sft_tensors(to_examples(items, r["template"]))
        for g in opt.param_groups:
            g["lr"] = lr_at(step, r["steps"], r["lr"], 200, "cosine")
        loss = lm_loss(model, ids, mask)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        steps_done = step + 1
        ema = loss.item() if ema is None else 0.98 * ema + 0.02 * loss.item()
        if steps_done % 500 == 0:
            print(f"[{name}] step {steps_done} loss {ema:.3f} {time.time() - t0:.0f}s", flush=True)
        if "stop_at" in r and steps_done % 100 == 0:
            task_name, target = r["stop_at"]
            model.eval()
            acc = sample_accuracy(model, task_name, n=128, k=4, seed=0, split="train")
            model.train()
            print(f"[{name}] step {steps_done} sampled pass@1 on {task_name}: {acc:.3f}", flush=True)
            if acc >= target:
                break
    model.eval()
    info = {"recipe": {k: (v.to_dict() if k == "cfg" else v) for k, v in r.items()},
            "steps_done": steps_done, "batch_size": BATCH, "seconds": round(time.time() - t0)}
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
