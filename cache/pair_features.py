"""What tells two prompts apart, as numbers: the cosine of their embeddings plus the guards' signals
(numbers, dates, negations, names, content words, roles). `decision.py` weighs them.

Pure functions, no I/O. The guards' rules (`guards.compare`) still name *why* a pair differs, for
logs; these features say *how much*, for a calibrated model.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from cache import lexicon as lx
from cache.guards import align_typos, antonym_between, role_swaps, word_rank
from cache.text import Features, analyse, analyse_tokens, tokens

__all__ = ["FEATURES", "pair_features"]

FEATURES = (
    "cosine",
    "cosine_squared",
    "numbers_differ",  # a number or an amount on one side only
    "dates_differ",
    "negation_differs",  # a different count of negations
    "antonym",  # "open"/"close", "lock"/"unlock"
    "entities_missing",  # names on one side not found on the other (capped at 3)
    "hard_words",  # differing content words that are not soft (capped at 6)
    "rare_words",  # differing words ranked beyond `common_rank` (capped at 3)
    "soft_only",  # the only differences are soft words
    "same_words",  # no content difference once typos, inflections and synonyms are folded
    "roles_swapped",  # "London to Paris" / "Paris to London"
    "overlap",  # Jaccard overlap of the content concepts
    "length_ratio",  # shorter over longer, in content concepts
)


def pair_features(new: str, cached: str, cosine: float, vocabulary: dict[str, int],
                  common_rank: int = 8000) -> npt.NDArray[np.float64]:
    """One row of `FEATURES` for a candidate pair."""
    if new == cached:
        a = b = analyse(new)
    else:
        ta, tb = tokens(new), tokens(cached)
        fix_a, fix_b = align_typos(ta, tb, vocabulary) if ta != tb else ({}, {})
        a = analyse_tokens(ta, new, fix_a) if fix_a else analyse(new)
        b = analyse_tokens(tb, cached, fix_b) if fix_b else analyse(cached)
    return _row(a, b, cosine, vocabulary, common_rank)


def _row(a: Features, b: Features, cosine: float, vocabulary: dict[str, int], common_rank: int
         ) -> npt.NDArray[np.float64]:
    only_a, only_b = set(a.concepts - b.concepts), set(b.concepts - a.concepts)
    differing = only_a | only_b
    hard = differing - lx.SOFT_WORDS
    missing = ({e for e in a.entities if e not in b.raw and e not in b.concepts}
               | {e for e in b.entities if e not in a.raw and e not in a.concepts})
    rare = {w for w in hard if not w.startswith("@") and word_rank(w, a, b, vocabulary) > common_rank}
    union = a.concepts | b.concepts
    sizes = sorted((len(a.concepts), len(b.concepts)))
    return np.array([
        cosine,
        cosine * cosine,
        float(a.numbers != b.numbers),
        float(a.temporal != b.temporal),
        float(a.negations != b.negations),
        float(antonym_between(a, b, only_a, only_b) is not None),
        float(min(len(missing), 3)),
        float(min(len(hard), 6)),
        float(min(len(rare), 3)),
        float(bool(differing) and not hard),
        float(not differing),
        float(bool(role_swaps(a, b))),
        len(a.concepts & b.concepts) / len(union) if union else 1.0,
        sizes[0] / sizes[1] if sizes[1] else 1.0,
    ], dtype=np.float64)

