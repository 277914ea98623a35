"""The word list the guards use to tell a typo from a real word, with frequency ranks.

It is the embedder's WordPiece vocabulary: whole alphabetic words, roughly most frequent first.
"""

from __future__ import annotations

import logging
from pathlib import Path

__all__ = ["load_vocabulary"]

log = logging.getLogger(__name__)


def load_vocabulary(path: str | Path | None = None) -> dict[str, int]:
    """word -> rank (0 = most frequent). Empty when no word list can be found: the guards then
    forgive no typo and treat every differing word as an anchor (stricter, never looser)."""
    try:
        if path is None:
            from cache.embedder import bundled_minilm_path

            path = bundled_minilm_path() / "vocab.txt"
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, ImportError) as exc:
        log.warning("no vocabulary for the cache guards (%s): typos will not be forgiven", exc)
        return {}
    ranks: dict[str, int] = {}
    for line in lines:
        word = line.strip()
        if word.isalpha() and word.isascii() and word not in ranks:
            ranks[word] = len(ranks)
    return ranks
