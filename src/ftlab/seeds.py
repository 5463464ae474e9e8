"""Seeding. ``FTLAB_SEED_OFFSET`` shifts every seed in the course, so ``make seeds``
can rerun each notebook under other seeds and check that every asserted margin holds."""
from __future__ import annotations

import os
import random

import numpy as np
import torch

ENV = "FTLAB_SEED_OFFSET"


def seed_offset() -> int:
    raw = os.environ.get(ENV, "0")
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{ENV} must be an integer, got {raw!r}") from None


def shift(seed: int) -> int:
    """The seed actually used for ``seed``: shifted by ``FTLAB_SEED_OFFSET`` (default 0)."""
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}: {seed!r}")
    return int(seed) + 1000 * seed_offset()


def seed_everything(seed: int = 0) -> int:
    """Seed Python, NumPy and torch; return the effective (shifted) seed."""
    s = shift(seed)
    random.seed(s)
    np.random.seed(s % 2**32)
    torch.manual_seed(s)
    return s
