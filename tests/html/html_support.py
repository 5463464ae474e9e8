"""Helpers for the checks on the built book (tests/html): where the book and its HTML
are, which pages came from the book's sources, a static parser of links and ids, and
`Visits`, which loads pages in the browser and keeps what the checks need.

The book root is $FTLAB_BOOK_ROOT, or the repository root by default; the HTML is
<root>/_build/html, written by `jupyter-book build` (these checks never build it).
"""
from __future__ import annotations

import os
import re
from functools import lru_cache
from pathlib import Path
from urllib.parse import unquote, urlsplit

import yaml
from bs4 import BeautifulSoup

REPO_ROOT = Path(__file__).resolve().parents[2]

# The browser: Debian's chromium + chromium-driver, headless, offline.
CHROME_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    # Every host but this machine fails to resolve at once, online or offline, so that a
    # page with external resources never waits on the network and runs the same in CI.
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE localhost",
]
WINDOW = (1280, 900)          # CSS px; screenshots are this wide
PAGE_LOAD_TIMEOUT = 30        # s, for driver.get
WAIT = 10                     # s, for every explicit wait
MAX_SHOT_HEIGHT = 32768       # px; longer pages are cut there
LOCAL_HOSTS = {"127.0.0.1", "localhost", "[::1]", "::1"}


# Sphinx's own pages (no source in the book) and folders of assets, not pages.
GENERATED_PAGES = {"genindex.html", "search.html", "py-modindex.html"}
ASSET_DIRS = {"_static", "_sources", "_images", "_downloads", "_panels_static"}


def book_root() -> Path:
    return Path(os.environ.get("FTLAB_BOOK_ROOT") or REPO_ROOT).resolve()


def html_dir() -> Path:
    return book_root() / "_build" / "html"


def screenshot_dir() -> Path:
    return book_root() / "_build" / "screenshots"


def missing_build_message() -> str:
    return (
        f"{html_dir()} does not exist: these checks test the BUILT book. Build it first "
        f"(`make build`, or `jupyter-book build {book_root()}`), then rerun "
        f"(FTLAB_BOOK_ROOT points the checks at another book root)."
    )


def is_redirect(path: Path) -> bool:
    """The small page jupyter-book writes as index.html when the root is not `index`."""
    head = path.read_text(encoding="utf-8", errors="replace")[:2000].lower()
    return 'http-equiv="refresh"' in head and "<body" not in head


def _hidden(rel: Path) -> bool:
    """A page under a dot-folder (e.g. an old build's .pytest_cache/README.html)."""
    return any(part.startswith(".") for part in rel.parts)


def book_pages() -> list[str]:
    """Every HTML page produced from the book's sources, as paths relative to the
    HTML folder with forward slashes (e.g. 'intro.html', 'chapters/00_lab.html')."""
    root = html_dir()
    if not root.is_dir():
        return []
    pages = []
    for path in sorted(root.rglob("*.html")):
        rel = path.relative_to(root)
        if (rel.parts[0] in ASSET_DIRS or rel.as_posix() in GENERATED_PAGES or _hidden(rel)
                or is_redirect(path)):
            continue
        pages.append(rel.as_posix())
    return pages


def chapter_pages() -> list[str]:
    return [p for p in book_pages() if p.startswith("chapters/")]


@lru_cache(maxsize=None)
def _read_yaml(path: Path) -> dict:
    return yaml.safe_load(path.read_text(encoding="utf-8")) or {}


def config() -> dict:
    return _read_yaml(book_root() / "_config.yml")


def toc_files() -> list[str]:
    """Every document the table of contents names (root, files), without suffix."""
    toc = _read_yaml(book_root() / "_toc.yml")
    found: list[str] = []

    def walk(node):
        if isinstance(node, dict):
            for key in ("root", "file"):
                if isinstance(node.get(key), str):
                    found.append(re.sub(r"\.(md|ipynb|rst)$", "", node[key]))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(toc)
    return list(dict.fromkeys(found))


def site_baseurl() -> str:
    """html.baseurl from _config.yml (absolute links under it are links into the site)."""
    return str((config().get("html") or {}).get("baseurl") or "").rstrip("/")


@lru_cache(maxsize=None)
def parse(path: Path) -> BeautifulSoup:
    return BeautifulSoup(path.read_text(encoding="utf-8", errors="replace"), "html.parser")


@lru_cache(maxsize=None)
def ids_in(path: Path) -> frozenset[str]:
    """Every fragment an URL can point to in this page: id attributes and <a name>."""
    soup = parse(path)
    ids = {tag["id"] for tag in soup.find_all(id=True)}
    ids |= {tag["name"] for tag in soup.find_all("a", attrs={"name": True})}
    return frozenset(ids)


def resolve_local(href: str, page: Path) -> tuple[Path, str] | None:
    """(target file, fragment) of a link from `page` into the site; None when the link
    leaves the site (external scheme, protocol-relative, or off the configured baseurl)."""
    href = href.strip()
    base = site_baseurl()
    if base and href.startswith(base + "/"):
        href = "/" + href[len(base) + 1:]
    parts = urlsplit(href)
    if parts.scheme or parts.netloc:
        return None
    path, fragment = unquote(parts.path), unquote(parts.fragment)
    if not path:
        target = page
    elif path.startswith("/"):
        target = html_dir() / path.lstrip("/")
    else:
        target = page.parent / path
    if target.is_dir() or path.endswith("/"):
        target = target / "index.html"
    return target.resolve(), fragment


def check_link(href: str, page: Path) -> str | None:
    """A problem with one link from `page`, or None when it resolves (or is external)."""
    local = resolve_local(href, page)
    if local is None:
        return None
    target, fragment = local
    root = html_dir().resolve()
    shown = f"{page.relative_to(root).as_posix()}: {href!r}"
    if root not in target.parents and target != root:
        return f"{shown} points outside the built site"
    if not target.is_file():
        return f"{shown} -> {target.relative_to(root).as_posix()} does not exist"
    if fragment and target.suffix == ".html" and fragment not in ids_in(target):
        return f"{shown} -> no element with id {fragment!r} in {target.relative_to(root).as_posix()}"
    return None


# (tag, attribute) pairs whose URL must resolve inside the site when it is local.
LINK_ATTRS = [("a", "href"), ("area", "href"), ("link", "href"), ("img", "src"),
              ("script", "src"), ("source", "src"), ("iframe", "src"), ("video", "src"),
              ("audio", "src"), ("embed", "src"), ("object", "data")]


def links_in(path: Path) -> list[str]:
    soup = parse(path)
    out = []
    for tag, attr in LINK_ATTRS:
        for node in soup.find_all(tag, attrs={attr: True}):
            out.append(node[attr])
    return out


def all_html_files() -> list[Path]:
    """Every HTML file of the built site except the theme's templates under _static."""
    root = html_dir()
    return [p for p in sorted(root.rglob("*.html"))
            if p.relative_to(root).parts[0] != "_static" and not _hidden(p.relative_to(root))]


# --- browser visits (selenium is imported lazily: the static checks do not need it)

def is_local_url(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme == "file" or (parts.hostname or "") in LOCAL_HOSTS


def entry_url(message: str) -> str:
    """The URL a Chrome console entry is about: its message starts with it."""
    first = message.split(" ", 1)[0]
    return first if "://" in first else ""


def split_console(entries):
    """(errors, ignored): SEVERE entries, less those about a non-local URL (a CDN or
    other external host the offline machine cannot reach)."""
    errors, ignored = [], []
    for entry in entries:
        if entry.get("level") != "SEVERE":
            continue
        url = entry_url(entry.get("message", ""))
        (ignored if url and not is_local_url(url) else errors).append(entry["message"])
    return errors, ignored


def wait_until_settled(drv):
    """Explicit waits, no sleeps: the document has loaded, every <img> has finished
    (lazy ones are made eager first), fonts are ready and two frames have painted."""
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(drv, WAIT)
    wait.until(lambda d: d.execute_script("return document.readyState") == "complete")
    drv.execute_script("document.querySelectorAll('img[loading=lazy]').forEach(i => i.loading = 'eager')")
    wait.until(lambda d: d.execute_script("return Array.from(document.images).every(i => i.complete)"))
    drv.set_script_timeout(WAIT)
    drv.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "document.fonts.ready.then(() => requestAnimationFrame(() => requestAnimationFrame(() => done(true))));"
    )


class Visits:
    """Loads each page once and keeps what the checks need; console entries that arrive
    after a page's record was made are added to that page when the next load drains them."""

    def __init__(self, drv, base):
        self.drv, self.base, self.records, self.last = drv, base, {}, None

    def url(self, page: str) -> str:
        return f"{self.base}/{page}"

    def drain(self):
        entries = self.drv.get_log("browser")
        if self.last is not None and entries:
            errors, ignored = split_console(entries)
            self.records[self.last]["console_errors"] += errors
            self.records[self.last]["console_ignored"] += ignored

    def load(self, page: str):
        """Navigate to `page` and wait until it has settled; returns its console entries."""
        self.drain()
        self.last = None
        self.drv.get(self.url(page))
        wait_until_settled(self.drv)
        return self.drv.get_log("browser")

    def visit(self, page: str) -> dict:
        if page in self.records:
            return self.records[page]
        entries = self.load(page)
        errors, ignored = split_console(entries)
        record = self.drv.execute_script(
            """
            const imgs = Array.from(document.images).map(i => ({
                src: i.currentSrc || i.src, complete: i.complete, width: i.naturalWidth}));
            const links = Array.from(document.querySelectorAll('a[href]')).map(a => ({
                raw: a.getAttribute('href'), href: a.href}));
            return {title: document.title, url: location.href, images: imgs, links: links};
            """
        )
        record.update(console_errors=errors, console_ignored=ignored)
        self.records[page] = record
        self.last = page
        return record

    def screenshot(self, page: str, path) -> tuple[int, int]:
        """Full-page PNG of `page`, WINDOW[0] CSS px wide; returns (width, height).

        The viewport is first set to the page's whole height (device-metrics override)
        and the page left to settle at that size, then captured as one frame: the layout
        is fixed before the capture instead of being resized during it."""
        import base64

        from selenium.webdriver.support.ui import WebDriverWait

        self.visit(page)
        if self.drv.current_url != self.url(page):
            self.load(page)
            self.last = page
        width = WINDOW[0]
        height = 0
        try:
            for _ in range(3):  # a taller viewport can make the page itself taller (vh units)
                want = int(min(max(self.drv.execute_script(
                    "return document.documentElement.scrollHeight"), 1), MAX_SHOT_HEIGHT))
                if want == height:
                    break
                height = want
                self.drv.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
                    "width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})
                WebDriverWait(self.drv, WAIT).until(
                    lambda d: d.execute_script("return window.innerHeight") == height)
                wait_until_settled(self.drv)
            shot = self.drv.execute_cdp_cmd("Page.captureScreenshot", {"format": "png", "fromSurface": True})
        finally:
            self.drv.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(shot["data"]))
        return width, height
