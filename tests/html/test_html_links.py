"""Static checks of the built HTML, no browser: the build exists, every page the table of
contents names was built, every internal link resolves to an existing file and, when it
has a #fragment, to an element with that id in the target page (external http(s) links
are not checked: the machine is offline), and no MyST directive was left unparsed."""
from __future__ import annotations

import re

import html_support as hs

# A directive fence that reached the page as text: e.g. ```{dropdown} Title with `code`
# (CommonMark forbids backticks in a backtick fence's info string, so that line is not a
# fence at all, and nothing warns).
UNPARSED_FENCE = re.compile(r"(```+|~~~+|:::+)\s*\{[\w:-]+\}")


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


def test_no_unparsed_directive_in_pages(html_root):
    problems = []
    for page in hs.book_pages():
        soup = hs.parse(html_root / page)
        body = soup.find("article") or soup.body or soup
        texts = [s for s in body.find_all(string=True)
                 if not s.find_parent(["pre", "code", "script", "style", "textarea"])]
        for match in UNPARSED_FENCE.finditer("".join(texts)):
            problems.append(f"{page}: {match.group(0)!r} shown as text (a directive fence that did not parse)")
    assert not problems, (
        "\n".join(problems) + "\nA backtick fence cannot have backticks in its title: use a colon "
        "fence (:::{dropdown} ...) or drop the backticks."
    )


GENERATED_STUDY_PAGES = ["question_bank.html", "numbers.html", "mock_interviews.html", "myths.html",
                         "traps.html", "follow_ups.html", "design_scenarios.html"]


def test_study_pages_show_prices_as_text(html_root):
    """With dollarmath on, "$2.50 ... $0.15" in one paragraph would render as a formula; the
    generator escapes a $ before a digit, and the pages must show no such formula."""
    problems = []
    for page in GENERATED_STUDY_PAGES:
        if not (html_root / page).is_file():
            continue
        for node in hs.parse(html_root / page).select(".math"):
            text = node.get_text()
            if re.match(r"^\\\(\s*\d", text) or re.search(r"[a-z]{3,} [a-z]{3,}", text):
                problems.append(f"{page}: {text[:80]!r}")
    assert not problems, "prices rendered as math:\n" + "\n".join(problems)
