"""figures/ is made by code: redrawing gives the committed bytes, and each figure is used."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def make_figures():
    spec = importlib.util.spec_from_file_location("make_figures", ROOT / "tools" / "make_figures.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["make_figures"] = mod
    spec.loader.exec_module(mod)
    return mod


def test_redrawing_gives_the_committed_files(make_figures):
    drawn = make_figures.render()
    assert sorted(drawn) == sorted(p.name for p in (ROOT / "figures").iterdir() if p.is_file())
    stale = [n for n, b in drawn.items() if (ROOT / "figures" / n).read_bytes() != b]
    assert not stale, f"figures out of date: {stale}; run `make figures` and commit"


def test_no_timestamps_in_svgs(make_figures):
    for name in make_figures.FIGURES:
        if name.endswith(".svg"):
            text = (ROOT / "figures" / name).read_text()
            assert "<dc:date>" not in text, name


def test_every_figure_is_used():
    pages = [ROOT / "README.md", ROOT / "intro.md", *(ROOT / "chapters").glob("*.md")]
    text = "\n".join(p.read_text() for p in pages)
    ext = (ROOT / "_ext" / "ftlab_social.py").read_text()
    for fig in (ROOT / "figures").iterdir():
        if fig.is_file():
            assert fig.name in text or fig.name in ext, f"figures/{fig.name} is used nowhere"


def test_site_url_from_the_repository():
    sys.path.insert(0, str(ROOT / "_ext"))
    from ftlab_social import site_url
    assert site_url("https://github.com/Owner/repo") == "https://owner.github.io/repo/"
    with pytest.raises(ValueError, match="gitlab"):
        site_url("https://gitlab.com/a/b")
