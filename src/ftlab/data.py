"""Training-data quality: label noise, duplicates, leakage and a stratified split.

``add_label_noise`` corrupts a known fraction of answers in a way a careless annotator or
a buggy pipeline would: one character changes, so the wrong label still looks right at
a glance. It returns which rows it corrupted, so a chapter can measure what a filter
catches and what it lets through.

The rest of the module prepares a dataset: exact dedup, near-duplicate detection by
character n-gram Jaccard (exact, with an inverted index) and by MinHash with LSH bands
(approximate, for scale), a train/eval leakage report, and a stratified split.
"""
from __future__ import annotations

import random
import re
import string
import zlib
from dataclasses import dataclass, replace
from typing import Callable, Hashable, Sequence, TypeVar, Union

import numpy as np

from .chat import Example
from .seeds import shift
from .tasks import Item
from .tokenizer import THINK_CLOSE

__all__ = ["corrupt_answer", "add_label_noise", "row_text", "exact_duplicates", "ngrams", "jaccard",
           "near_duplicates_jaccard", "minhash_signatures", "near_duplicates_minhash", "dedup", "LeakageReport",
           "leakage_report", "detection_scores", "stratified_split", "check_near_duplicates"]

T = TypeVar("T", Item, Example)
_CLASSES = (string.digits, string.ascii_lowercase)
_JSON = re.compile(r'\{"answer":"(.*)"\}$')


def _content_span(answer: str) -> tuple[int, int]:
    """Where the answer's content lies: after a ⟨…⟩ scratchpad, inside a {"answer":"…"} wrapper."""
    lo = answer.rfind(THINK_CLOSE) + 1
    m = _JSON.match(answer, lo)
    return (m.start(1), m.end(1)) if m else (lo, len(answer))


def corrupt_answer(answer: str, rng: random.Random) -> str:
    """``answer`` with one digit or letter of its content replaced by another of the same kind.

    The format survives (a JSON wrapper, a scratchpad); only the fact changes.
    """
    if not isinstance(answer, str):
        raise TypeError(f"answer must be a str, got {type(answer).__name__}")
    lo, hi = _content_span(answer)
    spots = [i for i in range(lo, hi) if any(answer[i] in c for c in _CLASSES)]
    if not spots:
        raise ValueError(f"answer {answer!r} has no digit or letter to corrupt")
    i = rng.choice(spots)
    pool = next(c for c in _CLASSES if answer[i] in c).replace(answer[i], "")
    return answer[:i] + rng.choice(pool) + answer[i + 1:]


def add_label_noise(
    data: Sequence[T], rate: float, seed: int = 0
) -> tuple[list[T], list[bool]]:
    """Corrupt the answers of ``round(rate * len(data))`` rows chosen at random.

    ``data`` is a list of ``Item`` (the ``answer`` changes) or ``Example`` (the
    ``completion`` changes). Returns ``(noisy, flipped)``: a new list in the same order
    and, per row, whether its label was corrupted. The input is not modified.
    """
    if (
        isinstance(rate, bool)
        or not isinstance(rate, (int, float))
        or not 0 <= rate <= 1
    ):
        raise ValueError(f"rate must be in [0, 1], got {rate!r}")
    data = list(data)
    if not data:
        raise ValueError("data is empty")
    kinds = {type(d) for d in data}
    if not kinds <= {Item, Example} or len(kinds) != 1:
        raise TypeError(
            "data must be all ftlab.Item or all ftlab.Example, "
            f"got {sorted(k.__name__ for k in kinds)}"
        )
    rng = random.Random(shift(seed))
    chosen = set(rng.sample(range(len(data)), round(rate * len(data))))
    noisy, flipped = [], []
    for i, d in enumerate(data):
        if i in chosen:
            if isinstance(d, Item):
                d = replace(d, answer=corrupt_answer(d.answer, rng))
            else:
                d = replace(d, completion=corrupt_answer(d.completion, rng))
        noisy.append(d)
        flipped.append(i in chosen)
    return noisy, flipped


# --- deduplication, near-duplicates and leakage ----------------------------------------
# Every detector takes rows of text: plain strings, ``Item`` (prompt and answer) or
# ``Example`` (prompt and completion). Comparison happens on ``row_text``.
Row = Union[str, Item, Example]


def row_text(row: Row) -> str:
    """The text a detector compares: a string as is, an Item or Example as prompt + tab + answer."""
    if isinstance(row, str):
        return row
    if isinstance(row, Item):
        return row.prompt + "\t" + row.answer
    if isinstance(row, Example):
        return row.prompt + "\t" + row.completion
    raise TypeError(f"rows must be str, ftlab.Item or ftlab.Example, got {type(row).__name__}: {row!r}")


def _normal(text: str) -> str:
    """Lower case, spaces collapsed: what 'exact' dedup compares (so 'Ab  c' repeats 'ab c')."""
    return " ".join(text.lower().split())


def _texts(rows: Sequence[Row], name: str = "rows") -> list[str]:
    if isinstance(rows, (str, bytes)):
        raise TypeError(f"{name} must be a sequence of rows, not a single {type(rows).__name__}")
    return [row_text(r) for r in rows]


def exact_duplicates(rows: Sequence[Row]) -> list[int]:
    """Indices of rows whose normalised text repeats an earlier row's (the first copy is kept)."""
    seen, dups = set(), []
    for i, t in enumerate(_texts(rows)):
        key = _normal(t)
        if key in seen:
            dups.append(i)
        seen.add(key)
    return dups


def ngrams(text: str, n: int = 3) -> set[str]:
    """The set of character ``n``-grams of ``text`` (the whole text if it is shorter than ``n``)."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    text = _normal(text)
    if len(text) <= n:
        return {text}
    return {text[i:i + n] for i in range(len(text) - n + 1)}


def jaccard(a: str, b: str, n: int = 3) -> float:
    """Jaccard similarity |A ∩ B| / |A ∪ B| of the character ``n``-gram sets of ``a`` and ``b``."""
    A, B = ngrams(a, n), ngrams(b, n)
    return len(A & B) / len(A | B)


def _check_threshold(threshold) -> None:
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 < threshold <= 1:
        raise ValueError(f"threshold must be in (0, 1], got {threshold!r}")


def near_duplicates_jaccard(
    rows: Sequence[Row], threshold: float = 0.7, n: int = 3
) -> list[tuple[int, int, float]]:
    """Every pair of rows whose n-gram Jaccard similarity is at least ``threshold``.

    Pairs come as ``(i, j, similarity)`` with i < j. Exact, and quadratic in the
    number of rows: fine for thousands, not for millions (MinHash, below, is how the
    big pipelines do it).
    """
    _check_threshold(threshold)
    grams = [ngrams(t, n) for t in _texts(rows)]
    # An inverted index of n-grams: only rows that share one are ever compared.
    index: dict[str, list[int]] = {}
    for i, g in enumerate(grams):
        for s in g:
            index.setdefault(s, []).append(i)
    out = []
    for i, g in enumerate(grams):
        cands = {j for s in g for j in index[s] if j > i}
        for j in sorted(cands):
            sim = len(g & grams[j]) / len(g | grams[j])
            if sim >= threshold:
                out.append((i, j, sim))
    return out


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: a fast 64-bit hash with good avalanche (uint64 wraps on purpose)."""
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def minhash_signatures(rows: Sequence[Row], num_perm: int = 64, n: int = 3, seed: int = 0) -> np.ndarray:
    """(len(rows), num_perm) MinHash signatures of the rows' n-gram sets (Broder 1997).

    Column k hashes every n-gram with its own random 64-bit salt and keeps the minimum;
    the chance that two rows agree in a column approximately equals their Jaccard
    similarity (exactly only for min-wise independent permutations, which a salted hash
    approximates). With 64 columns the estimate's standard deviation is
    √(J(1 − J)/64), about 0.057 at J = 0.7, so pairs near the threshold are kept about
    half the time.
    """
    if isinstance(num_perm, bool) or not isinstance(num_perm, int) or num_perm < 1:
        raise ValueError(f"num_perm must be a positive int, got {num_perm!r}")
    rng = np.random.default_rng(shift(seed))
    salts = rng.integers(0, np.iinfo(np.uint64).max, size=num_perm, dtype=np.uint64, endpoint=True)
    texts = _texts(rows)
    sig = np.empty((len(texts), num_perm), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for i, t in enumerate(texts):
            x = np.array([zlib.crc32(g.encode()) for g in ngrams(t, n)], dtype=np.uint64)
            sig[i] = _mix64(x[:, None] ^ salts[None, :]).min(0)
    return sig


def near_duplicates_minhash(rows: Sequence[Row], threshold: float = 0.7, num_perm: int = 64, bands: int = 16,
                            n: int = 3, seed: int = 0) -> list[tuple[int, int, float]]:
    """Near-duplicate pairs ``(i, j, estimated_jaccard)`` found by MinHash with LSH banding.

    The signature is cut into ``bands`` bands of ``num_perm // bands`` rows; two rows
    become candidates if any band matches exactly, and are kept if the fraction of
    agreeing signature entries is at least ``threshold``. Work grows with the number of
    candidates, not with the number of pairs.
    """
    _check_threshold(threshold)
    if isinstance(bands, bool) or not isinstance(bands, int) or bands < 1 or num_perm % bands:
        raise ValueError(f"bands must be a positive int that divides num_perm={num_perm}, got {bands!r}")
    sig = minhash_signatures(rows, num_perm, n, seed)
    r = num_perm // bands
    cands: set[tuple[int, int]] = set()
    for band in range(bands):
        buckets: dict[bytes, list[int]] = {}
        for i, row in enumerate(sig[:, band * r:(band + 1) * r]):
            buckets.setdefault(row.tobytes(), []).append(i)
        for members in buckets.values():
            for x in range(len(members)):
                for y in range(x + 1, len(members)):
                    cands.add((members[x], members[y]))
    out = []
    for i, j in sorted(cands):
        est = float((sig[i] == sig[j]).mean())
        if est >= threshold:
            out.append((i, j, est))
    return out


def dedup(rows: Sequence[T], threshold: float = 0.7, n: int = 3, method: str = "jaccard") -> tuple[list[T], list[int]]:
    """Drop exact duplicates, then every row that is a near duplicate of an earlier kept row.

    Returns ``(kept_rows, dropped_indices)``. ``method`` is "jaccard" (exact) or "minhash".
    """
    if method not in ("jaccard", "minhash"):
        raise ValueError(f"method must be 'jaccard' or 'minhash', got {method!r}")
    rows = list(rows)
    drop = set(exact_duplicates(rows))
    pairs = (near_duplicates_jaccard if method == "jaccard" else near_duplicates_minhash)(rows, threshold, n=n)
    for i, j, _ in pairs:  # sorted by i: keep the first of each cluster
        if i not in drop:
            drop.add(j)
    return [r for k, r in enumerate(rows) if k not in drop], sorted(drop)


@dataclass
class LeakageReport:
    """Which eval rows also appear in the training data, exactly or nearly."""

    exact: list[int]        # eval indices whose text is in train (after normalisation)
    near: list[int]         # further eval indices within ``threshold`` Jaccard of a train row
    n_eval: int
    threshold: float

    @property
    def leaked(self) -> list[int]:
        return sorted(set(self.exact) | set(self.near))

    @property
    def clean(self) -> list[int]:
        bad = set(self.leaked)
        return [i for i in range(self.n_eval) if i not in bad]

    @property
    def rate(self) -> float:
        return len(self.leaked) / self.n_eval

    def __repr__(self):
        return (f"LeakageReport(exact={len(self.exact)}, near={len(self.near)}, clean={len(self.clean)}, "
                f"n_eval={self.n_eval}, rate={self.rate:.3f})")


def leakage_report(train: Sequence[Row], eval: Sequence[Row], threshold: float = 0.7, n: int = 3,
                   field: str = "full") -> LeakageReport:
    """Compare every eval row with the training rows: exact matches, then n-gram near matches.

    ``field="prompt"`` compares only the prompts of Items / Examples (a leaked question
    with a different answer still leaks the question).
    """
    _check_threshold(threshold)
    if field not in ("full", "prompt"):
        raise ValueError(f"field must be 'full' or 'prompt', got {field!r}")
    pick = (lambda r: r if isinstance(r, str) else r.prompt) if field == "prompt" else row_text
    tr = [pick(r) for r in _check_rows(train, "train")]
    ev = [pick(r) for r in _check_rows(eval, "eval")]
    if not ev:
        raise ValueError("eval is empty")
    train_keys = {_normal(t) for t in tr}
    exact = [i for i, t in enumerate(ev) if _normal(t) in train_keys]
    index: dict[str, list[int]] = {}
    grams = [ngrams(t, n) for t in tr]
    for j, g in enumerate(grams):
        for s in g:
            index.setdefault(s, []).append(j)
    near = []
    done = set(exact)
    for i, t in enumerate(ev):
        if i in done:
            continue
        g = ngrams(t, n)
        for j in {j for s in g for j in index.get(s, ())}:
            if len(g & grams[j]) / len(g | grams[j]) >= threshold:
                near.append(i)
                break
    return LeakageReport(exact, near, len(ev), float(threshold))


def _check_rows(rows, name):
    if isinstance(rows, (str, bytes)):
        raise TypeError(f"{name} must be a sequence of rows, not a single {type(rows).__name__}")
    rows = list(rows)
    for r in rows:
        row_text(r)
    return rows


def detection_scores(found: Sequence[int], planted: Sequence[int]) -> tuple[float, float]:
    """(precision, recall) of the flagged indices ``found`` against the ``planted`` ones.

    By this function's convention, flagging nothing has precision 1.0 (no false flags);
    scikit-learn returns 0 with a warning in that case. Recall is then 0.
    """
    f, p = set(found), set(planted)
    if not p:
        raise ValueError("planted is empty: recall is undefined")
    precision = len(f & p) / len(f) if f else 1.0
    return precision, len(f & p) / len(p)


# --- a stratified split ----------------------------------------------------------------
def stratified_split(rows: Sequence[T], key: Callable[[T], Hashable], test_frac: float = 0.2,
                     seed: int = 0) -> tuple[list[T], list[T]]:
    """Split ``rows`` so every stratum ``key(row)`` keeps its share in both parts.

    Each stratum puts ``round(test_frac * size)`` rows (at least one if it has two or
    more) into the test part, chosen at random. Order within each part follows the input.
    """
    if isinstance(test_frac, bool) or not isinstance(test_frac, (int, float)) or not 0 < test_frac < 1:
        raise ValueError(f"test_frac must be in (0, 1), got {test_frac!r}")
    if not callable(key):
        raise TypeError(f"key must be a function of a row, got {type(key).__name__}")
    rows = list(rows)
    if not rows:
        raise ValueError("rows is empty")
    strata: dict[Hashable, list[int]] = {}
    for i, r in enumerate(rows):
        strata.setdefault(key(r), []).append(i)
    rng = random.Random(shift(seed))
    test = set()
    for _, idx in sorted(strata.items(), key=lambda kv: repr(kv[0])):
        k = round(test_frac * len(idx))
        if len(idx) >= 2:
            k = min(max(k, 1), len(idx) - 1)
        test.update(rng.sample(idx, k))
    return [r for i, r in enumerate(rows) if i not in test], [r for i, r in enumerate(rows) if i in test]


# --- exercise checker ------------------------------------------------------------------
def check_near_duplicates(fn) -> None:
    """``fn(texts, threshold, n) -> list[(i, j)]``: pairs i < j with char n-gram Jaccard >= threshold."""
    rng = random.Random(0)
    base = ["".join(rng.choice("abcdefgh") for _ in range(24)) for _ in range(30)]
    texts = base + [b[:-3] + "xyz" for b in base[:6]] + [base[7].upper(), base[8] + "  "]
    for threshold, n in ((0.7, 3), (0.5, 2), (0.9, 4)):
        want = sorted((i, j) for i, j, _ in near_duplicates_jaccard(texts, threshold, n))
        got = sorted((int(i), int(j)) for i, j, *_ in fn(list(texts), threshold, n))
        assert all(i < j for i, j in got), "report each pair once, as (i, j) with i < j"
        missing, extra = sorted(set(want) - set(got)), sorted(set(got) - set(want))
        assert not missing and not extra, (
            f"threshold={threshold}, n={n}: missing {missing[:3]}, extra {extra[:3]} "
            "(lower-case and collapse spaces before taking n-grams)")
    print("✓ near duplicates: the same pairs as ftlab.data.near_duplicates_jaccard")
