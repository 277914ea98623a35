"""False-hit guards: may the answer cached for one prompt be served for another?

A cosine threshold alone cannot tell "cancel my subscription" from "don't cancel my subscription"
(both sit above 0.95). These checks compare what the two prompts *say*: their numbers, dates,
negations, named entities, content words (after folding typos, inflections and synonyms) and the
roles of words around directional prepositions. Any difference blocks the hit, except for a short
list of soft words that are tolerated when the prompts are very close.

Pure functions, no I/O; the tables in tests/cache/test_guards.py pin the behaviour.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from cache import lexicon as lx
from cache.text import Features, analyse, analyse_tokens, stem, tokens

__all__ = [
    "GuardKind", "GuardPolicy", "Verdict", "align_typos", "antonym_between", "check", "compare", "edit_distance",
    "role_swaps", "word_rank",
]

GuardKind = Literal["number", "date", "negation", "entity", "content", "order", "similarity"]

_ANTONYMS = frozenset(
    (stem(a), stem(b)) for pair in lx.ANTONYMS for a, b in (pair, pair[::-1])
)


@dataclass(frozen=True)
class Verdict:
    ok: bool
    kind: GuardKind | None = None
    detail: str = ""  # the words that differ, for logs (never a metric label)


PASS = Verdict(True)


def edit_distance(a: str, b: str, limit: int = 2) -> int:
    """Damerau-Levenshtein (adjacent transpositions count once), stopping early past `limit`."""
    if abs(len(a) - len(b)) > limit:
        return limit + 1
    prev2: list[int] = []
    prev = list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        cur = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            cost = 0 if a[i - 1] == b[j - 1] else 1
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                cur[j] = min(cur[j], prev2[j - 2] + 1)
        if min(cur) > limit:
            return limit + 1
        prev2, prev = prev, cur
    return prev[-1]


def _negated_form(a: str, b: str) -> bool:
    """"unlock" / "lock", "nonrefundable" / "refundable": a prefix that flips the meaning."""
    return any(len(y) >= 4 and any(x == p + y for p in lx.NEGATING_PREFIXES) for x, y in ((a, b), (b, a)))


def _is_typo(a: str, b: str, vocabulary: dict[str, int]) -> bool:
    """Is one of two words a misspelling of the other? Two real words never are ("lock" / "look")."""
    if a[0] != b[0] or not (a.isalpha() and b.isalpha()) or min(len(a), len(b)) < 4:
        return False
    if not vocabulary or (a in vocabulary and b in vocabulary) or _negated_form(a, b):
        return False
    limit = 2 if min(len(a), len(b)) >= 8 else 1
    return edit_distance(a, b, limit) <= limit


def align_typos(a: list[str], b: list[str], vocabulary: dict[str, int]
                ) -> tuple[dict[str, str], dict[str, str]]:
    """Spelling fixes for each side: a misspelt word becomes its correctly spelt counterpart on the
    other side."""
    only_a = [t for t in dict.fromkeys(a) if t not in b]
    only_b = [t for t in dict.fromkeys(b) if t not in a]
    fix_a: dict[str, str] = {}
    fix_b: dict[str, str] = {}
    for x in only_a:
        for y in only_b:
            if y in fix_b or not _is_typo(x, y, vocabulary):
                continue
            # keep the spelling the vocabulary knows; both sides then read the same word
            if x in vocabulary:
                fix_b[y] = x
            else:
                fix_a[x] = y
            break
    return fix_a, fix_b


def antonym_between(a: Features, b: Features, only_a: set[str], only_b: set[str]) -> str | None:
    for x in only_a | (a.raw - b.raw):
        for y in only_b | (b.raw - a.raw):
            if (x, y) in _ANTONYMS or _negated_form(x, y):
                return f"{x}/{y}"
    return None


@dataclass(frozen=True)
class GuardPolicy:
    """How close two prompts' embeddings must be, by how much their wording differs.

    same: the prompts say the same once typos, inflections, fillers and synonyms are folded;
    soft: they differ only in soft words ("usually", "exactly", ...);
    reworded: they share every anchor (numbers, dates, negations, names, rare words) but are worded
    differently in at least `reword_min_words` common words. A minimal edit of one or two content
    words is never served: it is how traps look ("extended warranty", "car insurance").
    """

    same: float = 0.70
    soft: float = 0.93
    reworded: float = 0.90
    reword_min_words: int = 3  # 3: a one-for-one swap ("men's" / "women's") is never a rewording
    reword_min_each_side: int = 1
    common_rank: int = 8000  # words ranked beyond this in the vocabulary are anchors


def check(new: str, cached: str, similarity: float, *, vocabulary: dict[str, int] | None = None,
          policy: GuardPolicy = GuardPolicy()) -> Verdict:
    """May the answer cached for `cached` be served for `new`, whose embedding is `similarity` away?

    `vocabulary`: correctly spelt words with their frequency rank (the embedder's word list, most
    frequent first); without it no typo is forgiven and every word counts as an anchor.
    """
    if new == cached:
        return PASS
    vocab = vocabulary or {}
    ta, tb = tokens(new), tokens(cached)
    fix_a, fix_b = align_typos(ta, tb, vocab) if ta != tb else ({}, {})
    fa = analyse_tokens(ta, new, fix_a) if fix_a else analyse(new)
    fb = analyse_tokens(tb, cached, fix_b) if fix_b else analyse(cached)
    return compare(fa, fb, similarity, vocab, policy)


def compare(a: Features, b: Features, similarity: float, vocabulary: dict[str, int],
            policy: GuardPolicy = GuardPolicy()) -> Verdict:
    """The policy, on features: the first difference found names the verdict."""
    if a.numbers != b.numbers:
        return Verdict(False, "number", _show(a.numbers ^ b.numbers))
    if a.temporal != b.temporal:
        return Verdict(False, "date", _show(a.temporal ^ b.temporal))
    if a.negations != b.negations:
        return Verdict(False, "negation", f"{a.negations} vs {b.negations} negations")
    only_a, only_b = set(a.concepts - b.concepts), set(b.concepts - a.concepts)
    antonym = antonym_between(a, b, only_a, only_b)
    if antonym:
        return Verdict(False, "negation", antonym)
    missing = ({e for e in a.entities if e not in b.raw and e not in b.concepts}
               | {e for e in b.entities if e not in a.raw and e not in a.concepts})
    if missing:
        return Verdict(False, "entity", _show(missing))
    differing = only_a | only_b
    if not differing or differing <= lx.SOFT_WORDS:
        swapped = role_swaps(a, b)
        if swapped:
            return Verdict(False, "order", swapped)
        return _needs(similarity, policy.same if not differing else policy.soft, "same" if not differing else "soft")
    anchors = {w for w in differing if not w.startswith("@") and word_rank(w, a, b, vocabulary) > policy.common_rank}
    hard_a, hard_b = only_a - lx.SOFT_WORDS, only_b - lx.SOFT_WORDS
    if (anchors or len(hard_a | hard_b) < policy.reword_min_words
            or min(len(hard_a), len(hard_b)) < policy.reword_min_each_side):
        return Verdict(False, "content", _show(differing))
    swapped = role_swaps(a, b)
    if swapped:
        return Verdict(False, "order", swapped)
    return _needs(similarity, policy.reworded, "reworded")


def _needs(similarity: float, required: float, tier: str) -> Verdict:
    if similarity >= required:
        return Verdict(True, None, tier)
    return Verdict(False, "similarity", f"{tier} needs {required:.2f}")


def word_rank(concept: str, a: Features, b: Features, vocabulary: dict[str, int]) -> int:
    """The frequency rank of the most common surface word behind a concept (unknown: rare)."""
    words = [w for w, c in a.surface + b.surface if c == concept] or [concept]
    return min(vocabulary.get(w, 1 << 30) for w in words)


def role_swaps(a: Features, b: Features) -> str:
    """Same words, different roles: "London to Paris" vs "Paris to London"."""
    preps_a = {p for p, _ in a.roles}
    preps_b = {p for p, _ in b.roles}
    shared = a.concepts & b.concepts
    for prep in preps_a & preps_b:
        objs_a = {o for p, o in a.roles if p == prep}
        objs_b = {o for p, o in b.roles if p == prep}
        # a word both prompts use, attached to this preposition on one side only: its role moved
        if objs_a != objs_b and (objs_a ^ objs_b) & shared:
            return f"{prep}: {_show(objs_a)} vs {_show(objs_b)}"
    return ""


def _show(values: object) -> str:
    items = sorted(str(v) for v in values)  # type: ignore[attr-defined]
    return ", ".join(items[:6])
