"""Progress bars that show in a terminal or Colab and stay quiet in the rendered book."""
from __future__ import annotations

import os

from tqdm.auto import tqdm


def progress(iterable, desc: str = "", **kw):
    """``tqdm.auto`` unless ``FTLAB_QUIET`` is set (the book build and CI set it)."""
    quiet = os.environ.get("FTLAB_QUIET", "") not in ("", "0")
    return tqdm(iterable, desc=desc, disable=quiet, leave=False, **kw)
