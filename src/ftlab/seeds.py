"""Seeding and threads, set once for every chapter by ``seed_everything``.

``FTLAB_SEED_OFFSET`` shifts every seed in the course, so ``make seeds`` can rerun each
notebook under other seeds and check that every asserted margin holds. ``FTLAB_THREADS``
overrides the number of torch threads (default ``DEFAULT_THREADS``; CONTRIBUTING.md
gives the measurements behind it)."""
from __future__ import annotations

import os
import random

import numpy as np
import torch

ENV = "FTLAB_SEED_OFFSET"
THREADS_ENV = "FTLAB_THREADS"
# Matrices at d = 64-96 gain little from a second thread, and a second thread loses a
# lot when another process wants the core (measured in CONTRIBUTING.md).
DEFAULT_THREADS = 1


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


def num_threads() -> int:
    """The torch thread count the course uses: ``FTLAB_THREADS``, else ``DEFAULT_THREADS``."""
    raw = os.environ.get(THREADS_ENV, str(DEFAULT_THREADS))
    try:
        n = int(raw)
    except ValueError:
        raise ValueError(f"{THREADS_ENV} must be a positive integer, got {raw!r}") from None
    if n < 1:
        raise ValueError(f"{THREADS_ENV} must be a positive integer, got {raw!r}")
    return n


def seed_everything(seed: int = 0) -> int:
    """Set torch's thread count, seed Python, NumPy and torch; return the effective seed."""
    torch.set_num_threads(num_threads())
    s = shift(seed)
    random.seed(s)
    np.random.seed(s % 2**32)
    torch.manual_seed(s)
    return s
