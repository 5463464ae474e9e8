"""Show the one implementation of an idea, with syntax highlighting, in the book and in Colab."""
from __future__ import annotations

import inspect


def source(obj) -> str:
    """The source code of an ``ftlab`` function, class or method."""
    mod = inspect.getmodule(obj)
    if mod is None or not (mod.__name__ == "ftlab" or mod.__name__.startswith("ftlab.")):
        raise ValueError(f"ftlab.show renders ftlab's own code; {obj!r} is not from ftlab")
    return inspect.getsource(obj)


def show(obj):
    """Display the source of ``obj`` as a highlighted Python block (plain text outside IPython)."""
    code = source(obj)
    try:
        from IPython import get_ipython
        from IPython.display import Markdown, display
    except ImportError:  # pragma: no cover - plain Python
        print(code)
        return None
    if get_ipython() is None:
        print(code)
        return None
    fence = "````" if "```" in code else "```"
    display(Markdown(f"{fence}python\n{code.rstrip()}\n{fence}"))
    return None
