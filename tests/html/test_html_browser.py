"""The built book as a reader sees it, in headless Chromium: every page loads with a
title, no broken image, no console error (failed loads of external hosts aside: the
machine is offline); chapter pages link to their notebook on Colab; the study pages' links
resolve; a dropdown solution opens on click; the question bank's "I can answer this"
toggle survives a reload (localStorage) and updates its chapter's count; the intro's Anki
deck link downloads a deck with one note per question; and each chapter page is saved as
a screenshot under _build/screenshots/."""
from __future__ import annotations

import io
import re
import sqlite3
import tempfile
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath
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


@pytest.mark.parametrize("study_page", ["question_bank.html", "numbers.html", "mock_interviews.html",
                                        "myths.html", "traps.html", "follow_ups.html",
                                        "design_scenarios.html"])
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


STORE = "ftlab-known-v1"   # the localStorage key of _ext/static/ftlab_study.js


def _study_page(html_root, page):
    if not (html_root / page).is_file():
        assert page[: -len(".html")] not in hs.toc_files(), f"{page} is in _toc.yml but was not built"
        pytest.skip(f"{page}: not part of this book (not in _toc.yml)")


def test_question_bank_toggle_persists_across_reload(visits, html_root):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    page = "question_bank.html"
    _study_page(html_root, page)
    drv = visits.drv
    wait = WebDriverWait(drv, WAIT)
    visits.load(page)
    drv.execute_script(f"localStorage.removeItem('{STORE}')")
    visits.load(page)
    boxes = drv.find_elements(By.CSS_SELECTOR, "input.ftlab-known")
    assert boxes, f"{page}: no 'I can answer this' toggle (input.ftlab-known)"
    assert not any(b.is_selected() for b in boxes), f"{page}: toggles ticked with empty storage"
    box = boxes[0]
    label, chapter = box.get_attribute("data-q"), box.get_attribute("data-chapter")
    same = f"input.ftlab-known[data-q='{label}']"
    count = f".ftlab-count[data-chapter='{chapter}']"

    def counts(d):
        return [el.text.strip() for el in d.find_elements(By.CSS_SELECTOR, count)]

    assert counts(drv) and all(c.startswith("0 / ") for c in counts(drv)), f"{page}: counts {counts(drv)}"
    try:
        drv.execute_script("arguments[0].scrollIntoView({block: 'center'})", box)
        wait.until(lambda d: box.is_displayed() and box.is_enabled(), message=f"{page}: toggle not clickable")
        box.click()
        wait.until(lambda d: all(b.is_selected() for b in d.find_elements(By.CSS_SELECTOR, same)),
                   message=f"{page}: the other toggles of {label} did not follow the click")
        wait.until(lambda d: all(c.startswith("1 / ") for c in counts(d)),
                   message=f"{page}: the count of {chapter} did not become 1 after the click: {counts(drv)}")
        visits.load(page)  # a reload: only localStorage can bring the tick back
        again = drv.find_elements(By.CSS_SELECTOR, same)
        assert again and all(b.is_selected() for b in again), f"{page}: the tick on {label} did not survive a reload"
        assert all(c.startswith("1 / ") for c in counts(drv)), f"{page}: count after reload {counts(drv)}"
        stored = drv.execute_script(f"return localStorage.getItem('{STORE}')")
        assert stored and label in stored, f"{page}: localStorage holds {stored!r}"
        box = again[0]
        drv.execute_script("arguments[0].scrollIntoView({block: 'center'})", box)
        box.click()
        wait.until(lambda d: all(c.startswith("0 / ") for c in counts(d)), message=f"{page}: unticking did not count down")
        visits.load(page)
        assert not any(b.is_selected() for b in drv.find_elements(By.CSS_SELECTOR, same)), \
            f"{page}: the untick on {label} did not survive a reload"
    finally:
        drv.execute_script(f"localStorage.removeItem('{STORE}')")


def test_intro_links_the_anki_deck(visits, html_root):
    root = hs.toc_files()[0] + ".html"
    record = visits.visit(root)
    decks = [link for link in record["links"] if urlsplit(link["href"]).path.endswith(".apkg")]
    assert decks, f"{root}: no link to the Anki deck (.apkg)"
    questions = {b["data-q"] for b in hs.parse(html_root / "question_bank.html").select("input.ftlab-known")}
    for link in decks:
        with urllib.request.urlopen(link["href"], timeout=WAIT) as response:  # served like the site
            data = response.read()
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            assert "collection.anki2" in z.namelist(), f"{link['raw']}: not an Anki package"
            with tempfile.TemporaryDirectory() as tmp:
                db = Path(tmp) / "collection.anki2"
                db.write_bytes(z.read("collection.anki2"))
                con = sqlite3.connect(db)
                try:
                    n = con.execute("select count(*) from notes").fetchone()[0]
                finally:
                    con.close()
        assert n == len(questions) > 0, f"{link['raw']}: {n} notes for {len(questions)} questions in the bank"
