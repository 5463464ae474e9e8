"""Checks on the built HTML (run after the book build): every chapter page has a
"Launch on Colab" link to its own .ipynb twin on the configured repository and branch,
and that twin exists in the repository; the build wrote the Anki deck (a zip holding an
Anki collection) that the intro links to.

    python tools/check_html.py        # exit 1 and list the problems
"""
from __future__ import annotations

import re
import sys
import zipfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
HTML = ROOT / "_build" / "html"


def problems() -> list[str]:
    cfg = yaml.safe_load((ROOT / "_config.yml").read_text())
    url, branch = cfg["repository"]["url"].rstrip("/"), cfg["repository"].get("branch", "main")
    repo = re.sub(r"^https://github\.com/", "", url)
    out = []
    if not HTML.is_dir():
        return [f"{HTML.relative_to(ROOT)} does not exist: build the book first"]
    for md in sorted((ROOT / "chapters").glob("*.md")):
        page = HTML / "chapters" / f"{md.stem}.html"
        if not page.exists():
            out.append(f"{page.relative_to(ROOT)}: missing")
            continue
        links = re.findall(r'href="(https://colab\.research\.google\.com/[^"]+)"', page.read_text(encoding="utf-8"))
        want = f"https://colab.research.google.com/github/{repo}/blob/{branch}/chapters/{md.stem}.ipynb"
        if want not in links:
            out.append(f"{page.relative_to(ROOT)}: no Colab link to {want} (found {links or 'none'})")
        if not md.with_suffix(".ipynb").exists():
            out.append(f"chapters/{md.stem}.ipynb: the Colab link's target is not in the repository")
    decks = sorted((HTML / "_downloads").glob("*.apkg"))
    if not decks:
        out.append(f"{HTML.relative_to(ROOT)}/_downloads/*.apkg: the Anki deck was not written")
    for deck in decks:
        if not zipfile.is_zipfile(deck) or "collection.anki2" not in zipfile.ZipFile(deck).namelist():
            out.append(f"{deck.relative_to(ROOT)}: not an Anki package")
        elif deck.name not in (HTML / "intro.html").read_text(encoding="utf-8"):
            out.append(f"intro.html: no link to {deck.name}")
    return out


if __name__ == "__main__":
    found = problems()
    for p in found:
        print(p)
    print(f"check_html: {len(found)} problem(s)")
    sys.exit(1 if found else 0)
