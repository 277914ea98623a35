"""Streaming detokenisation and stop strings, with a real byte-level BPE tokenizer."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from batching.detokenizer import IncrementalDetokenizer, StopStrings


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def stream(tokenizer: Any, prompt: list[int], ids: list[int], sizes: list[int]) -> list[str]:
    detok = IncrementalDetokenizer(tokenizer, prompt)
    deltas, i = [], 0
    for size in sizes:
        if i >= len(ids):
            break
        deltas.append(detok.add(ids[i:i + size]))
        i += size
    if i < len(ids):
        deltas.append(detok.add(ids[i:]))
    deltas.append(detok.flush())
    return deltas


def test_a_character_split_over_byte_tokens_comes_out_whole(tokenizer: Any) -> None:
    ids = tokenizer("🚀", add_special_tokens=False)["input_ids"]
    assert len(ids) > 1  # the tiny vocabulary has no token for it: one token per byte
    deltas = stream(tokenizer, [], ids, [1] * len(ids))
    assert deltas[:-2] == [""] * (len(ids) - 1) and deltas[-2] == "🚀" and deltas[-1] == ""


def test_a_long_run_of_split_characters_keeps_a_short_window(tokenizer: Any) -> None:
    text = "𐀀🚀東京" * 8  # every character spans several byte tokens
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    detok = IncrementalDetokenizer(tokenizer, [])
    out = ""
    for i in range(0, len(ids), 3):  # chunks that keep splitting characters
        out += detok.add(ids[i:i + 3])
        assert len(detok._ids) <= 24  # the window slides even though the text rarely ends cleanly
    assert out + detok.flush() == text


def test_stray_bytes_are_eventually_emitted(tokenizer: Any) -> None:
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    byte_chars: dict[int, str] = bytes_to_unicode()  # type: ignore[no-untyped-call]
    lead_byte = tokenizer.convert_tokens_to_ids(byte_chars[0xE2])  # starts a 3-byte character
    ids = [lead_byte] * 40  # never completed: every prefix ends in U+FFFD
    detok = IncrementalDetokenizer(tokenizer, [])
    out = "".join(detok.add([t]) for t in ids)
    assert out and len(detok._ids) <= 24
    assert out + detok.flush() == tokenizer.decode(ids)


def test_leading_space_after_the_prompt_is_kept(tokenizer: Any) -> None:
    prompt = tokenizer("Hello", add_special_tokens=False)["input_ids"]
    ids = tokenizer(" world", add_special_tokens=False)["input_ids"]
    assert "".join(stream(tokenizer, prompt, ids, [1] * len(ids))) == " world"


def test_special_tokens_are_not_emitted(tokenizer: Any) -> None:
    ids = tokenizer("ok", add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    assert "".join(stream(tokenizer, [], ids, [1] * len(ids))) == "ok"


texts = st.text(alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="<"), max_size=40)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=texts, sizes=st.lists(st.integers(1, 4), max_size=40))
def test_streamed_text_is_the_text_and_never_a_broken_character(tokenizer: Any, text: str, sizes: list[int]) -> None:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    prompt = tokenizer("Q: ", add_special_tokens=False)["input_ids"]
    deltas = stream(tokenizer, prompt, ids, sizes)
    assert "".join(deltas) == text
    if "\ufffd" not in text:
        assert not any("\ufffd" in d for d in deltas)


STOPS = [
    ("a stop string inside one delta", ["Hello world!"], ["world"], "Hello ", True),
    ("a stop string across deltas", ["Hel", "lo wo", "rld!"], ["world"], "Hello ", True),
    ("the earliest of several stops wins", ["a STOP b END"], ["END", "STOP"], "a ", True),
    ("a partial match is released when it diverges", ["xa", "bd"], ["abc"], "xabd", False),
    ("text held at the end is flushed", ["ab"], ["abc"], "ab", False),
    ("no stop strings pass everything", ["any", "thing"], [], "anything", False),
]


@pytest.mark.parametrize(("case", "feeds", "stops", "expected", "stopped"), STOPS, ids=[c[0] for c in STOPS])
def test_stop_strings(case: str, feeds: list[str], stops: list[str], expected: str, stopped: bool) -> None:
    matcher = StopStrings(stops)
    out, hit = "", False
    for text in feeds:
        emitted, hit = matcher.feed(text)
        out += emitted
        if hit:
            break
    if not hit:
        out += matcher.flush()
    assert (out, hit) == (expected, stopped)


def test_text_that_may_start_a_stop_string_is_held_back() -> None:
    matcher = StopStrings(["</answer>"])
    assert matcher.feed("42 </ans") == ("42 ", False)
    assert matcher.feed("wer> more") == ("", True)


@settings(max_examples=300, deadline=None)
@given(
    text=st.text(alphabet="abc ", max_size=30),
    stops=st.lists(st.text(alphabet="abc", min_size=1, max_size=3), max_size=3),
    cuts=st.lists(st.integers(0, 30), max_size=6),
)
def test_stop_strings_cut_where_one_is_first_complete(text: str, stops: list[str], cuts: list[int]) -> None:
    bounds = sorted({0, len(text), *(c for c in cuts if c <= len(text))})
    matcher = StopStrings(stops)
    out, hit = "", False
    for a, b in itertools.pairwise(bounds):
        emitted, hit = matcher.feed(text[a:b])
        out += emitted
        if hit:
            break
    if not hit:
        out += matcher.flush()
    # Generation halts where a stop string is first complete; the cut is at that string's start.
    ends = [(i + len(s), i) for s, i in ((s, text.find(s)) for s in stops) if i >= 0]
    first = min(ends)[1] if ends else None
    assert out == (text if first is None else text[:first])
    assert hit == (first is not None)
