"""What a prompt says, reduced to comparable features: content concepts, numbers, dates, negations,
named entities and role-bearing prepositions.

Pure functions over strings, no I/O. `guards.py` compares two prompts' `Features`.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

from cache import lexicon as lx

__all__ = ["Features", "analyse", "analyse_tokens", "stem", "tokens"]

_QUOTES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u201c": '"', "\u201d": '"', "\u2013": "-",
                         "\u2014": "-"})
_CONTRACTIONS = [(re.compile(p), r) for p, r in lx.CONTRACTIONS]
# A number keeps its separators ("£40,000", "9:15", "2.5"); words keep inner hyphens for now.
_TOKEN = re.compile(r"\d+(?:[.,:]\d+)*|[a-z]+(?:-[a-z]+)*|[£$€%]")
_ORDINAL_SUFFIX = re.compile(r"^(st|nd|rd|th)$")
_MAGNITUDE = {"k": 1e3, "m": 1e6, "bn": 1e9}
_SYNONYM = {w: group[0] for group in lx.SYNONYM_GROUPS for w in group}
_ENTITY = re.compile(r"[A-Za-z][\w'&.-]*")
_SENTENCE_START = re.compile(r"(?:^|[.!?:;]\s+|[\"(]\s*)$")


@dataclass(frozen=True)
class Features:
    """A prompt's comparable parts. All sets hold normalised forms."""

    content: tuple[str, ...]  # content concepts in order of appearance (stemmed, synonyms folded)
    numbers: frozenset[float]
    temporal: frozenset[str]
    negations: int
    entities: frozenset[str]  # stemmed forms of names written with capitals mid-sentence
    roles: frozenset[tuple[str, str]]  # (role preposition, its object concept)
    raw: frozenset[str]  # every token, stemmed, for antonym and prefix checks
    surface: tuple[tuple[str, str], ...] = ()  # (word as written, its concept) for content words

    @property
    def concepts(self) -> frozenset[str]:
        return frozenset(self.content)


def stem(word: str) -> str:
    """A light suffix stripper: the same word in two forms meets, different words rarely do.

    Both prompts go through the same function, so consistency matters more than linguistics.
    """
    w = word
    if len(w) > 4 and w.endswith("ies"):
        w = w[:-3] + "y"
    elif len(w) > 4 and w.endswith(("sses", "shes", "ches", "xes")):
        w = w[:-2]
    elif len(w) > 3 and w.endswith("s") and not w.endswith(("ss", "us", "is")):
        w = w[:-1]
    for suffix in ("ing", "ed"):
        if len(w) > len(suffix) + 3 and w.endswith(suffix):
            w = w[: -len(suffix)]
            if len(w) > 3 and w[-1] == w[-2] and w[-1] not in "ls":  # shopping -> shop
                w = w[:-1]
            break
    if len(w) > 6 and w.endswith(("wal", "val")):  # withdrawal ~ withdraw, renewal ~ renew
        w = w[:-2]
    # British and American spellings meet: centre/center, colour/color, organise/organize.
    if len(w) > 5 and w.endswith("our"):
        w = w[:-3] + "or"
    elif len(w) > 4 and w.endswith("tre"):
        w = w[:-3] + "ter"
    w = re.sub(r"is(e|ation)$", r"iz\1", w) if len(w) > 5 else w
    if len(w) > 4 and w.endswith("e"):
        w = w[:-1]
    return w


def _normalise(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).translate(_QUOTES).lower()
    for pattern, replacement in _CONTRACTIONS:
        text = pattern.sub(replacement, text)
    return text


def tokens(text: str) -> list[str]:
    """Lower-case word and number tokens with contractions expanded and hyphenated words split."""
    out: list[str] = []
    for tok in _TOKEN.findall(_normalise(text)):
        out.extend(tok.split("-") if "-" in tok and not tok[0].isdigit() else [tok])
    return out


def _strip_edges(toks: list[str]) -> list[str]:
    """Drop greetings before the first content word and sign-offs after the last."""
    start = 0
    while start < len(toks) and toks[start] in lx.GREETINGS | lx.FILLERS:
        start += 1
    end = len(toks)
    while end > start and toks[end - 1] in lx.SIGNOFFS | lx.FILLERS:
        end -= 1
    return toks[start:end]


def _rewrite_phrases(toks: list[str]) -> list[str]:
    out: list[str] = []
    i = 0
    while i < len(toks):
        for phrase, replacement in lx.PHRASES:
            if tuple(toks[i : i + len(phrase)]) == phrase:
                out.extend(replacement)
                i += len(phrase)
                break
        else:
            out.append(toks[i])
            i += 1
    return out


def _number(tok: str) -> float | None:
    try:
        return float(tok.replace(",", "")) if ":" not in tok else float(tok.replace(":", "."))
    except ValueError:
        return None


def _numbers(toks: list[str]) -> tuple[set[float], set[int]]:
    """Numeric values (digits and number words, "twenty five" = 25, "10k" = 10000) and the token
    positions they used."""
    values: set[float] = set()
    used: set[int] = set()
    i = 0
    while i < len(toks):
        tok = toks[i]
        value = _number(tok) if tok[0].isdigit() else None
        if value is not None:
            used.add(i)
            nxt = toks[i + 1] if i + 1 < len(toks) else ""
            if nxt in _MAGNITUDE:
                value *= _MAGNITUDE[nxt]
                used.add(i + 1)
            elif _ORDINAL_SUFFIX.match(nxt):
                used.add(i + 1)
            values.add(value)
            i += 1
            continue
        if tok == "one" and not _counts(toks, i):
            i += 1
            continue
        if tok in lx.NUMBER_WORDS or tok in lx.ORDINAL_WORDS:
            total, current, j = 0.0, 0.0, i
            while j < len(toks) and (toks[j] in lx.NUMBER_WORDS or toks[j] in lx.ORDINAL_WORDS):
                word = toks[j]
                n = lx.NUMBER_WORDS.get(word, lx.ORDINAL_WORDS.get(word, 0.0))
                if n in (100, 1000, 1e6, 1e9) and word in lx.NUMBER_WORDS:
                    current = max(current, 1.0) * n
                    if n >= 1000:
                        total, current = total + current, 0.0
                else:
                    current += n
                used.add(j)
                j += 1
            values.add(total + current)
            i = j
            continue
        i += 1
    return values, used


_NOT_COUNTING_BEFORE = frozenset({
    "a", "the", "new", "this", "that", "which", "each", "every", "any", "no", "another", "some", "old",
    "other", "right", "wrong", "last", "first", "only", "same", "better", "cheaper", "good", "best",
})
_NOT_COUNTING_AFTER = frozenset({"of", "is", "that", "which", "who", "more", "another", "else", "would",
                                 "will", "can", "should", "does"})


def _counts(toks: list[str], i: int) -> bool:
    """Is "one" at position i a count ("one egg") rather than a pronoun ("a new one", "one of")?"""
    if i + 1 >= len(toks) or toks[i + 1] in _NOT_COUNTING_AFTER:
        return False
    return not (i > 0 and toks[i - 1] in _NOT_COUNTING_BEFORE)


def _entities(text: str) -> set[str]:
    """Words written with a capital letter where a sentence does not start, or in capitals."""
    text = unicodedata.normalize("NFKC", text).translate(_QUOTES)
    found: set[str] = set()
    for match in _ENTITY.finditer(text):
        word = match.group(0).strip("'.-")
        if not word or word == "I" or not any(c.isupper() for c in word):
            continue
        if _SENTENCE_START.search(text[: match.start()]) and not (len(word) > 1 and word.isupper()):
            continue
        for part in tokens(word):
            found.add(stem(part))
    return found


def _concept(tok: str) -> str:
    if tok in lx.PRONOUN_CLASSES:
        return lx.PRONOUN_CLASSES[tok]
    if tok in lx.CURRENCY_WORDS:
        return lx.CURRENCY_WORDS[tok]
    if tok in _SYNONYM:
        return _SYNONYM[tok]
    s = stem(tok)
    return _SYNONYM.get(s, s)


_MEMO_MAX_CHARS = 2000  # the memo keeps its texts: long prompts are analysed afresh, not held


def analyse(text: str) -> Features:
    """The features of one prompt (memoised for short prompts: a cached entry's text is analysed once)."""
    if len(text) > _MEMO_MAX_CHARS:
        return analyse_tokens(tokens(text), text)
    return _analyse_memo(text)


@lru_cache(maxsize=2048)
def _analyse_memo(text: str) -> Features:
    return analyse_tokens(tokens(text), text)


def analyse_tokens(toks: list[str], text: str, fixes: dict[str, str] | None = None) -> Features:
    """Features from tokens (spelling-corrected against another prompt by `fixes`) and the original
    text, which still says what was capitalised."""
    fixes = fixes or {}
    toks = _rewrite_phrases(_strip_edges([fixes.get(t, t) for t in toks]))
    values, number_positions = _numbers(toks)
    temporal = {lx.TEMPORAL_WORDS[t] for i, t in enumerate(toks) if _is_temporal(toks, i)}
    negations = sum(t in lx.NEGATORS for t in toks)
    content: list[str] = []
    surface: list[tuple[str, str]] = []
    roles: set[tuple[str, str]] = set()
    for i, tok in enumerate(toks):
        if i in number_positions or _is_temporal(toks, i) or tok in lx.NEGATORS:
            continue
        if tok in lx.ROLE_PREPOSITIONS:
            obj = _next_content(toks[i + 1 :])
            if obj is not None:
                roles.add((tok, obj))
        if tok in lx.PRONOUN_CLASSES and lx.PRONOUN_CLASSES[tok] == "@self":
            continue  # "I", "my", "we": the asker, implicit in every question
        if tok in lx.STOPWORDS or tok in lx.FILLERS:
            continue
        concept = _concept(tok)
        surface.append((tok, concept))
        if concept not in content:
            content.append(concept)
    stemmed_fixes = {stem(k): stem(v) for k, v in fixes.items()}
    entities = {
        _concept(stemmed_fixes.get(e, e)) for e in _entities(text)
        if e not in lx.STOPWORDS and e not in lx.PRONOUN_CLASSES and e not in lx.FILLERS
        and e not in lx.GREETINGS and e not in lx.SIGNOFFS
    }
    return Features(
        content=tuple(content),
        numbers=frozenset(values),
        temporal=frozenset(temporal),
        negations=negations,
        entities=frozenset(entities),
        roles=frozenset(roles),
        raw=frozenset(stem(t) for t in toks) | frozenset(toks),
        surface=tuple(surface),
    )


def _is_temporal(toks: list[str], i: int) -> bool:
    """"am"/"pm" name a time only after a number ("7am"); elsewhere "am" is the verb."""
    tok = toks[i]
    if tok in ("am", "pm"):
        return i > 0 and toks[i - 1][0].isdigit()
    return tok in lx.TEMPORAL_WORDS


def _next_content(rest: Iterable[str]) -> str | None:
    for tok in rest:
        if tok in lx.STOPWORDS or tok in lx.FILLERS:
            continue
        return _concept(tok)
    return None
