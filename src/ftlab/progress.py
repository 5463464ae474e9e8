"""Progress bars that show in a terminal or Colab and stay quiet in the rendered book."""
from __future__ import annotations

import importlib.util
import os


def progress(iterable, desc: str = "", **kw):
    """A ``tqdm`` bar, or the bare iterable when ``FTLAB_QUIET`` is set (book build, CI).

    ``tqdm.auto`` picks the notebook widget when ipywidgets is installed (Colab has it);
    without ipywidgets it would warn on every page, so the text bar is used instead.
    """
    if os.environ.get("FTLAB_QUIET", "") not in ("", "0"):
        return iterable
    if importlib.util.find_spec("ipywidgets") is not None:
        from tqdm.auto import tqdm
    else:
        from tqdm import tqdm
    return tqdm(iterable, desc=desc, leave=False, **kw)
