"""ftlab.data: the seeded label-noise generator."""
import random

import pytest

from ftlab.chat import Example
from ftlab.data import add_label_noise, corrupt_answer
from ftlab.tasks import get_task


def test_rate_and_flags_are_exact_and_reproducible():
    items = get_task("rot").items(100, seed=0)
    noisy, flipped = add_label_noise(items, 0.3, seed=1)
    assert sum(flipped) == 30 and len(noisy) == 100
    for it, nz, f in zip(items, noisy, flipped):
        assert nz.prompt == it.prompt
        assert (nz.answer != it.answer) == f
        if f:  # one character changed, same length: looks plausible
            assert len(nz.answer) == len(it.answer)
            assert sum(a != b for a, b in zip(nz.answer, it.answer)) == 1
            assert not get_task("rot").verify(it, nz.answer)
    assert add_label_noise(items, 0.3, seed=1) == (noisy, flipped)
    assert add_label_noise(items, 0.3, seed=2)[1] != flipped
    assert items == get_task("rot").items(100, seed=0), "the input must not change"


def test_examples_digits_and_json_keep_their_shape():
    exs = get_task("json").examples(20, seed=0) + get_task("add").examples(20, seed=0)
    noisy, flipped = add_label_noise(exs, 1.0, seed=0)
    assert all(flipped)
    for ex, nz in zip(exs, noisy):
        assert nz.prompt == ex.prompt and nz.completion != ex.completion
        assert nz.completion.startswith('{"answer":"') == ex.completion.startswith('{"answer":"')
        if ex.completion.isdigit():
            assert nz.completion.isdigit()
    assert add_label_noise(exs, 0.0, seed=0) == (exs, [False] * 40)


def test_bad_input():
    items = get_task("rot").items(5, seed=0)
    for rate in (-0.1, 1.5, "0.2", True):
        with pytest.raises(ValueError, match="rate"):
            add_label_noise(items, rate)
    with pytest.raises(ValueError, match="empty"):
        add_label_noise([], 0.1)
    with pytest.raises(TypeError, match="Item or all ftlab.Example"):
        add_label_noise(["rot abc"], 0.1)
    with pytest.raises(TypeError, match="Item or all ftlab.Example"):
        add_label_noise([items[0], Example("a", "b")], 0.1)
    with pytest.raises(ValueError, match="no digit or letter"):
        corrupt_answer("?!", random.Random(0))
    with pytest.raises(TypeError, match="answer must be a str"):
        corrupt_answer(3, random.Random(0))


def test_scratchpad_answers_change_the_final_number_only():
    from ftlab.tasks import final_answer
    items = get_task("add_steps").items(30, seed=0)
    noisy, _ = add_label_noise(items, 1.0, seed=0)
    for it, nz in zip(items, noisy):
        assert nz.answer.split("⟩")[0] == it.answer.split("⟩")[0]
        assert final_answer(nz.answer) != final_answer(it.answer)


# --- dedup, near-duplicates, leakage, stratified split ---------------------------------
import numpy as np

from ftlab.data import (LeakageReport, dedup, detection_scores, exact_duplicates, jaccard, leakage_report,
                        minhash_signatures, near_duplicates_jaccard, near_duplicates_minhash, ngrams, row_text,
                        stratified_split)
from ftlab.tasks import Item


def test_ngrams_and_jaccard_by_hand():
    assert ngrams("abcd", 2) == {"ab", "bc", "cd"}
    assert ngrams("ab", 3) == {"ab"}
    assert jaccard("abcd", "abce", 2) == pytest.approx(2 / 4)
    assert jaccard("Ab  cd", "ab cd") == 1.0, "case and spacing are normalised"
    assert jaccard("abc", "xyz") == 0.0


def test_exact_duplicates_keep_the_first_copy():
    rows = ["a b", "c", "A  B", "c", "d"]
    assert exact_duplicates(rows) == [2, 3]
    items = [Item("rev", "rev ab", "ba"), Item("rev", "rev ab", "ba"), Item("rev", "rev ab", "bb")]
    assert exact_duplicates(items) == [1]
    assert row_text(items[0]) == "rev ab\tba"


def test_minhash_estimates_jaccard():
    """Broder (1997): P[min-hash agrees] = Jaccard; the mean over 256 hashes is close to it."""
    a = "the quick brown fox jumps over the lazy dog"
    for b in ["the quick brown fox jumps over the lazy cat", "the quick brown fox", "a slow green turtle"]:
        sig = minhash_signatures([a, b], num_perm=256, seed=0)
        est = (sig[0] == sig[1]).mean()
        assert abs(est - jaccard(a, b)) < 0.1, (b, est, jaccard(a, b))


def test_near_duplicate_detectors_agree_with_brute_force():
    rng = np.random.default_rng(0)
    base = ["".join(rng.choice(list("abcdefghij"), 30)) for _ in range(40)]
    rows = base + [b[:-2] + "zz" for b in base[:10]]
    brute = {(i, j) for i in range(len(rows)) for j in range(i + 1, len(rows)) if jaccard(rows[i], rows[j]) >= 0.7}
    got = {(i, j) for i, j, _ in near_duplicates_jaccard(rows, 0.7)}
    assert got == brute and len(got) == 10
    mh = {(i, j) for i, j, _ in near_duplicates_minhash(rows, 0.7, num_perm=64, bands=16)}
    assert len(mh & brute) >= 8 and len(mh - brute) <= 2
    kept, dropped = dedup(rows, 0.7)
    assert dropped == list(range(40, 50)) and len(kept) == 40


def test_leakage_report():
    train = [Item("rev", f"rev {w}", w[::-1]) for w in ["abcdef", "ghijkl", "mnopqr"]]
    ev = [Item("rev", "rev abcdef", "fedcba"), Item("rev", "rev ghijkx", "xkjihg"), Item("rev", "rev zzzyyy", "yyyzzz")]
    rep = leakage_report(train, ev, threshold=0.5)
    assert rep.exact == [0] and rep.near == [1] and rep.clean == [2]
    assert rep.rate == pytest.approx(2 / 3)
    assert isinstance(rep, LeakageReport)
    assert leakage_report(train, ev, field="prompt", threshold=0.99).exact == [0]


def test_detection_scores():
    assert detection_scores([1, 2, 3], [2, 3, 4, 5]) == (2 / 3, 2 / 4)
    assert detection_scores([], [1]) == (1.0, 0.0)


def test_stratified_split_keeps_proportions():
    rows = [("short", i) for i in range(80)] + [("long", i) for i in range(20)]
    tr, te = stratified_split(rows, key=lambda r: r[0], test_frac=0.25, seed=0)
    assert len(te) == 25 and len(tr) == 75
    assert sum(r[0] == "long" for r in te) == 5 and sum(r[0] == "long" for r in tr) == 15
    assert set(tr).isdisjoint(te) and sorted(tr + te) == sorted(rows)
    assert stratified_split(rows, key=lambda r: r[0], test_frac=0.25, seed=0) == (tr, te)
    assert stratified_split(rows, key=lambda r: r[0], test_frac=0.25, seed=1) != (tr, te)


def test_prep_bad_input():
    with pytest.raises(TypeError, match="str, ftlab.Item or ftlab.Example"):
        exact_duplicates([1, 2])
    with pytest.raises(TypeError, match="single str"):
        exact_duplicates("abc")
    with pytest.raises(ValueError, match="n must be"):
        ngrams("abc", 0)
    with pytest.raises(ValueError, match="threshold"):
        near_duplicates_jaccard(["a"], threshold=0)
    with pytest.raises(ValueError, match="bands"):
        near_duplicates_minhash(["a"], num_perm=64, bands=5)
    with pytest.raises(ValueError, match="num_perm"):
        minhash_signatures(["a"], num_perm=0)
    with pytest.raises(ValueError, match="method"):
        dedup(["a"], method="embedding")
    with pytest.raises(ValueError, match="eval is empty"):
        leakage_report(["a"], [])
    with pytest.raises(ValueError, match="field"):
        leakage_report(["a"], ["a"], field="answer")
    with pytest.raises(ValueError, match="test_frac"):
        stratified_split([1, 2], key=str, test_frac=1.0)
    with pytest.raises(TypeError, match="key must be"):
        stratified_split([1, 2], key="len")
    with pytest.raises(ValueError, match="rows is empty"):
        stratified_split([], key=str)
    with pytest.raises(ValueError, match="planted is empty"):
        detection_scores([1], [])


def test_near_duplicate_checker():
    from ftlab.data import check_near_duplicates
    check_near_duplicates(lambda texts, t, n: [(i, j) for i, j, _ in near_duplicates_jaccard(texts, t, n)])
    with pytest.raises(AssertionError):  # forgets to normalise case
        check_near_duplicates(lambda texts, t, n: [
            (i, j) for i in range(len(texts)) for j in range(i + 1, len(texts))
            if len({texts[i][k:k + n] for k in range(len(texts[i]) - n + 1)} & {texts[j][k:k + n] for k in range(len(texts[j]) - n + 1)})
            / len({texts[i][k:k + n] for k in range(len(texts[i]) - n + 1)} | {texts[j][k:k + n] for k in range(len(texts[j]) - n + 1)}) >= t])
