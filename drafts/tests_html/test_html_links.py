"""Static checks of the built HTML, no browser: the build exists, every page the table of
contents names was built, and every internal link resolves to an existing file and,
when it has a #fragment, to an element with that id in the target page. External
http(s) links are not checked (the machine is offline)."""
from __future__ import annotations

import html_support as hs


def test_build_exists(html_root):
    assert (html_root / "index.html").is_file() or hs.book_pages(), f"{html_root} holds no pages"


def test_every_toc_entry_was_built(html_root):
    missing = [f"{doc}.html" for doc in hs.toc_files() if not (html_root / f"{doc}.html").is_file()]
    assert not missing, f"pages named in _toc.yml but not in {html_root}: {missing}"


def test_every_internal_link_resolves(html_root):
    files = hs.all_html_files()
    assert files, f"no HTML files in {html_root}"
    problems, checked = [], 0
    for path in files:
        for href in hs.links_in(path):
            checked += 1
            problem = hs.check_link(href, path)
            if problem:
                problems.append(problem)
    problems = sorted(set(problems))
    assert not problems, (
        f"{len(problems)} broken internal link(s) among {checked} in {len(files)} files:\n"
        + "\n".join(problems[:60]) + ("\n..." if len(problems) > 60 else "")
    )
