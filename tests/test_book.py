"""The book's wiring: twins in sync, one repository URL, a Colab cell in every chapter."""
import re
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import sync  # noqa: E402

CHAPTERS = sorted((ROOT / "chapters").glob("*.md"))


def test_there_are_chapters_and_each_has_a_twin():
    assert CHAPTERS, "no chapter sources in chapters/"
    for md in CHAPTERS:
        assert md.with_suffix(".ipynb").exists(), f"{md.name} has no .ipynb twin (run `make sync`)"


def test_twins_are_in_sync():
    problems = sync.stale()
    assert not problems, "stale twins (run `make sync`):\n" + "\n".join(problems)


def test_sync_is_idempotent(tmp_path):
    md = CHAPTERS[0].read_text(encoding="utf-8")
    assert sync.twin_text(md) == sync.twin_text(md)


def test_twins_are_input_only():
    import nbformat
    for md in CHAPTERS:
        nb = nbformat.read(md.with_suffix(".ipynb"), as_version=4)
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert not cell.outputs and cell.execution_count is None, f"{md.name}: twin has outputs"


def test_colab_cells_use_the_configured_url():
    cfg = yaml.safe_load((ROOT / "_config.yml").read_text())
    url, branch = cfg["repository"]["url"].rstrip("/"), cfg["repository"].get("branch", "main")
    for md in CHAPTERS:
        text = md.read_text(encoding="utf-8")
        first = re.search(r"```\{code-cell\}[^\n]*\n(.*?)```", text, re.S)
        assert first, f"{md.name} has no code cell"
        cell = first.group(1)
        assert ":tags: [hide-output]" in cell, f"{md.name}: the Colab setup cell must be tagged hide-output"
        assert "google.colab" in cell, f"{md.name}: the first code cell must be the Colab setup cell"
        assert f'"ftlab @ git+{url}@{branch}"' in cell, f"{md.name}: Colab install line differs from _config.yml"
        assert "torch" not in cell.replace("torch is already there", ""), f"{md.name}: never reinstall torch"


def test_config_fails_on_errors_and_excludes_twins():
    cfg = yaml.safe_load((ROOT / "_config.yml").read_text())
    assert cfg["execute"]["raise_on_error"] is True
    assert "**.ipynb" in cfg["exclude_patterns"]
    assert cfg["launch_buttons"]["colab_url"].startswith("https://colab.research.google.com")
    make = (ROOT / "Makefile").read_text()
    assert "--all -W -n --keep-going" in make


def test_every_chapter_is_in_the_toc():
    toc = (ROOT / "_toc.yml").read_text()
    for md in CHAPTERS:
        assert f"chapters/{md.stem}" in toc, f"{md.name} is missing from _toc.yml"


def test_requirements_pin_jupyter_book_1_and_cpu_torch():
    req = (ROOT / "requirements.txt").read_text()
    assert re.search(r"^jupyter-book==1\.", req, re.M), "pin jupyter-book 1.x (2.x is another engine)"
    assert re.search(r"^torch==2\.13\.0$", req, re.M), "pin torch==2.13.0 (the CPU wheel on disk)"


def test_no_pickle_loading_anywhere():
    offenders = []
    for path in list((ROOT / "src").rglob("*.py")) + list((ROOT / "tools").glob("*.py")) + CHAPTERS:
        if re.search(r"torch\.load\(|pickle\.load", path.read_text(encoding="utf-8")):
            offenders.append(str(path.relative_to(ROOT)))
    assert not offenders, f"pickle loading in {offenders}: use safetensors"
