"""The generated study pages (question bank, mock interviews, myths, traps, numbers sheet)
and the Anki deck, checked without a Sphinx build: the generator in _ext/ftlab_book.py reads
every question, fact check and number the chapters hold, and the deck has one note per
question with ids that do not change between builds."""
import re
import sqlite3
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "_ext"))
import ftlab_book as fb  # noqa: E402

SOURCES = sorted((ROOT / "chapters").glob("*.md")) + [ROOT / f"{d}.md" for d in fb.QUESTION_PAGES]
# Questions allowed to lack a Follow-ups or Traps part (their rubric then has no red flag or
# no next question). Keep it empty: q-prepare-sft-dataset is fixed on the chapter-03 branch.
KNOWN_GAPS = {"q-prepare-sft-dataset"}


@pytest.fixture(scope="module")
def pages():
    return fb.all_pages(ROOT)


@pytest.fixture(scope="module")
def questions(pages):
    return [q for ch in pages for q in ch.questions]


def test_every_labelled_question_is_read(questions):
    labels = [m for path in SOURCES for m in re.findall(r"^\((q-[a-z0-9-]+)\)=$",
                                                       path.read_text(encoding="utf-8"), re.M)]
    assert sorted(q.label for q in questions) == sorted(labels)


def test_the_parser_reports_no_problem(pages):
    warnings = [w for ch in pages for w in ch.warnings]
    assert not warnings, "\n".join(warnings)


def test_at_least_five_questions_at_every_level(questions):
    for level in fb.LEVELS:
        n = sum(q.level == level for q in questions)
        assert n >= 5, f"only {n} {level}-level questions"


def test_every_question_has_a_rubric(questions):
    for q in questions:
        r = fb.rubric(q)
        assert q.answer_points, f"{q.label}: no **Answer** found"
        assert 3 <= len(r["points"]) <= 5, f"{q.label}: {len(r['points'])} rubric points"
        if q.label in KNOWN_GAPS:
            continue
        assert r["red_flags"], f"{q.label}: no **Traps** bullets (the rubric's red flags)"
        assert r["follow_up"], f"{q.label}: no Follow-up dropdown (the rubric's next question)"


def test_every_follow_up_has_its_answer(questions):
    for q in questions:
        assert len(q.followup_answers) == len(q.followups), f"{q.label}: follow-ups and answers differ"
        assert all(len(a) > 20 for a in q.followup_answers), f"{q.label}: an empty follow-up answer"


def test_every_fact_check_is_read(pages):
    want = sum(len(re.findall(r"^(`{3,}|:{3,})\{admonition\} Fact check", p.read_text(encoding="utf-8"), re.M))
               for p in SOURCES)
    facts = [f for ch in pages for f in ch.facts]
    assert len(facts) == want
    for f in facts:
        assert f.claim.strip() and f.claim != "?", f"{f.docname} fact check {f.index}: no claim"
        assert len(f.body) > 40, f"{f.docname} fact check {f.index}: no correction"
        assert not f.body.startswith(":"), f"{f.docname} fact check {f.index}: option line in the body"


def test_mock_sets_mix_levels_and_chapters_and_are_seeded(pages):
    seen = set()
    for seed in range(1, 7):
        picked = fb.mock_set(pages, seed)
        assert [q.label for q in picked] == [q.label for q in fb.mock_set(pages, seed)], "not deterministic"
        assert len(picked) == sum(n for _, n in fb.MOCK_MIX)
        assert {q.level for q in picked} == set(fb.LEVELS), f"loop {seed} does not mix every level"
        assert len({q.docname for q in picked}) >= 4, f"loop {seed} draws from too few chapters"
        seen.add(tuple(q.label for q in picked))
    assert len(seen) == 6, "two mock loops are identical"


def test_design_scenarios_link_to_existing_questions(questions):
    labels = {q.label for q in questions}
    text = (ROOT / "design_scenarios.md").read_text(encoding="utf-8")
    refs = re.findall(r"\{ref\}`[^`<]*<(q-[a-z0-9-]+)>`", text)
    assert refs, "the design scenarios must link to the chapters' demos"
    assert not set(refs) - labels, f"links to unknown questions: {set(refs) - labels}"
    staff = [q for q in questions if q.docname == "design_scenarios"]
    assert len(staff) >= 4 and all(q.level == "staff" for q in staff)


def test_table_cells_keep_pipes_and_sentences_split_sensibly():
    assert fb.cell("LLM.int8() keeps |x| ≥ 6") == "LLM.int8() keeps \\|x\\| ≥ 6"
    assert fb.cell("already \\| escaped") == "already \\| escaped"
    assert fb.sentences("Use e.g. LoRA. It trains A and B. Then merge `W + B.A`. Done") == \
        ["Use e.g. LoRA.", "It trains A and B.", "Then merge `W + B.A`.", "Done"]
    assert fb.sentences("Hu et al. 2021 found it (see Table 6. A note). Next.") == \
        ["Hu et al. 2021 found it (see Table 6. A note).", "Next."]


def test_prices_are_not_read_as_math():
    assert fb.no_currency_math("from $2.50 to $0.15, `$3` stays") == "from \\$2.50 to \\$0.15, `$3` stays"
    assert fb.no_currency_math("already \\$5 and $x$") == "already \\$5 and $x$"
    assert fb.plain("under \\$0.20") == "under $0.20"


def test_parser_keeps_numbers_across_blank_lines_and_warns_outside_lists(tmp_path):
    page = tmp_path / "x.md"
    page.write_text(
        "# 99 · Test\n\n(q-x)=\n## A question?\n\n**mid · common · conceptual**\n\n"
        "**Answer.** One. Two. Three.\n\n**Numbers to know**\n\n- **cited**: one (A 2020).\n\n"
        "- **derived**: two\n  continued.\n\n**Traps**\n\n- a trap\n\n## Demo section\n\n"
        "```{code-cell} ipython3\n# not a heading\n```\n\n**Numbers to know**\n\n- **verified**: three.\n\n"
        "Some prose.\n\n- **convention**: stray bullet.\n", encoding="utf-8")
    ch = fb.parse_chapter(page, "chapters/x")
    assert [n.status for n in ch.numbers] == ["cited", "derived", "verified"]
    assert ch.numbers[1].text == "two continued."
    assert [n.label for n in ch.numbers] == ["q-x", "q-x", None], "a number after a new ## is not the question's"
    assert ch.questions[0].traps == ["a trap"]
    assert ch.title == "99 · Test"
    assert len(ch.warnings) == 1 and "stray" not in ch.warnings[0] and "outside" in ch.warnings[0]


def _notes(apkg: Path):
    with zipfile.ZipFile(apkg) as z:
        assert "collection.anki2" in z.namelist()
        db = apkg.with_suffix(".anki2")
        db.write_bytes(z.read("collection.anki2"))
    con = sqlite3.connect(db)
    try:
        notes = con.execute("select guid, mid, tags, flds from notes").fetchall()
        decks = con.execute("select decks from col").fetchone()[0]
    finally:
        con.close()
    return notes, decks


def test_anki_deck_has_one_note_per_question_with_stable_ids(tmp_path, pages, questions):
    import genanki  # pinned in requirements.txt; the book build needs it too
    first, second = tmp_path / "a.apkg", tmp_path / "b.apkg"
    assert fb.build_deck(pages, first) == len(questions)
    fb.build_deck(pages, second)
    notes, decks = _notes(first)
    assert len(notes) == len(questions)
    assert sorted(n[0] for n in notes) == sorted(genanki.guid_for("ftlab", q.label) for q in questions)
    assert {n[1] for n in notes} == {fb.MODEL_ID}
    assert str(fb.DECK_ID) in decks
    assert sorted(notes) == sorted(_notes(second)[0]), "a rebuilt deck must update cards, not add new ones"
    by_guid = {n[0]: n for n in notes}
    for q in questions:
        guid, _, tags, flds = by_guid[genanki.guid_for("ftlab", q.label)]
        chapter = q.docname.split("/")[-1]
        assert set(tags.split()) == {f"chapter::{chapter}", f"level::{q.level}"}
        front, back, numbers, _ = flds.split("\x1f")
        assert front and "<li>" in back, f"{q.label}: empty card"
        assert "{term}" not in back + numbers and "{ref}" not in back, f"{q.label}: MyST markup on the card"
        assert bool(numbers) == bool(q.numbers)


def test_requirements_pin_genanki():
    req = (ROOT / "requirements.txt").read_text()
    assert re.search(r"^genanki==\d", req, re.M), "pin genanki (the build writes the Anki deck with it)"


def test_relative_doc_links_survive_the_copy_onto_study_pages():
    line = "see {doc}`01b_costs`, {doc}`the costs <01b_costs>` and {doc}`/intro`"
    assert fb.absolute_docs(line, "chapters/01_when_to_finetune") == (
        "see {doc}`/chapters/01b_costs`, {doc}`the costs </chapters/01b_costs>` and {doc}`/intro`")


def test_titles_with_code_stay_linkable(questions):
    # A {ref}`title <label>` role cannot hold backticks; chapter 09 has such headings.
    assert any(q.label == "q-rs-target-modules" for q in questions)
    assert not [q.label for q in questions if "`" in q.title]
