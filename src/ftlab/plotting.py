"""The house plotting style and the one place for colours."""
from __future__ import annotations

import matplotlib as mpl

COLORS = {
    "base": "#4C72B0",      # the starting checkpoint
    "full": "#C44E52",      # full fine-tuning
    "lora": "#55A868",      # LoRA and friends
    "qlora": "#8172B3",     # quantized base
    "retrieval": "#CCB974", # context / RAG
    "teacher": "#64B5CD",
    "student": "#DD8452",
    "neutral": "#8C8C8C",
}
CYCLE = list(COLORS.values())


def use_style() -> None:
    """Apply the course's matplotlib defaults (small, legible figures that render offline)."""
    mpl.rcParams.update({
        "figure.figsize": (6.0, 3.4),
        "figure.dpi": 110,
        "savefig.dpi": 110,
        "axes.spines.top": False,
        "axes.spines.right": False,
        "axes.grid": True,
        "grid.alpha": 0.3,
        "axes.prop_cycle": mpl.cycler(color=CYCLE),
        "font.size": 9.5,
        "axes.titlesize": 10.5,
        "legend.frameon": False,
    })
