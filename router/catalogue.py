"""A tool catalogue: one distinct `tools` list, prepared for scoring (vectors stacked, BM25 built).

Applications send the same tools with every request, so a catalogue is built once and then found by
a cheap fingerprint of the list: its JSON bytes as orjson writes them (keys in the order given) and
SHA-1, about 0.8 ms for 741 tools where marshal took 1.7 and canonical JSON 4. Its id is a hash of
its tools' definition hashes: stable across processes and restarts, and the key under which feedback
models are kept.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
import orjson

from router.embedder import Vectors
from router.lexical import LexicalIndex, words
from router.tooltext import lexical_text, tool_hash, tool_name

__all__ = ["Catalogue", "CatalogueCache", "Identity", "build", "fingerprint", "identify"]

K = TypeVar("K", bytes, str)


@dataclass(frozen=True, slots=True)
class Identity:
    """Who the tools of one list are: per position, the definition hash and the function name."""

    id: str
    hashes: tuple[str, ...]
    names: tuple[str | None, ...]


@dataclass(frozen=True, slots=True)
class Catalogue:
    identity: Identity
    full: Vectors  # (n, dim): each tool's full text
    description: Vectors  # (n, dim): each tool's description
    lexical: LexicalIndex
    scorable: npt.NDArray[np.bool_]  # named functions; anything else always survives

    @property
    def id(self) -> str:
        return self.identity.id

    def scores(
        self, query: Vectors, query_words: Sequence[str], description_weight: float, lexical_weight: float
    ) -> npt.NDArray[np.float64]:
        dense = self.full @ query + description_weight * (self.description @ query)
        out = dense.astype(np.float64)
        if lexical_weight:
            out += lexical_weight * self.lexical.scores(query_words)
        out[~self.scorable] = -np.inf
        return out


def fingerprint(tools: Sequence[Mapping[str, Any]]) -> bytes | None:
    """A cheap key for this exact list; None when the list holds something JSON cannot encode."""
    try:
        raw = orjson.dumps(tools)
    except TypeError:  # orjson.JSONEncodeError is a TypeError
        return None
    return hashlib.sha1(raw, usedforsecurity=False).digest()


def identify(tools: Sequence[Mapping[str, Any]]) -> Identity:
    hashes = tuple(tool_hash(t) for t in tools)
    names = tuple(tool_name(t) for t in tools)
    digest = hashlib.blake2b("\n".join(sorted(set(hashes))).encode(), digest_size=12).hexdigest()
    return Identity(id=digest, hashes=hashes, names=names)


def build(identity: Identity, tools: Sequence[Mapping[str, Any]], vectors: Mapping[str, Vectors]) -> Catalogue:
    stacked = np.stack([vectors[h] for h in identity.hashes])  # (n, 2, dim)
    return Catalogue(
        identity=identity,
        full=np.ascontiguousarray(stacked[:, 0, :]),
        description=np.ascontiguousarray(stacked[:, 1, :]),
        lexical=LexicalIndex([words(lexical_text(t)) for t in tools]),
        scorable=np.array([n is not None for n in identity.names], dtype=bool),
    )


class CatalogueCache:
    """Built catalogues by fingerprint and by id, least recently used dropped first."""

    def __init__(self, capacity: int):
        self._capacity = capacity
        self._by_print: OrderedDict[bytes, Catalogue] = OrderedDict()
        self._by_id: OrderedDict[str, Catalogue] = OrderedDict()

    def by_print(self, key: bytes | None) -> Catalogue | None:
        return None if key is None else _touch(self._by_print, key)

    def by_id(self, key: str) -> Catalogue | None:
        return _touch(self._by_id, key)

    def put(self, key: bytes | None, catalogue: Catalogue) -> None:
        if key is not None:
            _insert(self._by_print, key, catalogue, self._capacity)
        _insert(self._by_id, catalogue.id, catalogue, self._capacity)


def _touch(table: OrderedDict[K, Catalogue], key: K) -> Catalogue | None:
    found = table.get(key)
    if found is not None:
        table.move_to_end(key)
    return found


def _insert(table: OrderedDict[K, Catalogue], key: K, value: Catalogue, capacity: int) -> None:
    table[key] = value
    table.move_to_end(key)
    while len(table) > capacity:
        table.popitem(last=False)
