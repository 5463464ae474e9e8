"""Keep the chapters in step with _config.yml and their .ipynb twins in step with the chapters.

    python tools/sync.py           # write: Colab URLs from _config.yml, then every twin
    python tools/sync.py --check   # exit 1 and list what is stale (used by the tests)

The repository URL lives in _config.yml alone; this script copies it into each
chapter's Colab setup cell. Twins are input-only notebooks with stable cell ids, so
regenerating an unchanged chapter rewrites the same bytes.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

import jupytext
import yaml

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = ROOT / "chapters"
# The install line of the Colab setup cell: "ftlab @ git+<url>@<branch>"
INSTALL_RE = re.compile(r'"ftlab @ git\+[^"@]+@[^"]+"')


def repo_url() -> tuple[str, str]:
    cfg = yaml.safe_load((ROOT / "_config.yml").read_text())
    repo = cfg.get("repository") or {}
    url, branch = repo.get("url"), repo.get("branch", "main")
    if not url:
        raise SystemExit("_config.yml has no repository.url")
    return url.rstrip("/"), branch


def install_spec() -> str:
    url, branch = repo_url()
    return f'"ftlab @ git+{url}@{branch}"'


def chapter_sources() -> list[Path]:
    return sorted(p for p in CHAPTERS.glob("*.md"))


def with_url(text: str) -> str:
    return INSTALL_RE.sub(install_spec(), text)


def twin_text(md_text: str) -> str:
    nb = jupytext.reads(md_text, fmt="md:myst")
    nb.metadata.pop("jupytext", None)
    nb.metadata["colab"] = {"provenance": []}
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"cell-{i:03d}"
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    return jupytext.writes(nb, fmt="ipynb")


def stale() -> list[str]:
    problems = []
    for md in chapter_sources():
        text = md.read_text(encoding="utf-8")
        if with_url(text) != text:
            problems.append(f"{md.relative_to(ROOT)}: Colab install line differs from _config.yml")
        twin = md.with_suffix(".ipynb")
        if not twin.exists():
            problems.append(f"{twin.relative_to(ROOT)}: missing")
        elif twin.read_text(encoding="utf-8") != twin_text(with_url(text)):
            problems.append(f"{twin.relative_to(ROOT)}: stale (run `make sync`)")
    for twin in CHAPTERS.glob("*.ipynb"):
        if not twin.with_suffix(".md").exists():
            problems.append(f"{twin.relative_to(ROOT)}: no .md source")
    return problems


def main(argv: list[str]) -> int:
    if "--check" in argv:
        problems = stale()
        for p in problems:
            print(p)
        return 1 if problems else 0
    for md in chapter_sources():
        text = md.read_text(encoding="utf-8")
        new = with_url(text)
        if new != text:
            md.write_text(new, encoding="utf-8")
        twin = md.with_suffix(".ipynb")
        out = twin_text(new)
        if not twin.exists() or twin.read_text(encoding="utf-8") != out:
            twin.write_text(out, encoding="utf-8")
            print(f"wrote {twin.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
