"""Labelled evaluation sets, from packages on the index only, loaded deterministically.

Cache (pairs of prompts labelled "same answer" or not, each with a category):
- `fow-cache`: the fow-cache package's 600 question pairs (paraphrases, near repeats, and traps:
  negation, numbers and dates, entity swaps, scope).
- `bfcl-live-simple`, `bfcl-live-multiple`: pairs of BFCL (bfcl-eval) "live" user queries (contributed
  by real users) that call the same function, within each of the two live subsets.
  Same call (function and ground-truth arguments) = same answer: real rewordings by different
  users. Same function, other arguments = a trap, categorised by what differs (a number, a string,
  something else). Traps are sampled, seeded, at most `_TRAPS_PER_FUNCTION` per function. (BFCL's
  synthetic subsets hold almost no two queries with the same call, so they make no pair set.)

Tool router (queries labelled with the one tool they call, and the catalogue they come with):
- `bfcl-synthetic` (simple_python, multiple), `bfcl-lang` (simple_java, simple_javascript),
  `bfcl-live` (live_simple, live_multiple: 1,300 real queries over ~250 tools, most tools called
  many times, the shape of a deployment's feedback).

Splits are by a hash of the item id, never by position.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import itertools
import json
import random
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["CACHE_SETS", "TOOL_SETS", "Pair", "Query", "bfcl_root", "cache_pairs", "fraction", "tool_queries"]

CACHE_SETS = ("fow-cache", "bfcl-live-simple", "bfcl-live-multiple")
TOOL_SETS = {
    "bfcl-synthetic": ("simple_python", "multiple"),
    "bfcl-lang": ("simple_java", "simple_javascript"),
    "bfcl-live": ("live_simple", "live_multiple"),
}
_PAIR_CATEGORIES = {
    "bfcl-live-simple": ("live_simple", "live_parallel"),
    "bfcl-live-multiple": ("live_multiple", "live_parallel_multiple"),
}
_TRAPS_PER_FUNCTION = 12


@dataclass(frozen=True)
class Pair:
    id: str
    a: str
    b: str
    same: bool
    category: str


@dataclass(frozen=True)
class Query:
    id: str
    messages: list[dict[str, Any]]
    name: str
    tool: dict[str, Any]  # the correct tool, OpenAI-shaped


def fraction(key: str, salt: str = "") -> float:
    """A stable number in [0, 1) for an id: the basis of every split."""
    return int(hashlib.sha256((salt + key).encode()).hexdigest()[:12], 16) / float(1 << 48)


def bfcl_root() -> Path:
    spec = importlib.util.find_spec("bfcl_eval")  # data files only: importing it pulls in its SDKs
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("bfcl-eval is not installed: pip install --no-deps bfcl-eval")
    return Path(spec.submodule_search_locations[0]) / "data"


@functools.cache
def _bfcl(category: str) -> tuple[tuple[str, list[dict[str, Any]], list[dict[str, Any]], list[Any]], ...]:
    """(id, messages of the first turn, functions offered, ground truth) per BFCL record (read once;
    callers must not modify what they get)."""
    root = bfcl_root()
    answers = {}
    records = []
    for line in (root / "possible_answer" / f"BFCL_v4_{category}.json").read_text().splitlines():
        record = json.loads(line)
        answers[record["id"]] = record["ground_truth"]
    for line in (root / f"BFCL_v4_{category}.json").read_text().splitlines():
        record = json.loads(line)
        records.append((record["id"], record["question"][0], record["function"], answers[record["id"]]))
    return tuple(records)


def _last_user(messages: list[dict[str, Any]]) -> str | None:
    users = [m for m in messages if m.get("role") == "user" and isinstance(m.get("content"), str)]
    return users[-1]["content"].strip() if users else None


def _differs(x: dict[str, Any], y: dict[str, Any]) -> str:
    """What differs between two argument sets: a number, a string, or something else."""
    kinds = set()
    for key in set(x) | set(y):
        if json.dumps(x.get(key), sort_keys=True) == json.dumps(y.get(key), sort_keys=True):
            continue
        values = [v for side in (x.get(key), y.get(key)) for v in (side if isinstance(side, list) else [side])]
        if any(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
            kinds.add("number")
        elif any(isinstance(v, str) and v for v in values):
            kinds.add("string")
        else:
            kinds.add("other")
    for kind in ("number", "string"):
        if kind in kinds:
            return kind
    return "other"


def _bfcl_pairs(name: str, seed: int) -> list[Pair]:
    by_function: dict[str, list[tuple[str, str, dict[str, Any]]]] = defaultdict(list)
    for category in _PAIR_CATEGORIES[name]:
        for item_id, messages, _, truth in _bfcl(category):
            text = _last_user(messages)
            if text is None or len(truth) != 1:
                continue
            (function, args), = truth[0].items()
            by_function[function].append((item_id, text, args))
    rng = random.Random(seed)
    pairs: list[Pair] = []
    for _, items in sorted(by_function.items()):
        keyed = [(item_id, text, args, json.dumps(args, sort_keys=True)) for item_id, text, args in items]
        Keyed = tuple[str, str, dict[str, Any], str]
        same: list[tuple[Keyed, Keyed]] = []
        traps: list[tuple[Keyed, Keyed]] = []
        for a, b in itertools.combinations(keyed, 2):
            if a[1] == b[1]:
                continue
            (same if a[3] == b[3] else traps).append((a, b))
        pairs += [Pair(f"{a[0]}|{b[0]}", a[1], b[1], True, "same_call") for a, b in same]
        pairs += [Pair(f"{a[0]}|{b[0]}", a[1], b[1], False, "other_" + _differs(a[2], b[2]))
                  for a, b in rng.sample(traps, min(len(traps), _TRAPS_PER_FUNCTION))]
    return pairs


def cache_pairs(name: str, seed: int = 0) -> list[Pair]:
    if name == "fow-cache":
        import fow_cache  # type: ignore[import-untyped]  # ships no type information

        return [
            Pair(p["id"], p["a"], p["b"], bool(p["same_answer"]),
                 p["category"] + ("/" + p["style"] if p["category"] == "paraphrase" else ""))
            for p in fow_cache.load_questions()
        ]
    if name in _PAIR_CATEGORIES:
        return _bfcl_pairs(name, seed)
    raise ValueError(f"unknown cache set {name!r}; known: {', '.join(CACHE_SETS)}")


def _openai_tool(function: dict[str, Any]) -> dict[str, Any]:
    return {"type": "function", "function": function}


def tool_queries(name: str) -> list[Query]:
    """Single-call queries of one tool set, each with its own definition of the tool it calls."""
    if name not in TOOL_SETS:
        raise ValueError(f"unknown tool set {name!r}; known: {', '.join(TOOL_SETS)}")
    queries = []
    for category in TOOL_SETS[name]:
        for item_id, messages, functions, truth in _bfcl(category):
            called = next(iter(truth[0]))
            function = next(f for f in functions if f["name"] == called)
            queries.append(Query(item_id, messages, called, _openai_tool(function)))
    return queries
