"""Draw the book's static figures into figures/ (`make figures`).

    python tools/make_figures.py             # redraw every figure from code and figures/data
    python tools/make_figures.py --measure   # first rerun the training behind forgetting.json
    python tools/make_figures.py --check     # exit 1 if redrawing would change a committed file

| file | what it shows | made from |
|---|---|---|
| decision_ladder.svg | chapter 01's ladder: prompt, retrieve, fine-tune | `ftlab.decide.draw_tree` |
| lab.svg | the lab: model, checkpoints, and which chapters load each | the `ftlab.load(...)` calls in chapters/*.md |
| forgetting.svg | learning versus forgetting, full FT against 30 % replay (README) | figures/data/forgetting.json |
| social_card.png | the preview a shared link shows (og:image) | the book's title and the lab |

The bytes are deterministic: no dates in the metadata, a fixed SVG hash salt, and the
measured curve is stored rounded in figures/data/forgetting.json, so that redrawing
needs no training and gives the committed files (tests/test_figures.py checks it).
"""
from __future__ import annotations

import io
import json
import re
import sys
import textwrap
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
FIG = ROOT / "figures"
DATA = FIG / "data" / "forgetting.json"
TITLE = "Fine-Tuning & Model Adaptation"
SUBTITLE = "the executable interview course"
LOAD_RE = re.compile(r"""ftlab\.load\(\s*["']([\w-]+)["']""")


def _style() -> None:
    import ftlab
    ftlab.use_style()
    matplotlib.rcParams.update({"svg.hashsalt": "ftlab", "svg.fonttype": "path",
                                "path.simplify": True})


def _save(fig, name: str) -> bytes:
    buf = io.BytesIO()
    if name.endswith(".svg"):
        fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None})
    else:
        fig.savefig(buf, format="png", metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


def decision_ladder() -> bytes:
    from ftlab import decide
    fig, ax = plt.subplots(figsize=(8.2, 4.2))
    decide.draw_tree(ax)
    return _save(fig, ".svg")


def chapter_loads() -> dict[str, list[str]]:
    """Checkpoint name -> the chapters (NN) whose code loads it."""
    used = defaultdict(set)
    for md in sorted((ROOT / "chapters").glob("*.md")):
        for name in LOAD_RE.findall(md.read_text()):
            used[name].add(md.stem.split("_", 1)[0])
    return {k: sorted(v) for k, v in sorted(used.items())}


def lab() -> bytes:
    from ftlab import CHECKPOINTS, COLORS, metadata
    loads = chapter_loads()
    fig, ax = plt.subplots(figsize=(9.0, 4.0))
    ax.set(xlim=(0, 10), ylim=(0, 6))
    ax.axis("off")

    def box(x, y, w, h, text, color, size=8.5):
        ax.add_patch(plt.Rectangle((x, y), w, h, fc=color, ec="#333333", lw=0.8, alpha=0.9))
        ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=size)

    box(0.1, 2.2, 3.0, 1.6, "TinyGPT: pre-LN decoder,\nlearned positions, q/k/v/o_proj,\n"
        "up/down_proj; a character\nvocabulary and a chat template", "#EEEEEE", 7.5)
    box(0.1, 0.3, 3.0, 1.4, "tasks with verifiers:\narithmetic, strings, facts,\n"
        "lookup, refusal; held-out tasks", "#EEEEEE", 7.5)
    colors = [COLORS["base"], COLORS["neutral"], COLORS["teacher"], COLORS["student"]]
    for i, name in enumerate(CHECKPOINTS):
        y = 4.8 - i * 1.4
        cfg = metadata(name)["config"]
        box(3.8, y, 2.1, 0.95, f"{name}\nd={cfg['d_model']}, {cfg['n_layer']} layers",
            colors[i % len(colors)])
        ax.annotate("", (3.8, y + 0.47), (3.1, 3.0), arrowprops=dict(arrowstyle="->", lw=0.7))
        chapters = ", ".join(loads.get(name, [])) or "none"
        text = textwrap.fill(f"loaded in chapters {chapters}", 34)
        ax.text(6.1, y + 0.47, text, va="center", fontsize=8)
    ax.set_title("The lab: one tiny GPT, four checkpoints, and the chapters that start from each", fontsize=10)
    return _save(fig, ".svg")


def measure() -> dict:
    """Full fine-tuning on a held-out task against 30 % replay (chapter 07's setup)."""
    import numpy as np

    import ftlab
    from ftlab import forgetting, gate
    from ftlab.tasks import PRETRAIN_TASKS
    seed = ftlab.seed_everything(0)
    old_items = [it for t in PRETRAIN_TASKS for it in ftlab.get_task(t).items(12, seed=seed)]
    target = forgetting.SECOND_LETTER
    new_items = target.items(48, seed=seed)
    new_data = target.examples(2000, seed=seed, split="train")
    old_data = forgetting.general_examples(2000, seed=seed + 1)
    out = {"task": target.name, "steps": None, "runs": {}}
    for label, data in (("full FT", new_data),
                        ("replay 30%", forgetting.mix_replay(new_data, old_data, 0.3, seed=seed))):
        model = ftlab.load("base")

        def acc(items, m=model):
            return round(float(np.mean(gate.greedy_correct(m, items, [target]))), 3)

        start = (acc(new_items), acc(old_items))
        hist = ftlab.train(model, data, steps=96, lr=1e-3, batch_size=16, eval_every=8,
                           evals={"new": lambda: acc(new_items), "old": lambda: acc(old_items)},
                           seed=seed)
        steps, new = hist.eval_series("new")
        out["steps"] = [0] + list(steps)
        out["runs"][label] = {"new": [start[0]] + list(new),
                              "old": [start[1]] + list(hist.eval_series("old")[1])}
    return out


def forgetting_plot() -> bytes:
    from ftlab import COLORS
    data = json.loads(DATA.read_text())
    fig, ax = plt.subplots(figsize=(6.2, 3.4))
    for label, color in (("full FT", COLORS["full"]), ("replay 30%", COLORS["retrieval"])):
        r = data["runs"][label]
        ax.plot(data["steps"], r["new"], color=color, marker="o", ms=3,
                label=f"{label}: new task ({data['task']})")
        ax.plot(data["steps"], r["old"], color=color, marker="s", ms=3, ls="--",
                label=f"{label}: old tasks")
    ax.set(xlabel="fine-tuning step", ylabel="exact match", ylim=(0, 1.02),
           title="Learning a new task, forgetting the old ones (base checkpoint, lr 1e-3)")
    ax.legend(fontsize=7.5, loc="center right")
    fig.tight_layout()
    return _save(fig, ".svg")


def social_card() -> bytes:
    fig = plt.figure(figsize=(12, 6.3), dpi=100)
    fig.patch.set_facecolor("#1F2A44")
    fig.text(0.06, 0.68, TITLE, fontsize=40, color="white", weight="bold")
    fig.text(0.06, 0.56, SUBTITLE, fontsize=28, color="#CCD6F6")
    fig.text(0.06, 0.30, "One tiny GPT, adapted in every chapter.\nEvery answer proven by "
             "code that runs in seconds on a laptop CPU.", fontsize=20, color="#E6E6E6",
             linespacing=1.5)
    fig.text(0.06, 0.10, "LoRA · QLoRA · SFT · DPO · GRPO · quantization · distillation · "
             "evaluation", fontsize=16, color="#8FB8DE")
    return _save(fig, ".png")


FIGURES = {"decision_ladder.svg": decision_ladder, "lab.svg": lab,
           "forgetting.svg": forgetting_plot, "social_card.png": social_card}


def render() -> dict[str, bytes]:
    _style()
    return {name: make() for name, make in FIGURES.items()}


def main(argv: list[str]) -> int:
    if "--measure" in argv:
        DATA.parent.mkdir(parents=True, exist_ok=True)
        DATA.write_text(json.dumps(measure(), indent=1) + "\n")
    figures = render()
    if "--check" in argv:
        stale = [n for n, b in figures.items()
                 if not (FIG / n).exists() or (FIG / n).read_bytes() != b]
        for n in stale:
            print(f"stale: figures/{n} (run make figures)")
        return 1 if stale else 0
    for name, data in figures.items():
        (FIG / name).write_bytes(data)
        print(f"wrote figures/{name} ({len(data):,} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
