"""Link previews: Open Graph and Twitter card tags on every page, with figures/social_card.png.

The image URL must be absolute, so it is built from the published site's address:
GitHub Pages serves https://OWNER.github.io/REPO/ for the repository.url in _config.yml.
"""
from __future__ import annotations

import shutil
from html import escape
from pathlib import Path
from urllib.parse import urlsplit

CARD = Path(__file__).resolve().parents[1] / "figures" / "social_card.png"


def site_url(repo_url: str) -> str:
    """https://github.com/OWNER/REPO -> https://owner.github.io/REPO/"""
    parts = urlsplit(repo_url)
    path = [p for p in parts.path.split("/") if p]
    if parts.netloc != "github.com" or len(path) != 2:
        raise ValueError(f"repository.url must be https://github.com/OWNER/REPO, got {repo_url!r}")
    return f"https://{path[0].lower()}.github.io/{path[1]}/"


def _tags(app, pagename, templatename, context, doctree):
    base = site_url(app.config.html_theme_options.get("repository_url", ""))
    title = context.get("title") or app.config.project
    tags = {"og:type": "website", "og:site_name": app.config.project, "og:title": title,
            "og:url": base + pagename + ".html", "og:image": base + "_static/social_card.png",
            "og:image:width": "1200", "og:image:height": "630"}
    meta = "".join(f'\n<meta property="{k}" content="{escape(v)}" />' for k, v in tags.items())
    meta += '\n<meta name="twitter:card" content="summary_large_image" />'
    context["metatags"] = context.get("metatags", "") + meta


def _copy_card(app, exception):
    if exception is None and app.builder.format == "html":
        static = Path(app.outdir) / "_static"
        static.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(CARD, static / "social_card.png")


def setup(app):
    app.connect("html-page-context", _tags)
    app.connect("build-finished", _copy_card)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
