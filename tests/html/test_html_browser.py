"""The built book as a reader sees it, in headless Chromium: every page loads with a
title, no broken image, no console error (failed loads of external hosts aside: the
machine is offline); chapter pages link to their notebook on Colab; the question bank's
and numbers sheet's links resolve; a dropdown solution opens on click; and each chapter
page is saved as a screenshot under _build/screenshots/."""
from __future__ import annotations

import re
from pathlib import PurePosixPath
from urllib.parse import unquote, urlsplit

import pytest

import html_support as hs
from html_support import WAIT, WINDOW

COLAB = re.compile(r"^https://colab\.research\.google\.com/github/([^/]+/[^/]+)/blob/([^/]+)/(.+?)(?:[?#].*)?$")


def test_page_loads_with_a_title(visits, page):
    record = visits.visit(page)
    assert urlsplit(record["url"]).path.endswith("/" + page), f"{page} ended up at {record['url']}"
    assert record["title"].strip(), f"{page} has an empty <title>"


def test_no_broken_images(visits, page):
    record = visits.visit(page)
    broken = [img["src"] for img in record["images"] if not (img["complete"] and img["width"] > 0)]
    assert not broken, f"{page}: {len(broken)} broken <img> (naturalWidth 0): {broken}"


def test_no_console_errors(visits, page):
    record = visits.visit(page)
    assert not record["console_errors"], (
        f"{page}: browser console errors:\n" + "\n".join(record["console_errors"])
        + ("\n(ignored, external hosts: " + "; ".join(record["console_ignored"]) + ")"
           if record["console_ignored"] else "")
    )


def test_index_opens_the_root_page(visits, html_root):
    index = html_root / "index.html"
    assert index.is_file(), f"{index} is missing"
    from selenium.webdriver.support.ui import WebDriverWait

    root = hs.toc_files()[0] + ".html"
    visits.load("index.html")
    WebDriverWait(visits.drv, WAIT).until(
        lambda d: urlsplit(d.current_url).path.endswith("/" + root) and d.title.strip(),
        message=f"index.html did not open {root} with a title",
    )


def test_chapter_links_to_its_notebook_on_colab(visits, chapter):
    record = visits.visit(chapter)
    hrefs = [link["href"] for link in record["links"] if COLAB.match(link["href"])]
    assert hrefs, f"{chapter}: no 'Launch on Colab' link (https://colab.research.google.com/github/...)"
    repo = hs.config().get("repository") or {}
    want_repo = re.sub(r"^https://github\.com/", "", str(repo.get("url", ""))).strip("/")
    want_branch = str(repo.get("branch") or "main")
    prefix = str(repo.get("path_to_book") or "").strip("/")
    want_path = f"chapters/{PurePosixPath(chapter).stem}.ipynb"
    for href in hrefs:
        gh_repo, branch, path = COLAB.match(href).groups()
        path = unquote(path)
        assert gh_repo == want_repo and branch == want_branch, (
            f"{chapter}: Colab link {href} is not on {want_repo}@{want_branch} (_config.yml repository)")
        if prefix:
            assert path.startswith(prefix + "/"), f"{chapter}: Colab link {href} is outside path_to_book {prefix!r}"
            path = path[len(prefix) + 1:]
        assert path == want_path, f"{chapter}: Colab link opens {path}, not the page's own notebook {want_path}"
        assert (hs.book_root() / path).is_file(), f"{chapter}: Colab link target {path} is not in the repository"


def test_chapter_screenshot(visits, chapter):
    path = hs.screenshot_dir() / f"{PurePosixPath(chapter).stem}.png"
    width, height = visits.screenshot(chapter, path)
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    png_w, png_h = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (png_w, png_h) == (width, height) and width == WINDOW[0] and height > 0, (
        f"{path}: {png_w}x{png_h} px, expected {WINDOW[0]}x{height} (the page's width and height)")


@pytest.mark.parametrize("study_page", ["question_bank.html", "numbers.html"])
def test_study_page_links_resolve(visits, html_root, study_page):
    if not (html_root / study_page).is_file():
        doc = study_page[: -len(".html")]
        assert doc not in hs.toc_files(), f"{study_page} is in _toc.yml but was not built"
        pytest.skip(f"{study_page}: not part of this book (not in _toc.yml)")
    record = visits.visit(study_page)
    origin = urlsplit(record["url"])
    problems, internal = [], 0
    for link in record["links"]:
        href = urlsplit(link["href"])  # as the browser resolved it
        if (href.scheme, href.hostname, href.port) != (origin.scheme, origin.hostname, origin.port):
            continue  # external (not checked offline), or mailto:, javascript:, ...
        internal += 1
        target = html_root / unquote(href.path).lstrip("/")
        if target.is_dir():
            target = target / "index.html"
        fragment = unquote(href.fragment)
        if not target.is_file():
            problems.append(f"{link['raw']!r} -> {target.relative_to(html_root).as_posix()} does not exist")
        elif fragment and target.suffix == ".html" and fragment not in hs.ids_in(target.resolve()):
            problems.append(f"{link['raw']!r} -> no id {fragment!r} in {target.relative_to(html_root).as_posix()}")
    assert internal, f"{study_page}: no internal link found at all"
    assert not problems, f"{study_page}: {len(problems)} link(s) do not resolve:\n" + "\n".join(problems)


def _pages_with_dropdown_solution() -> list[str]:
    pages = hs.book_pages()
    pages.sort(key=lambda p: (p != "chapters/00_lab.html", not p.startswith("chapters/"), p))
    return [p for p in pages if hs.parse(hs.html_dir() / p).select("div.solution.dropdown, div.admonition.solution.dropdown")]


def test_dropdown_solution_opens_on_click(visits, html_root):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    pages = _pages_with_dropdown_solution()
    assert pages, "no page has a dropdown solution (sphinx-exercise `solution` with `:class: dropdown`)"
    page = pages[0]
    visits.load(page)
    drv = visits.drv
    wait = WebDriverWait(drv, WAIT)

    def closed_solution(d):
        # sphinx-togglebutton's script adds the button and hides the content once the DOM is ready.
        for item in d.find_elements(By.CSS_SELECTOR, "div.solution.dropdown.toggle-hidden"):
            if item.find_elements(By.CSS_SELECTOR, "button.toggle-button"):
                return item
        return False

    solution = wait.until(closed_solution, message=f"{page}: sphinx-togglebutton did not turn the solution into a closed dropdown")
    content = solution.find_element(By.CSS_SELECTOR, ":scope > .admonition-title ~ *")
    assert not content.is_displayed() and not content.text.strip(), f"{page}: the solution is visible before any click"
    title = solution.find_element(By.CSS_SELECTOR, ":scope > .admonition-title")
    drv.execute_script("arguments[0].scrollIntoView({block: 'center'})", title)
    wait.until(lambda d: title.is_displayed(), message=f"{page}: the solution's title is not visible")
    title.click()
    wait.until(
        lambda d: content.is_displayed() and content.text.strip()
        and "toggle-hidden" not in (solution.get_attribute("class") or ""),
        message=f"{page}: the solution did not open after a click on its title",
    )
    button = solution.find_element(By.CSS_SELECTOR, "button.toggle-button")
    assert button.get_attribute("aria-expanded") == "true"
