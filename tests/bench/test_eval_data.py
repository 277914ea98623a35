"""The labelled evaluation sets load the same way every time and say what they claim."""

from __future__ import annotations

from collections import Counter

from bench.eval_data import CACHE_SETS, TOOL_SETS, cache_pairs, fraction, tool_queries


def test_cache_sets_are_deterministic_and_labelled_both_ways() -> None:
    for name in CACHE_SETS:
        pairs = cache_pairs(name)
        assert pairs == cache_pairs(name), name
        labels = Counter(p.same for p in pairs)
        assert labels[True] >= 15 and labels[False] >= 100, (name, labels)
        assert len({p.id for p in pairs}) == len(pairs)
        assert all(p.a != p.b for p in pairs)


def test_bfcl_pairs_are_the_same_call_or_a_trap_of_the_same_function() -> None:
    pairs = cache_pairs("bfcl-live-multiple")
    assert {p.category for p in pairs if p.same} == {"same_call"}
    assert {p.category for p in pairs if not p.same} <= {"other_number", "other_string", "other_other"}


def test_tool_sets_carry_their_called_tool() -> None:
    for name in TOOL_SETS:
        queries = tool_queries(name)
        assert queries and all(q.tool["function"]["name"] == q.name for q in queries)
    live = tool_queries("bfcl-live")
    repeated = sum(n for n in Counter(q.name for q in live).values() if n >= 2)
    assert repeated > 0.7 * len(live)  # most live queries call a tool others call too: feedback can learn


def test_fraction_is_a_stable_split() -> None:
    assert fraction("x") == fraction("x") and 0 <= fraction("x") < 1
    assert fraction("x", "a") != fraction("x", "b")
