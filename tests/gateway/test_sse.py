from __future__ import annotations

import pytest

from gateway.upstreams.sse import SSEDecoder


@pytest.mark.parametrize(
    ("pieces", "events"),
    [
        ([b"data: a\n\n"], [b"a"]),
        ([b"data: a\n\ndata: b\n\n"], [b"a", b"b"]),
        ([b"da", b"ta: a\n", b"\n"], [b"a"]),
        ([b"data: a\r\n\r\n"], [b"a"]),
        ([b"data: a\r", b"\n\r\n"], [b"a"]),  # CRLF split across reads is still one line ending
        ([b": keep-alive\n\n", b"data: x\n\n"], [b"x"]),  # comments carry nothing
        ([b"event: message\nid: 3\ndata: y\n\n"], [b"y"]),
        ([b"data: line1\ndata: line2\n\n"], [b"line1\nline2"]),
        ([b"data:nospace\n\n"], [b"nospace"]),
        ([b"\n\n\n"], []),
    ],
)
def test_decoder(pieces: list[bytes], events: list[bytes]) -> None:
    decoder = SSEDecoder()
    out: list[bytes] = []
    for piece in pieces:
        out.extend(decoder.feed(piece))
    assert out == events


def test_flush_returns_an_unterminated_last_event() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: tail") == []
    assert decoder.flush() == [b"tail"]
    assert decoder.flush() == []


def test_byte_at_a_time() -> None:
    stream = b'data: {"a": 1}\n\ndata: [DONE]\n\n'
    decoder = SSEDecoder()
    out = [e for i in range(len(stream)) for e in decoder.feed(stream[i : i + 1])]
    assert out == [b'{"a": 1}', b"[DONE]"]
