"""A local Sphinx extension: the book's study pages, generated from the chapter sources.

Directives (each renders MyST that it writes itself, so links are ordinary {ref}s):

    ```{question-bank}   :level: screen     that level's interview questions, frequency and kind
    ```{mock-interviews} :level: mid        a fixed-seed sample of that level's questions
    ```{numbers-sheet}   :status: wrong     that status's "Numbers to know" bullets, linked
    ```{chapter-map}                        the chapters, the questions each answers, run time

The conventions it reads are the ones tests/test_chapters.py enforces (CONTRIBUTING.md):
a question is a ``(q-label)=`` line, a heading, then ``**level · frequency · kind**``; a
number is a bullet under ``**Numbers to know**`` that starts with ``**verified**``,
``**cited**``, ``**convention**`` or ``**wrong**``.
"""
from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from pathlib import Path

from docutils import nodes
from docutils.parsers.rst import directives
from docutils.statemachine import StringList
from sphinx.transforms.post_transforms import SphinxPostTransform
from sphinx.util.docutils import SphinxDirective

LEVELS = ("screen", "mid", "senior", "staff")
STATUSES = {
    "verified": "verified by a demo",
    "cited": "cited (paper or code)",
    "convention": "convention (a rule of thumb, no source)",
    "wrong": "wrong in the source (corrected here)",
}
TAG_LINE = re.compile(r"^\*\*(screen|mid|senior|staff) · (very-common|common|occasional) · "
                      r"(conceptual|scenario|design|debugging|coding)\*\*$")
RUNTIME_MARK = "RUNTIME::"


@dataclass
class Question:
    label: str
    title: str
    level: str
    frequency: str
    kind: str
    docname: str


@dataclass
class Number:
    status: str
    text: str
    label: str | None
    docname: str


@dataclass
class Chapter:
    docname: str
    title: str
    questions: list[Question] = field(default_factory=list)
    numbers: list[Number] = field(default_factory=list)


def parse_chapter(path: Path, docname: str) -> Chapter:
    lines = path.read_text(encoding="utf-8").splitlines()
    title = next((l[2:].strip() for l in lines if l.startswith("# ")), docname)
    ch = Chapter(docname, title)
    label, in_numbers, current = None, False, None
    for i, line in enumerate(lines):
        m = re.match(r"^\((q-[a-z0-9-]+)\)=$", line)
        if m and i + 1 < len(lines):
            label = m.group(1)
            heading = re.sub(r"^#+\s*", "", lines[i + 1]).strip()
            tag = next((l for l in lines[i + 2:i + 5] if l.strip()), "")
            t = TAG_LINE.match(tag)
            if t:
                ch.questions.append(Question(label, heading, *t.groups(), docname))
            continue
        if line.strip().startswith("**Numbers to know**"):
            in_numbers, current = True, None
            continue
        if in_numbers:
            b = re.match(r"^- \*\*(verified|cited|convention|wrong)\*\*[:\s·—-]*(.*)$", line)
            if b:
                current = Number(b.group(1), b.group(2).strip(), label, docname)
                ch.numbers.append(current)
            elif current is not None and line.startswith("  ") and line.strip():
                current.text += " " + line.strip()
            elif line.strip() == "" and current is None:
                continue
            elif line.strip() == "" or not line.startswith("- "):
                in_numbers = line.strip() == "" and current is None
                current = None
    return ch


def chapters(app) -> list[Chapter]:
    src = Path(app.srcdir)
    out = []
    for docname in sorted(app.env.found_docs):
        if docname.startswith("chapters/"):
            path = src / f"{docname}.md"
            if path.exists():
                out.append(parse_chapter(path, docname))
    return out


class _MystDirective(SphinxDirective):
    has_content = False
    option_spec = {"seed": int, "n": int, "level": lambda a: directives.choice(a, LEVELS),
                   "status": lambda a: directives.choice(a, tuple(STATUSES))}

    def markdown(self) -> str:  # pragma: no cover - overridden
        raise NotImplementedError

    def run(self):
        for ch in chapters(self.env.app):
            self.env.note_dependency(str(Path(self.env.srcdir) / f"{ch.docname}.md"))
        container = nodes.container()
        self.state.nested_parse(StringList(self.markdown().splitlines(), source=self.env.docname), 0, container)
        return container.children


class QuestionBank(_MystDirective):
    """``:level:`` one of screen, mid, senior, staff: that level's questions as a table."""

    def markdown(self) -> str:
        level = self.options["level"]
        chs = chapters(self.env.app)
        titles = {ch.docname: ch.title for ch in chs}
        at = [q for ch in chs for q in ch.questions if q.level == level]
        if not at:
            return "No questions at this level yet."
        md = ["| Question | Frequency | Kind | Chapter |", "|---|---|---|---|"]
        for q in at:
            md.append(f"| {{ref}}`{q.title.replace('|', '/')} <{q.label}>` | {q.frequency} | {q.kind} | "
                      f"{{doc}}`{titles[q.docname]} </{q.docname}>` |")
        return "\n".join(md)


class MockInterviews(_MystDirective):
    """``:level:``, ``:n:``, ``:seed:``: a fixed-seed sample of that level's questions to rehearse."""

    def markdown(self) -> str:
        level, seed, n = self.options["level"], self.options.get("seed", 0), self.options.get("n", 5)
        at = [q for ch in chapters(self.env.app) for q in ch.questions if q.level == level]
        if not at:
            return "No questions at this level yet."
        pick = random.Random(f"{seed}-{level}").sample(at, min(n, len(at)))
        return "\n".join(f"{i}. {{ref}}`{q.title} <{q.label}>`" for i, q in enumerate(pick, 1))


class NumbersSheet(_MystDirective):
    """``:status:`` one of verified, cited, convention, wrong: those numbers, linked to their question."""

    def markdown(self) -> str:
        status = self.options["status"]
        at = [(ch, n) for ch in chapters(self.env.app) for n in ch.numbers if n.status == status]
        if not at:
            return "None yet."
        md = ["| Number | Where |", "|---|---|"]
        for ch, n in at:
            where = f"{{ref}}`{ch.title} <{n.label}>`" if n.label else f"{{doc}}`{ch.title} </{ch.docname}>`"
            md.append(f"| {n.text.replace('|', '/')} | {where} |")
        return "\n".join(md)


class ChapterMap(_MystDirective):
    def markdown(self) -> str:
        md = ["| Chapter | Questions it answers | Run time |", "|---|---|---|"]
        for ch in chapters(self.env.app):
            qs = "<br>".join(f"{{ref}}`{q.title} <{q.label}>`" for q in ch.questions) or "the lab itself"
            md.append(f"| {{doc}}`{ch.title} </{ch.docname}>` | {qs} | {RUNTIME_MARK}{ch.docname} |")
        return "\n".join(md)


class FillRuntimes(SphinxPostTransform):
    """Replace RUNTIME::<docname> with the execution time myst-nb recorded for that notebook."""

    default_priority = 8

    def run(self, **kwargs):
        from myst_nb.sphinx_ import NbMetadataCollector
        data = NbMetadataCollector.get_doc_data(self.env)
        for text in list(self.document.findall(nodes.Text)):
            if RUNTIME_MARK in text:
                docname = str(text).split(RUNTIME_MARK, 1)[1].strip()
                exec_data = data.get(docname, {}).get("exec_data") or {}
                rt = exec_data.get("runtime")
                text.parent.replace(text, nodes.Text("–" if rt is None else f"{rt:.1f} s"))


def tidy_page_context(app, pagename, templatename, context, doctree):
    """Two theme quirks that print browser-console errors on every page of a Jupyter Book 1.x site:
    sphinx-thebe registers its config script twice ("THEBE_JS_URL has already been declared"),
    and pydata-sphinx-theme starts with an empty colour mode ("Got invalid theme mode")."""
    seen, unique = set(), []
    for js in context.get("script_files", []):
        # The same inline script arrives once with filename None and once with '' (Sphinx 7.4).
        attrs = tuple(sorted((k, str(v)) for k, v in (getattr(js, "attributes", {}) or {}).items()))
        key = (getattr(js, "filename", str(js)) or "", attrs)
        if key not in seen:
            seen.add(key)
            unique.append(js)
    if "script_files" in context:
        context["script_files"] = unique
    if not context.get("default_mode"):
        context["default_mode"] = "auto"


def setup(app):
    app.connect("html-page-context", tidy_page_context, priority=900)
    app.add_directive("question-bank", QuestionBank)
    app.add_directive("mock-interviews", MockInterviews)
    app.add_directive("numbers-sheet", NumbersSheet)
    app.add_directive("chapter-map", ChapterMap)
    app.add_post_transform(FillRuntimes)
    return {"version": "0.1", "parallel_read_safe": True, "parallel_write_safe": True}
