"""Chapter conventions the generated pages rely on (see CONTRIBUTING.md)."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "chapters").glob("*.md"))
# Study pages written in the chapters' question format (their questions join the bank).
QUESTION_PAGES = [ROOT / "design_scenarios.md"]
TAG_LINE = re.compile(r"^\*\*(screen|mid|senior|staff) · (very-common|common|occasional) · "
                      r"(conceptual|scenario|design|debugging|coding)\*\*$")


def _questions(md: Path):
    """(label, heading, tag line) for every question heading, i.e. one preceded by a (q-...)= label."""
    lines = md.read_text(encoding="utf-8").splitlines()
    out = []
    for i, line in enumerate(lines):
        m = re.match(r"^\((q-[a-z0-9-]+)\)=$", line)
        if m:
            heading = lines[i + 1] if i + 1 < len(lines) else ""
            tag = next((l for l in lines[i + 2:i + 5] if l.strip()), "")
            out.append((m.group(1), heading, tag, md.name))
    return out


def test_question_labels_are_unique_and_headed():
    qs = [q for md in CHAPTERS + QUESTION_PAGES for q in _questions(md)]
    labels = [q[0] for q in qs]
    assert len(labels) == len(set(labels)), "duplicate question labels"
    for label, heading, tag, name in qs:
        assert re.match(r"^#{2,4} \S", heading), f"{name}: label {label} must be followed by a heading"
        assert TAG_LINE.match(tag), f"{name}: {heading!r} needs a tag line like **mid · common · conceptual**, got {tag!r}"


def test_chapters_start_with_title_and_end_with_quiz():
    for md in CHAPTERS:
        text = md.read_text(encoding="utf-8")
        assert re.search(r"^# \d\d[a-z]? · ", text, re.M), f"{md.name}: title must read '# NN · Title'"
        assert "## Exercises" in text and "## Self-quiz" in text, f"{md.name}: needs Exercises and Self-quiz"
        assert text.count("{dropdown}") >= 6, f"{md.name}: the self-quiz needs at least 6 hidden answers"
        stubs = re.findall(r":tags: \[raises-exception\]", text)
        solutions = re.findall(r"```\{solution-start\}", text)
        assert len(solutions) >= len(stubs) >= 1 or md.stem.startswith("00"), f"{md.name}: exercises need solutions"


def test_numbers_to_know_carry_a_status():
    """The numbers sheet is generated from these bullets; each must say how far to trust it.
    A blank line between bullets does not end the list (the generator reads on too)."""
    status = re.compile(r"^- \*\*(verified|derived|cited|convention|wrong)\*\*: \S")
    for md in CHAPTERS + QUESTION_PAGES:
        lines = md.read_text(encoding="utf-8").splitlines()
        for i, line in enumerate(lines):
            if not line.strip().startswith("**Numbers to know**"):
                continue
            j = i + 1
            while j < len(lines) and not lines[j].strip():
                j += 1
            assert j < len(lines) and lines[j].startswith("- "), f"{md.name}:{i + 1}: Numbers to know needs a list"
            while j < len(lines) and (lines[j].startswith("- ") or lines[j].startswith("  ") or not lines[j].strip()):
                if lines[j].startswith("- "):
                    assert status.match(lines[j]), f"{md.name}:{j + 1}: start with **verified**/**derived**/" \
                                                   f"**cited**/**convention**/**wrong** and a colon: {lines[j][:60]!r}"
                j += 1


def test_status_bullets_sit_in_a_numbers_list():
    """A status bullet outside a **Numbers to know** list never reaches the numbers sheet."""
    status = re.compile(r"^- \*\*(verified|derived|cited|convention|wrong)\*\*")
    for md in CHAPTERS + QUESTION_PAGES:
        lines = md.read_text(encoding="utf-8").splitlines()
        in_list = False
        for j, line in enumerate(lines):
            if line.strip().startswith("**Numbers to know**"):
                in_list = True
            elif line.strip() and not (line.startswith("- ") or line.startswith("  ")):
                in_list = False
            assert in_list or not status.match(line), f"{md.name}:{j + 1}: status bullet outside Numbers to know"


def test_questions_have_the_four_parts():
    """Answer, Numbers to know, Follow-ups and Traps: the mock rubrics and the deck read them."""
    for md in CHAPTERS + QUESTION_PAGES:
        text = md.read_text(encoding="utf-8")
        for label, heading, _, name in _questions(md):
            start = text.index(f"({label})=")
            nxt = re.search(r"^\(q-[a-z0-9-]+\)=$|^## (Exercises|Self-quiz)", text[start + 1:], re.M)
            body = text[start: start + 1 + nxt.start()] if nxt else text[start:]
            assert re.search(r"^\*\*Answer\.?\*\*", body, re.M), f"{name}: {label} has no **Answer**"
            assert "**Numbers to know**" in body, f"{name}: {label} has no **Numbers to know**"


# `from ftlab[.x] import a, b as c` (also parenthesized over several lines) and
# `import ftlab[.x] [as y]`: how a chapter names what it passes to ftlab.show.
FROM_IMPORT = re.compile(r"^from (ftlab(?:\.\w+)*) import (\([^)]*\)|[^\n]+)", re.M)
PLAIN_IMPORT = re.compile(r"^import (ftlab(?:\.\w+)*)(?: as (\w+))?[ \t]*$", re.M)
SHOWN = re.compile(r"ftlab\.show\(\s*([A-Za-z_][\w.]*)\s*\)")
PAGE_WIDTH = 88


def _ftlab_aliases(text: str) -> dict[str, str]:
    """{name a chapter uses: the dotted ftlab path it stands for}."""
    aliases = {}
    for mod, names in FROM_IMPORT.findall(text):
        for item in names.strip("()").split(","):
            item = item.split("#")[0].strip()
            if item:
                name, _, alias = item.partition(" as ")
                aliases[(alias or name).strip()] = f"{mod}.{name.strip()}"
    for mod, alias in PLAIN_IMPORT.findall(text):
        aliases[alias or mod.split(".")[0]] = mod if alias else mod.split(".")[0]
    return aliases


def _resolve(path: str):
    """The object at a dotted path such as ``ftlab.quant.gptq_quantize``."""
    import importlib

    parts = path.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for part in parts[i:]:
            obj = getattr(obj, part)
        return obj
    raise ImportError(path)


def test_shown_code_fits_the_page():
    """Every ftlab function or class a chapter shows with ``ftlab.show`` is rendered as a
    code block, so none of its source lines may be wider than the page (88 characters)."""
    import inspect

    checked, too_long = set(), []
    for md in CHAPTERS:
        text = md.read_text(encoding="utf-8")
        aliases = _ftlab_aliases(text)
        for shown in SHOWN.findall(text):
            head, _, rest = shown.partition(".")
            if head not in aliases:
                continue  # a function the chapter defines itself
            path = aliases[head] + ("." + rest if rest else "")
            obj = inspect.unwrap(_resolve(path))
            if path in checked:
                continue
            checked.add(path)
            lines, start = inspect.getsourcelines(obj)
            where = Path(inspect.getsourcefile(obj)).relative_to(ROOT)
            for i, line in enumerate(lines):
                width = len(line.rstrip("\n"))
                if width > PAGE_WIDTH:
                    too_long.append(f"{md.name} shows {shown}: {where}:{start + i} "
                                    f"is {width} characters")
    assert len(checked) >= 20, f"only {len(checked)} shown objects found: {sorted(checked)}"
    assert not too_long, "shown code wider than the page:\n" + "\n".join(too_long)
