"""A local Sphinx extension: the book's study pages, generated from the chapter sources.

Everything a study page shows is read from the chapters (and from ``design_scenarios.md``,
the staff-level scenarios) at build time, so there is one source and nothing to drift.

Directives (each renders MyST that it writes itself, so links are ordinary {ref}s):

    ```{question-bank}   :level: screen     that level's questions, with an "I can answer this" toggle
    ```{question-bank}   :by: chapter       every question, chapter by chapter, with toggles
    ```{study-progress}                     per-chapter count of the questions ticked (localStorage)
    ```{mock-interview}  :seed: 3           one seeded mixed-level mock set, each question with a rubric
    ```{numbers-sheet}   :status: wrong     that status's "Numbers to know" bullets, linked
    ```{fact-checks}                        every Fact check in the book as a table (claim, where)
    ```{myths}                              every Fact check: claim, correction, evidence link
    ```{traps-index}                        every Traps bullet, linked back to its question
    ```{follow-up-drill}                    every Follow-up question, its answer in a dropdown
    ```{anki-deck}                          a link to the Anki deck the build writes
    ```{chapter-map}                        the chapters, the questions each answers, run time

The conventions it reads are the ones tests/test_chapters.py enforces (CONTRIBUTING.md):
a question is a ``(q-label)=`` line, a heading, then ``**level · frequency · kind**``,
then ``**Answer.**``, ``**Numbers to know**`` (bullets that start with ``**verified**``,
``**derived**``, ``**cited**``, ``**convention**`` or ``**wrong**``), ``**Follow-ups**``
(``{dropdown}``s) and ``**Traps**`` (bullets); a fact check is an
``{admonition} Fact check: "the claim"``. The build also writes the Anki deck
``_build/html/_downloads/ftlab-fine-tuning-interview.apkg`` (genanki), one note per question.
"""
from __future__ import annotations

import html
import random
import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path

LEVELS = ("screen", "mid", "senior", "staff")
STATUSES = {
    "verified": "measured and asserted by a demo in this book",
    "derived": "arithmetic you can redo in the room (the formula is given)",
    "cited": "cited (paper or code)",
    "convention": "convention (a rule of thumb, no source)",
    "wrong": "wrong in the source (corrected here)",
}
TAG_LINE = re.compile(r"^\*\*(screen|mid|senior|staff) · (very-common|common|occasional) · "
                      r"(conceptual|scenario|design|debugging|coding)\*\*$")
STATUS_BULLET = re.compile(r"^- \*\*(verified|derived|cited|convention|wrong)\*\*[:\s·—-]*(.*)$")
# Pages outside chapters/ whose questions join the bank (they have no notebook, no run time).
QUESTION_PAGES = ("design_scenarios",)
RUNTIME_MARK = "RUNTIME::"
DECK_NAME = "ftlab-fine-tuning-interview.apkg"
DECK_TITLE = "Fine-tuning interview (ftlab course)"
# Fixed ids: a reader who re-imports a newer deck gets their cards updated, not duplicated.
DECK_ID = 1_734_017_017
MODEL_ID = 1_734_017_018
# How many questions of each level a mock set draws (a real loop mixes levels).
MOCK_MIX = (("screen", 1), ("mid", 2), ("senior", 2), ("staff", 1))

FENCE = re.compile(r"^(`{3,}|:{3,})\s*(?:\{([\w:-]+)\})?\s*(.*)$")
HEADING = re.compile(r"^(#{1,6})\s+(.*\S)\s*$")
LABEL = re.compile(r"^\((q-[a-z0-9-]+)\)=$")
LITERAL = {"code-cell", "code-block", "code", "sourcecode", "math", "raw", "eval-rst"}


@dataclass
class Number:
    status: str
    text: str
    label: str | None
    docname: str


@dataclass
class Question:
    label: str
    title: str
    level: str
    frequency: str
    kind: str
    docname: str
    answer_points: list[str] = field(default_factory=list)   # sentences and bullets, in order
    numbers: list[Number] = field(default_factory=list)
    followups: list[str] = field(default_factory=list)
    followup_answers: list[str] = field(default_factory=list)   # the dropdowns' text, in order
    traps: list[str] = field(default_factory=list)


@dataclass
class FactCheck:
    index: int            # 1-based, in page order; the admonition gets the id fact-check-<index>
    claim: str
    body: str
    docname: str
    label: str | None     # the question it sits under, if any

    @property
    def target(self) -> str:
        return fact_label(self.docname, self.index)


@dataclass
class Chapter:
    docname: str
    title: str
    questions: list[Question] = field(default_factory=list)
    numbers: list[Number] = field(default_factory=list)
    facts: list[FactCheck] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def is_chapter(self) -> bool:
        return self.docname.startswith("chapters/")


def fact_label(docname: str, index: int) -> str:
    return f"fact-{docname.replace('/', '-').lower()}-{index}"


def _claim_of(title: str, body: str) -> str:
    """The claim as commonly stated: the admonition's title after "Fact check:" when it quotes
    the claim; else the first quotation in its body (after the title's topic, if any); else
    the title, or the body's first sentence."""
    topic = re.sub(r"^Fact check\s*:?\s*", "", title).strip()
    if re.search(r"[\"“]", topic):
        return topic
    quoted = re.search(r"[\"“]([^\"”]{8,})[\"”]", body)
    if quoted:
        claim = " ".join(f"\"{quoted.group(1)}\"".split())
        return f"{topic[:1].upper() + topic[1:]}: {claim}" if topic else claim
    return topic or (sentences(" ".join(body.split()))[0] if body else "?")


DOC_ROLE = re.compile(r"\{doc\}`(?:([^`<]*?)\s*<([^>`]+)>|([^`<>]+))`")


def absolute_docs(line: str, docname: str) -> str:
    """Make relative {doc} targets absolute, so text copied onto another page still links."""
    folder = docname.rsplit("/", 1)[0] + "/" if "/" in docname else ""

    def fix(m):
        title, target = (m.group(1), m.group(2)) if m.group(2) else (None, m.group(3))
        if target.startswith("/"):
            return m.group(0)
        target = "/" + folder + target
        return f"{{doc}}`{title} <{target}>`" if title else f"{{doc}}`{target}`"
    return DOC_ROLE.sub(fix, line)


def parse_chapter(path: Path, docname: str) -> Chapter:
    """Read one page: its questions (with Answer, Numbers to know, Follow-ups, Traps), the
    numbers outside questions, and its Fact check admonitions. Fence-aware: nothing inside a
    code cell counts, and a heading ends the question it closes."""
    lines = [absolute_docs(ln, docname) for ln in path.read_text(encoding="utf-8").splitlines()]
    ch = Chapter(docname, docname)
    stack: list[tuple[str, str]] = []          # open fences: (marker, directive)
    fact: dict | None = None                   # the Fact check being read
    follow: dict | None = None                 # the Follow-up dropdown being read
    q: Question | None = None
    q_level = 0
    label: str | None = None                   # the question numbers belong to
    mode: str | None = None                    # answer / numbers / followups / traps
    item: list[str] | None = None              # the bullet being read
    titled = False
    para: list[str] = []                       # the Answer paragraph being read
    skip = -1                                  # the heading line right after a question label

    def end_item():
        nonlocal item
        if item is not None:
            text = " ".join(s.strip() for s in item).strip()
            if mode == "numbers":
                b = STATUS_BULLET.match("- " + text)
                if b:
                    n = Number(b.group(1), b.group(2).strip(), label, docname)
                    ch.numbers.append(n)
                    if q is not None:
                        q.numbers.append(n)
            elif mode == "traps" and q is not None and text:
                q.traps.append(text)
            elif mode == "answer" and q is not None and text:
                q.answer_points.append(text)
        item = None

    def end_mode():
        nonlocal mode, para
        end_item()
        if mode == "answer" and para and q is not None:
            q.answer_points += sentences(" ".join(para))
        para = []
        mode = None

    for i, line in enumerate(lines):
        stripped = line.strip()
        f = FENCE.match(stripped)
        # ------------------------------------------------------------------ fences
        if stack:
            marker, directive = stack[-1]
            closing = f and not f.group(2) and not f.group(3) and f.group(1)[0] == marker[0] \
                and len(f.group(1)) >= len(marker)
            if closing:
                stack.pop()
                if fact is not None and len(stack) == fact["depth"]:
                    body = "\n".join(l for l in fact["lines"] if not re.match(r"^:\w+:", l)).strip()
                    ch.facts.append(FactCheck(len(ch.facts) + 1, _claim_of(fact["title"], body), body,
                                              docname, fact["label"]))
                    fact = None
                if follow is not None and len(stack) == follow["depth"]:
                    body = "\n".join(l for l in follow["lines"] if not re.match(r"^:[\w-]+:", l)).strip()
                    follow["q"].followup_answers.append(body)
                    follow = None
                continue
            if fact is not None:
                fact["lines"].append(line)
            if follow is not None:
                follow["lines"].append(line)
            if directive in LITERAL or not directive:
                continue
        if f and (f.group(2) or (f.group(1)[0] == "`" and not stack)):
            directive, title = f.group(2) or "", f.group(3).strip()
            if mode in ("numbers", "traps", "answer", "followups") and (directive != "dropdown"
                                                                         or mode != "followups"):
                end_mode()
            if directive == "admonition" and title.startswith("Fact check") and fact is None:
                fact = {"title": title, "lines": [], "label": q.label if q else label,
                        "depth": len(stack)}
            elif directive == "dropdown" and q is not None and not stack:
                is_follow = title.lower().startswith("follow-up")
                if mode == "followups" or is_follow:
                    t = re.sub(r"^follow-up\s*:?\s*", "", title, flags=re.I).strip()
                    q.followups.append(t[:1].upper() + t[1:])
                    follow = {"q": q, "lines": [], "depth": len(stack)}
            stack.append((f.group(1), directive))
            continue
        if stack:
            continue                             # inside an admonition, dropdown, ...
        # ------------------------------------------------------------------ top level
        h = HEADING.match(line)
        if h and i == skip:
            continue
        if h:
            end_mode()
            n = len(h.group(1))
            if n == 1 and not titled:
                ch.title, titled = h.group(2), True
            if q is not None and n <= q_level:
                q = None
            if n <= 2:
                label = None                     # numbers after a new section are not the question's
            continue
        m = LABEL.match(line)
        if m and i + 1 < len(lines):
            end_mode()
            heading = HEADING.match(lines[i + 1])
            tag = next((l for l in lines[i + 2:i + 5] if l.strip()), "")
            t = TAG_LINE.match(tag)
            if heading and t:
                # Study pages put the title inside {ref}`title <label>`, which cannot hold
                # backticks: "How do you choose `target_modules`?" is kept as plain text.
                title = heading.group(2).replace("`", "")
                q = Question(m.group(1), title, *t.groups(), docname)
                q_level = len(heading.group(1))
                skip = i + 1
                ch.questions.append(q)
                label = q.label
            else:
                ch.warnings.append(f"{docname}:{i + 1}: {m.group(1)} needs a heading and a tag line")
            continue
        a = re.match(r"^\*\*Answer\.?\*\*\s*(.*)$", stripped)
        if a and q is not None:
            end_mode()
            mode = "answer"
            para = [a.group(1)] if a.group(1) else []
            continue
        if re.match(r"^\*\*Numbers to know[.:]?\*\*", stripped):
            end_mode()
            mode = "numbers"
            continue
        if re.match(r"^\*\*Follow-ups[.:]?\*\*", stripped):
            end_mode()
            mode = "followups"
            continue
        if re.match(r"^\*\*Traps[.:]?\*\*", stripped):
            end_mode()
            mode = "traps"
            continue
        if mode == "answer":
            # Paragraphs (split into sentences) and bullets (one point each), up to the next part.
            if line.startswith("- ") or not stripped:
                end_item()
                if para:
                    q.answer_points += sentences(" ".join(para))
                    para = []
                item = [line[2:]] if stripped else None
            elif line.startswith("  ") and item is not None:
                item.append(stripped)
            else:
                end_item()
                para.append(stripped)
            continue
        if mode in ("numbers", "traps"):
            if line.startswith("- "):
                end_item()
                item = [line[2:]]
            elif line.startswith("  ") and stripped and item is not None:
                item.append(stripped)
            elif not stripped:
                end_item()                       # a blank line between bullets keeps the list
            else:
                end_mode()
        if mode is None and STATUS_BULLET.match(line):
            ch.warnings.append(f"{docname}:{i + 1}: a status bullet outside a **Numbers to know** list "
                               "is left off the numbers sheet")
    end_mode()
    return ch


def chapters(app) -> list[Chapter]:
    """Every chapter page, then the question pages of the Study part, parsed (cached per build)."""
    env = app.env
    cache = getattr(env, "_ftlab_pages", None)
    if cache is not None:
        return cache
    src = Path(app.srcdir)
    out = []
    docs = [d for d in sorted(env.found_docs) if d.startswith("chapters/")]
    docs += [d for d in QUESTION_PAGES if d in env.found_docs]
    for docname in docs:
        path = src / f"{docname}.md"
        if path.exists():
            out.append(parse_chapter(path, docname))
    env._ftlab_pages = out
    return out


def all_pages(root: Path) -> list[Chapter]:
    """The same pages, without Sphinx (for the tests): chapters/*.md, then the question pages."""
    out = [parse_chapter(p, f"chapters/{p.stem}") for p in sorted((root / "chapters").glob("*.md"))]
    out += [parse_chapter(root / f"{d}.md", d) for d in QUESTION_PAGES if (root / f"{d}.md").exists()]
    return out


# ---------------------------------------------------------------------------- text helpers

_ABBREV = re.compile(r"(?:\b(?:e\.g|i\.e|et al|vs|cf|Fig|Eq|Sec|approx|resp|No)|\b[A-Z]\.[A-Z])\.$")


def sentences(text: str) -> list[str]:
    """Split a paragraph into sentences, never inside `code`, a {role}`...` or (parentheses)."""
    out, start, depth, ticks = [], 0, 0, 0
    for i, c in enumerate(text):
        if c == "`":
            ticks ^= 1
        elif ticks:
            continue
        elif c == "(":
            depth += 1
        elif c == ")":
            depth = max(0, depth - 1)
        elif c in ".!?" and depth == 0 and i + 1 < len(text) and text[i + 1] == " ":
            nxt = text[i + 2:i + 3]
            if nxt and (nxt.isupper() or nxt.isdigit() or nxt in "*\"“({`$") \
                    and not _ABBREV.search(text[start:i + 1]):
                out.append(text[start:i + 1].strip())
                start = i + 2
    tail = text[start:].strip()
    if tail:
        out.append(tail)
    return out


def cell(text: str) -> str:
    """Text safe in a Markdown table cell (a | would start a new column)."""
    return text.replace("\\|", "|").replace("|", "\\|")


def no_currency_math(text: str) -> str:
    """Escape a $ before a digit ($2.50, $50k) outside code: with dollarmath on, two prices in
    one paragraph or table row would otherwise render as a formula."""
    parts = re.split(r"(`[^`]*`)", text)
    return "".join(p if p.startswith("`") else re.sub(r"(?<!\\)\$(?=\d)", r"\\$", p) for p in parts)


def plain(text: str) -> str:
    """MyST inline markup to plain text (roles lose their target, emphasis its stars)."""
    text = re.sub(r"\{[\w:-]+\}`([^`<]*?)\s*(?:<[^`>]*>)?`", r"\1", text)
    text = re.sub(r"\[([^\]]+)\]\([^)]*\)", r"\1", text)
    return text.replace("\\$", "$")


def to_html(text: str) -> str:
    """MyST inline markup to the small HTML an Anki card needs."""
    parts = re.split(r"(`[^`]*`)", plain(text))
    out = []
    for p in parts:
        if p.startswith("`") and p.endswith("`") and len(p) > 1:
            out.append(f"<code>{html.escape(p[1:-1])}</code>")
        else:
            p = html.escape(p, quote=False)
            p = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", p)
            p = re.sub(r"(?<![\w*])\*(?!\s)(.+?)(?<!\s)\*(?![\w*])", r"<i>\1</i>", p)
            out.append(p)
    return "".join(out)


# ---------------------------------------------------------------------------- rubrics

def rubric(q: Question) -> dict:
    """What a strong answer to `q` must say, what fails it, and what comes next, all taken from
    the question's own Answer, Numbers to know, Traps and Follow-ups (one source, no copy).

    points: the Answer's first points (sentences, or bullets), then one number to quote, three
    to five in all; red_flags: the first three Traps; follow_up: the first Follow-up."""
    quotable = [n for n in q.numbers if n.status in ("cited", "derived", "convention")] or \
               [n for n in q.numbers if n.status != "wrong"]
    quotes = [f"A number to quote ({n.status}): {sentences(n.text)[0]}" for n in quotable]
    said = q.answer_points[:4]
    points = said + quotes[:1]
    for extra in q.answer_points[4:] + quotes[1:]:
        if len(points) >= 3:
            break
        points.append(extra)
    return {"points": points[:5], "red_flags": q.traps[:3],
            "follow_up": q.followups[0] if q.followups else None}


def mock_set(pages: list[Chapter], seed: int) -> list[Question]:
    """One mock interview: MOCK_MIX questions per level, drawn with `seed`, from as many
    different chapters as there are (a real loop mixes levels and topics)."""
    rng = random.Random(f"ftlab-mock-{seed}")
    pool = {lv: [q for ch in pages for q in ch.questions if q.level == lv] for lv in LEVELS}
    picked: list[Question] = []
    for level, n in MOCK_MIX:
        cands = pool[level][:]
        rng.shuffle(cands)
        used = {p.docname for p in picked}
        cands.sort(key=lambda q: q.docname in used)   # stable: unused chapters first
        picked += cands[:n]
    return picked


# ---------------------------------------------------------------------------- the Anki deck

def build_deck(pages: list[Chapter], path: Path, base_url: str = "") -> int:
    """Write the .apkg to `path`: one note per question, front the question, back the answer
    outline and its numbers to know, tagged with its chapter and level. Returns the count."""
    import genanki

    model = genanki.Model(
        MODEL_ID, "ftlab interview question",
        fields=[{"name": "Question"}, {"name": "Answer"}, {"name": "Numbers"}, {"name": "Source"}],
        templates=[{
            "name": "Answer it aloud",
            "qfmt": "<div class=q>{{Question}}</div>",
            "afmt": "{{FrontSide}}<hr id=answer><div class=a>{{Answer}}</div>"
                    "{{#Numbers}}<div class=n><b>Numbers to know</b>{{Numbers}}</div>{{/Numbers}}"
                    "<div class=s>{{Source}}</div>",
        }],
        css=".card{font-family:sans-serif;font-size:18px;text-align:left;max-width:46em;margin:auto}"
            ".q{font-weight:bold}.s{font-size:13px;color:#666;margin-top:1em}",
    )
    deck = genanki.Deck(DECK_ID, DECK_TITLE)
    count = 0
    for ch in pages:
        stem = ch.docname.split("/")[-1]
        for q in ch.questions:
            outline = "<ul>" + "".join(f"<li>{to_html(s)}</li>" for s in q.answer_points) + "</ul>"
            numbers = ("<ul>" + "".join(f"<li><i>{n.status}</i>: {to_html(n.text)}</li>" for n in q.numbers)
                       + "</ul>") if q.numbers else ""
            where = f"{html.escape(plain(ch.title))} · {q.level} · {q.kind}"
            if base_url:
                where = f'<a href="{base_url.rstrip("/")}/{ch.docname}.html#{q.label}">{where}</a>'
            deck.add_note(genanki.Note(
                model=model, fields=[to_html(q.title), outline, numbers, where],
                guid=genanki.guid_for("ftlab", q.label),
                tags=[f"chapter::{stem}", f"level::{q.level}"]))
            count += 1
    path.parent.mkdir(parents=True, exist_ok=True)
    genanki.Package(deck).write_to_file(str(path))
    return count


# ---------------------------------------------------------------------------- Sphinx side
# (imported lazily, so that the tests can use the parser and the deck without Sphinx)

try:
    from docutils import nodes
    from docutils.parsers.rst import directives
    from docutils.statemachine import StringList
    from sphinx.transforms import SphinxTransform
    from sphinx.transforms.post_transforms import SphinxPostTransform
    from sphinx.util import logging
    from sphinx.util.docutils import SphinxDirective
except ImportError:  # pragma: no cover - the parser alone
    SphinxDirective = SphinxTransform = SphinxPostTransform = object
    directives = None

if directives is not None:
    logger = logging.getLogger(__name__)

    def _toggle(q: Question) -> str:
        return (f'<input type="checkbox" class="ftlab-known" data-q="{q.label}" '
                f'data-chapter="{q.docname}" title="I can answer this" aria-label="I can answer this">')

    class _MystDirective(SphinxDirective):
        has_content = False
        option_spec = {"seed": int, "n": int,
                       "level": lambda a: directives.choice(a, LEVELS),
                       "status": lambda a: directives.choice(a, tuple(STATUSES)),
                       "by": lambda a: directives.choice(a, ("chapter", "level"))}

        def markdown(self) -> str:  # pragma: no cover - overridden
            raise NotImplementedError

        def pages(self) -> list[Chapter]:
            return chapters(self.env.app)

        def run(self):
            for ch in self.pages():
                self.env.note_dependency(str(Path(self.env.srcdir) / f"{ch.docname}.md"))
            container = nodes.container()
            self.state.nested_parse(StringList(no_currency_math(self.markdown()).splitlines(),
                                               source=self.env.docname),
                                    0, container)
            return container.children

    class QuestionBank(_MystDirective):
        """``:level:`` one of screen, mid, senior, staff: that level's questions as a table;
        ``:by: chapter``: every question, one table per page. Each row has a toggle."""

        def markdown(self) -> str:
            pages = self.pages()
            titles = {ch.docname: ch.title for ch in pages}
            if self.options.get("by") == "chapter":
                md = []
                for ch in pages:
                    if not ch.questions:
                        continue
                    md += [f"**{{doc}}`{ch.title} </{ch.docname}>`** · "
                           f'<span class="ftlab-count" data-chapter="{ch.docname}" '
                           f'data-total="{len(ch.questions)}">0 / {len(ch.questions)}</span>', "",
                           "| Can answer | Question | Level | Kind |", "|---|---|---|---|"]
                    md += [f"| {_toggle(q)} | {{ref}}`{cell(q.title)} <{q.label}>` | {q.level} | {q.kind} |"
                           for q in ch.questions]
                    md.append("")
                return "\n".join(md)
            level = self.options["level"]
            at = [q for ch in pages for q in ch.questions if q.level == level]
            if not at:
                return "No questions at this level yet."
            md = ["| Can answer | Question | Frequency | Kind | Chapter |", "|---|---|---|---|---|"]
            for q in at:
                md.append(f"| {_toggle(q)} | {{ref}}`{cell(q.title)} <{q.label}>` | {q.frequency} | "
                          f"{q.kind} | {{doc}}`{cell(titles[q.docname])} </{q.docname}>` |")
            return "\n".join(md)

    class StudyProgress(_MystDirective):
        """How many questions of each page the reader has ticked (filled in by ftlab_study.js)."""

        def markdown(self) -> str:
            pages = [ch for ch in self.pages() if ch.questions]
            total = sum(len(ch.questions) for ch in pages)
            md = ["| Page | Questions | You can answer |", "|---|---|---|"]
            for ch in pages:
                n = len(ch.questions)
                md.append(f"| {{doc}}`{cell(ch.title)} </{ch.docname}>` | {n} | "
                          f'<span class="ftlab-count" data-chapter="{ch.docname}" data-total="{n}">0 / {n}</span> |')
            md.append(f'| **All** | **{total}** | <span class="ftlab-count" data-chapter="*" '
                      f'data-total="{total}">0 / {total}</span> |')
            return "\n".join(md)

    class MockInterview(_MystDirective):
        """``:seed:``: one mock set (MOCK_MIX), each question with its rubric in a dropdown."""

        def markdown(self) -> str:
            pages = self.pages()
            titles = {ch.docname: ch.title for ch in pages}
            picked = mock_set(pages, self.options.get("seed", 1))
            md = []
            for i, q in enumerate(picked, 1):
                r = rubric(q)
                md += [f"{i}. **{{ref}}`{q.title} <{q.label}>`** ({q.level} · {q.kind} · "
                       f"{{doc}}`{titles[q.docname]} </{q.docname}>`)", "",
                       f"   ::::{{dropdown}} Rubric for question {i}", "   :class-container: ftlab-rubric", "",
                       "   **A strong answer makes these points**", ""]
                md += [f"   - {p}" for p in r["points"]]
                md += ["", "   **Red flags** (any one of these fails the answer)", ""]
                md += [f"   - {t}" for t in r["red_flags"]] or ["   - (none listed)"]
                if r["follow_up"]:
                    md += ["", f"   **The interviewer's next question:** {r['follow_up']}"]
                md += ["   ::::", ""]
            return "\n".join(md)

    class NumbersSheet(_MystDirective):
        """``:status:``: those numbers, linked to their question."""

        def markdown(self) -> str:
            status = self.options["status"]
            at = [(ch, n) for ch in self.pages() for n in ch.numbers if n.status == status]
            if not at:
                return "None yet."
            md = ["| Number | Where |", "|---|---|"]
            for ch, n in at:
                where = (f"{{ref}}`{cell(ch.title)} <{n.label}>`" if n.label
                         else f"{{doc}}`{cell(ch.title)} </{ch.docname}>`")
                md.append(f"| {cell(n.text)} | {where} |")
            return "\n".join(md)

    class FactChecks(_MystDirective):
        """Every Fact check of the book as one table: the claim, where it is corrected."""

        def markdown(self) -> str:
            facts = [f for ch in self.pages() for f in ch.facts]
            if not facts:
                return "None yet."
            titles = {ch.docname: ch.title for ch in self.pages()}
            md = ["| The claim as commonly stated | Corrected in | Evidence |", "|---|---|---|"]
            for f in facts:
                where = (f"{{ref}}`{cell(titles[f.docname])} <{f.label}>`" if f.label
                         else f"{{doc}}`{cell(titles[f.docname])} </{f.docname}>`")
                md.append(f"| {cell(f.claim)} | {where} | {{ref}}`the fact check <{f.target}>` |")
            return "\n".join(md)

    class Myths(_MystDirective):
        """Every Fact check: the claim as commonly stated, the correction, the evidence."""

        def markdown(self) -> str:
            md = []
            asked = {q.label: q.title for ch in self.pages() for q in ch.questions}
            for ch in self.pages():
                if not ch.facts:
                    continue
                md += [f"**{{doc}}`{ch.title} </{ch.docname}>`**", ""]
                for f in ch.facts:
                    md += [f"::::{{admonition}} Myth: {f.claim}", ":class: ftlab-myth", "",
                           *(["**The correction.**", "", f.body] if re.match(r"^(- |\d+\. |[`:]{3})", f.body)
                             else ["**The correction.** " + f.body]), "",
                           f"**The evidence:** {{ref}}`the fact check and its demo <{f.target}>`"
                           + (f" · under the question {{ref}}`{asked[f.label]} <{f.label}>`" if f.label else ""),
                           "::::", ""]
            return "\n".join(md) or "None yet."

    class TrapsIndex(_MystDirective):
        """Every Traps bullet, grouped by page, each linked back to its question."""

        def markdown(self) -> str:
            md = []
            for ch in self.pages():
                qs = [q for q in ch.questions if q.traps]
                if not qs:
                    continue
                md += [f"**{{doc}}`{ch.title} </{ch.docname}>`**", ""]
                for q in qs:
                    md.append(f"- {{ref}}`{q.title} <{q.label}>` ({q.level})")
                    md += [f"  - {t}" for t in q.traps]
                md.append("")
            return "\n".join(md) or "None yet."

    class FollowUpDrill(_MystDirective):
        """Every Follow-up of every question, its answer hidden in a dropdown."""

        def markdown(self) -> str:
            md = []
            for ch in self.pages():
                qs = [q for q in ch.questions if q.followups]
                if not qs:
                    continue
                md += [f"**{{doc}}`{ch.title} </{ch.docname}>`**", ""]
                for q in qs:
                    md += [f"{{ref}}`{q.title} <{q.label}>` ({q.level})", ""]
                    for title, body in zip(q.followups, q.followup_answers):
                        md += [f":::::{{dropdown}} {title}", body, ":::::", ""]
            return "\n".join(md) or "None yet."

    class AnkiDeck(_MystDirective):
        """A link to the deck the build writes to _downloads/ (relative to this page)."""

        def markdown(self) -> str:
            n = sum(len(ch.questions) for ch in self.pages())
            up = "../" * self.env.docname.count("/")
            return (f'<a class="ftlab-deck" href="{up}_downloads/{DECK_NAME}" download>'
                    f"Download the Anki deck</a> ({n} cards, one per question; re-importing a newer "
                    "deck updates your cards and keeps their review history).")

    class ChapterMap(_MystDirective):
        def markdown(self) -> str:
            md = ["| Chapter | Questions it answers | Run time |", "|---|---|---|"]
            for ch in self.pages():
                if not ch.is_chapter:
                    continue
                qs = "<br>".join(f"{{ref}}`{cell(q.title)} <{q.label}>`" for q in ch.questions) or "the lab itself"
                md.append(f"| {{doc}}`{cell(ch.title)} </{ch.docname}>` | {qs} | {RUNTIME_MARK}{ch.docname} |")
            return "\n".join(md)

    class FactCheckTargets(SphinxTransform):
        """Give every Fact check admonition of a question page an id (fact-check-<n>) and a
        label (fact-<docname>-<n>), so the myths page and the numbers sheet link to it."""

        default_priority = 700

        def apply(self, **kwargs):
            docname = self.env.docname
            if not (docname.startswith("chapters/") or docname in QUESTION_PAGES):
                return
            std = self.env.get_domain("std")
            i = 0
            for node in self.document.findall(nodes.admonition):
                title = node.next_node(nodes.title)
                if title is None or not title.astext().startswith("Fact check"):
                    continue
                i += 1
                anchor = f"fact-check-{i}"
                node["ids"].append(anchor)
                std.anonlabels[fact_label(docname, i)] = (docname, anchor)
                std.labels[fact_label(docname, i)] = (docname, anchor, title.astext())

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


def forget_pages(app, env, docnames, *args):
    """Reparse the pages on every build (env-before-read-docs) and warn on what the parser skips."""
    env._ftlab_pages = None
    if directives is not None:
        for ch in chapters(app):
            for w in ch.warnings:
                logger.warning(w)


def drop_cache(app, env):
    """Keep the parsed pages out of the pickled environment (they are reparsed on demand)."""
    env._ftlab_pages = None
    return []


def write_deck(app, exc):
    if exc is not None or app.builder.format != "html":
        return
    path = Path(app.outdir) / "_downloads" / DECK_NAME
    base = str((app.config.html_baseurl or "")).rstrip("/")
    n = build_deck(chapters(app), path, base)
    logger.info(f"ftlab: wrote the Anki deck ({n} notes) to {path}")


def add_static(app, config):
    config.html_static_path.append(str(Path(__file__).parent / "static"))


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
    app.connect("config-inited", add_static)
    app.connect("env-before-read-docs", forget_pages)
    app.connect("html-page-context", tidy_page_context, priority=900)
    app.connect("env-updated", drop_cache)
    app.connect("build-finished", write_deck)
    app.add_js_file("ftlab_study.js")
    app.add_css_file("ftlab_study.css")
    app.add_transform(FactCheckTargets)
    for name, cls in (("question-bank", QuestionBank), ("study-progress", StudyProgress),
                      ("mock-interview", MockInterview), ("numbers-sheet", NumbersSheet),
                      ("fact-checks", FactChecks), ("myths", Myths), ("traps-index", TrapsIndex),
                      ("follow-up-drill", FollowUpDrill),
                      ("anki-deck", AnkiDeck), ("chapter-map", ChapterMap)):
        app.add_directive(name, cls)
    app.add_post_transform(FillRuntimes)
    return {"version": "0.2", "parallel_read_safe": True, "parallel_write_safe": True}
