"""Fixtures for the checks on the built book: a local HTTP server over _build/html and
one headless Chromium (Debian's chromium + chromium-driver, driven by Selenium).

These checks run after `jupyter-book build`. When _build/html is missing, or Chromium,
ChromeDriver or Selenium cannot be found or started, every check FAILS with a message
saying what to do: nothing here skips.

Why a server and not file:// URLs: the pages are then loaded as a reader of the
published site loads them (same-origin http, so the theme's scripts behave as they do
online, and console entries carry http://127.0.0.1 URLs that tell local failures from
the offline CDNs apart). The server binds 127.0.0.1 on a free port, in a daemon thread.
"""
from __future__ import annotations

import functools
import http.server
import os
import shutil
import tempfile
import threading
from urllib.parse import urlsplit

import pytest

import html_support as hs
from html_support import CHROME_FLAGS, PAGE_LOAD_TIMEOUT, WINDOW, Visits


# --------------------------------------------------------------------------- pages

def pytest_generate_tests(metafunc):
    """`page` runs over every page built from the book's sources, `chapter` over the
    chapter pages. With no build (or no such page) one placeholder case runs and fails,
    so a missing build can never pass as 'no tests'."""
    if "page" in metafunc.fixturenames:
        pages = hs.book_pages()
        metafunc.parametrize("page", pages or [None], ids=pages or ["NO-PAGES"])
    if "chapter" in metafunc.fixturenames:
        chapters = hs.chapter_pages()
        metafunc.parametrize("chapter", chapters or [None], ids=chapters or ["NO-CHAPTER-PAGES"])


def _require(value, what):
    if value is None:
        if not hs.html_dir().is_dir():
            pytest.fail(hs.missing_build_message(), pytrace=False)
        pytest.fail(f"no {what} found in {hs.html_dir()}: is the build complete?", pytrace=False)
    return value


@pytest.fixture
def page(request):
    return _require(request.param, "book pages")


@pytest.fixture
def chapter(request):
    return _require(request.param, "chapter pages (chapters/*.html)")


@pytest.fixture(scope="session")
def html_root():
    root = hs.html_dir()
    if not root.is_dir():
        pytest.fail(hs.missing_build_message(), pytrace=False)
    return root


# --------------------------------------------------------------------------- server

class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep the test output clean
        pass

    def do_GET(self):
        # Chrome asks every origin for /favicon.ico by itself; the book sets no favicon,
        # and on the published site that request goes to the host's root, not the book.
        # Answer it empty rather than 404, which would show as a console error.
        if urlsplit(self.path).path == "/favicon.ico" and not os.path.exists(self.translate_path(self.path)):
            self.send_response(204)
            self.end_headers()
            return
        super().do_GET()


@pytest.fixture(scope="session")
def server(html_root):
    handler = functools.partial(_QuietHandler, directory=str(html_root))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, name="book-http", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


# --------------------------------------------------------------------------- browser

def _browser_paths():
    chromium = os.environ.get("CHROMIUM") or shutil.which("chromium")
    driver = os.environ.get("CHROMEDRIVER") or shutil.which("chromedriver")
    missing = [name for name, path in (("chromium", chromium), ("chromedriver", driver))
               if not (path and os.path.isfile(path) and os.access(path, os.X_OK))]
    if missing:
        pytest.fail(
            f"{' and '.join(missing)} not found (PATH, $CHROMIUM, $CHROMEDRIVER): the browser checks need Debian's "
            "chromium and chromium-driver. Install them with `bash tools/install_browser.sh` "
            "(`make setup` runs it), or point $CHROMIUM / $CHROMEDRIVER at them.",
            pytrace=False,
        )
    return chromium, driver


@pytest.fixture(scope="session")
def driver(server, tmp_path_factory):
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError as exc:
        pytest.fail(f"selenium is not installed in this environment ({exc}): run `make setup`", pytrace=False)
    chromium, chromedriver = _browser_paths()
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in CHROME_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    options.add_argument(f"--window-size={WINDOW[0]},{WINDOW[1]}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    log = tempfile.NamedTemporaryFile(prefix="chromedriver-", suffix=".log", delete=False)
    log.close()
    try:
        # Explicit binary and driver paths: Selenium Manager (which would try to download
        # a driver) is never consulted.
        drv = webdriver.Chrome(options=options, service=Service(executable_path=chromedriver, log_output=log.name))
    except Exception as exc:  # noqa: BLE001 - any failure to start is a failed check
        pytest.fail(
            f"could not start headless Chromium ({chromium}) with ChromeDriver ({chromedriver}): "
            f"{type(exc).__name__}: {str(exc).strip()[:800]}\nChromeDriver log: {log.name}\n"
            "Reinstall with `bash tools/install_browser.sh` (Chromium and ChromeDriver must "
            "come from the same Debian release).",
            pytrace=False,
        )
    drv.set_page_load_timeout(PAGE_LOAD_TIMEOUT)
    try:
        yield drv
    finally:
        drv.quit()
        os.unlink(log.name)


_VISITS: list[Visits] = []


@pytest.fixture(scope="session")
def visits(driver, server):
    _VISITS.append(Visits(driver, server))
    return _VISITS[-1]


def pytest_terminal_summary(terminalreporter):
    """List the console errors that were let through as failed loads of external hosts,
    so that what the filter hid is always visible in the log."""
    ignored = [(page, msg) for v in _VISITS for page, rec in v.records.items()
               for msg in rec["console_ignored"]]
    if ignored:
        terminalreporter.section("console errors ignored (external hosts; the machine is offline)")
        for page, msg in ignored:
            terminalreporter.write_line(f"{page}: {msg}")
