"""BM25 over tool words: catches the exact terms (a product name, `docker`, an enum value) that a small
sentence model blurs. An index is built once per tool catalogue; scoring a query touches only the
postings of its own words."""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from router.tooltext import split_identifier

__all__ = ["LexicalIndex", "words"]

_WORD = re.compile(r"[a-z0-9]+|[^\W\d_a-z]+")
_STOP_WORDS = """a an the of to in on for and or is are be with by at from as it this that these those what
which who how can you me my i we our your please use using get set do does did will would could should about
into than then there their them its if not no yes any all some show tell find give make want need like know let"""
_STOP = frozenset(_STOP_WORDS.split())
_SUFFIXES = (("ies", "y"), ("ing", ""), ("es", ""), ("ed", ""), ("s", ""))


def _stem(word: str) -> str:
    for suffix, replacement in _SUFFIXES:
        if len(word) > len(suffix) + 2 and word.endswith(suffix):
            return word[: -len(suffix)] + replacement
    return word


def words(text: str) -> list[str]:
    """Lower-cased, identifier-split, stop-word-free, crudely stemmed words."""
    return [_stem(w) for w in _WORD.findall(split_identifier(text).lower()) if len(w) > 1 and w not in _STOP]


class LexicalIndex:
    """BM25 (k1=1.2, b=0.75) with each term's weight per document computed up front."""

    def __init__(self, documents: Sequence[Sequence[str]], k1: float = 1.2, b: float = 0.75):
        self.size = len(documents)
        lengths = np.array([len(d) for d in documents], dtype=np.float64)
        average = float(lengths.mean()) if self.size and lengths.mean() > 0 else 1.0
        postings: dict[str, tuple[list[int], list[float]]] = {}
        for i, document in enumerate(documents):
            norm = k1 * (1 - b + b * lengths[i] / average)
            for term, tf in Counter(document).items():
                docs, weights = postings.setdefault(term, ([], []))
                docs.append(i)
                weights.append(tf * (k1 + 1) / (tf + norm))
        self._postings: dict[str, tuple[npt.NDArray[np.intp], npt.NDArray[np.float64]]] = {}
        for term, (docs, weights) in postings.items():
            idf = math.log(1 + (self.size - len(docs) + 0.5) / (len(docs) + 0.5))
            self._postings[term] = (np.array(docs, dtype=np.intp), np.array(weights) * idf)

    def scores(self, query: Sequence[str]) -> npt.NDArray[np.float64]:
        """BM25 scaled so the best document scores 1 (all zeros when no word matches)."""
        out = np.zeros(self.size, dtype=np.float64)
        for term in set(query):
            posting = self._postings.get(term)
            if posting is not None:
                out[posting[0]] += posting[1]
        best = out.max() if self.size else 0.0
        return out / best if best > 0 else out
