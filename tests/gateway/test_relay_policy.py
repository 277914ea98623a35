"""The relay's policy, in process, against scripted upstreams (tests/support/scripted.py): failover
before the first byte, hedging past the deadline within its budget, stalls, the circuit opening and
half-opening, waiting for a cooling backend, and a client that leaves cancelling the upstream call.
Each case runs in milliseconds; `tests/integration/test_relay.py` keeps the end-to-end checks."""

from __future__ import annotations

import asyncio
import time
from collections.abc import MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from gateway.backends.backend import Backend
from gateway.backends.circuit import CircuitBreaker, CircuitState
from gateway.backends.registry import BackendRegistry
from gateway.completion import Completion
from gateway.context import RequestContext
from gateway.errors import (
    NoBackendAvailable,
    StreamStalled,
    SwitchyardError,
    UpstreamError,
    UpstreamStatus,
)
from gateway.relay import Relay
from gateway.responses import RelayResponse
from gateway.settings import BackendSettings, RelaySettings, ResilienceSettings
from tests.support.scripted import (
    ScriptedTransport,
    Step,
    chunk,
    drop,
    gate,
    hang,
    refuse,
    status,
    stream,
    wait,
)

BODY = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}


@dataclass
class Harness:
    relay: Relay
    backends: dict[str, Backend]
    upstreams: dict[str, ScriptedTransport]

    def circuit(self, name: str) -> CircuitBreaker:
        return self.backends[name].circuit

    def calls(self, name: str) -> int:
        return len(self.upstreams[name].played)


def harness(
    upstreams: Sequence[ScriptedTransport],
    *,
    relay: dict[str, Any] | None = None,
    resilience: dict[str, Any] | None = None,
) -> Harness:
    """A relay over the scripted upstreams; the first listed is always tried first (weights)."""
    res = ResilienceSettings.model_validate({"backoff_base": 0.0, "wait_for_backend": 0.0, **(resilience or {})})
    backends = {}
    for i, upstream in enumerate(upstreams):
        settings = BackendSettings(
            name=upstream.name, base_url="http://scripted.invalid/v1", models=["m"], weight=1000.0 / 10**i
        )
        backend = Backend(settings, upstream, CircuitBreaker(res.circuit_failures, res.circuit_cooldown))
        backend.models = {"m"}
        backends[upstream.name] = backend
    registry = BackendRegistry(
        backends.values(), policy="least_outstanding", wait_budget=res.wait_for_backend
    )
    relay_settings = RelaySettings.model_validate({"hedge": False, **(relay or {})})
    return Harness(Relay(registry, relay_settings, res), backends, {u.name: u for u in upstreams})


def request(stream: bool = True) -> RequestContext:
    ctx = RequestContext(request_id="r1", endpoint="chat/completions", body={**BODY, "stream": stream}, headers={})
    ctx.model, ctx.stream = "m", stream
    return ctx


def text_of(events: list[tuple[bytes, dict[str, Any]]]) -> str:
    out = []
    for _, parsed in events:
        for choice in parsed.get("choices") or ():
            out.append((choice.get("delta") or {}).get("content") or "")
    return "".join(out)


async def relay_stream(h: Harness, stall: float = 5.0) -> tuple[str, str]:
    """Run one streamed request: (backend that served it, the text the client would get)."""
    ctx = request()
    async with h.relay.attempt(ctx, ctx.body) as attempt:
        events = [e async for e in attempt.events(stall)]
        return attempt.backend, text_of(events)


def scripted(name: str, *scripts: list[Step]) -> ScriptedTransport:
    return ScriptedTransport(name, list(scripts) or [stream("ok")])


# -- failover before the first byte ---------------------------------------------------------------


@dataclass
class FailoverCase:
    why: str
    first: list[Step]
    served_by: str  # or the error type's name when the request fails
    second_called: bool
    first_failures: int  # the first backend's consecutive failures afterwards
    first_state: CircuitState = CircuitState.CLOSED


FAILOVER = [
    FailoverCase("connection refused", [refuse()], "b", True, 1),
    FailoverCase("503 before any byte", [status(503)], "b", True, 1),
    FailoverCase("429: busy, not broken", [status(429, retry_after=1)], "b", True, 0),
    FailoverCase("400: the request is wrong, not the backend", [status(400)], "UpstreamStatus", False, 0),
    FailoverCase("dropped before the first content", [chunk("", role="assistant"), drop()], "b", True, 1),
    FailoverCase("stream that ends without an answer", [], "a", False, 0),
]


@pytest.mark.parametrize("case", FAILOVER, ids=lambda c: c.why)
async def test_failures_before_the_first_content_fail_over_invisibly(case: FailoverCase) -> None:
    h = harness([scripted("a", case.first), scripted("b", stream("from b"))])
    try:
        served_by, text = await relay_stream(h)
    except SwitchyardError as exc:
        served_by, text = type(exc).__name__, ""
    assert served_by == case.served_by
    if served_by == "b":
        assert text == "from b"
    assert (h.calls("b") > 0) == case.second_called
    assert h.circuit("a").consecutive_failures == case.first_failures
    assert h.circuit("a").state is case.first_state
    assert all(p.closed or not p.finished for p in h.upstreams["a"].played)
    assert all(b.outstanding == 0 for b in h.backends.values()), "every lease is released"


async def test_a_plain_request_fails_over_too() -> None:
    h = harness([scripted("a", [status(502)]), scripted("b", stream("plain from b"))])
    ctx = request(stream=False)
    async with h.relay.attempt(ctx, ctx.body) as attempt:
        assert attempt.backend == "b"
        assert attempt.response_json is not None
        assert attempt.response_json["choices"][0]["message"]["content"] == "plain from b"
    assert h.circuit("a").consecutive_failures == 1
    assert all(b.outstanding == 0 for b in h.backends.values())


async def test_retries_are_bounded_and_the_last_error_is_reported() -> None:
    h = harness([scripted("a", [status(503)]), scripted("b", [status(502)])], resilience={"retries": 1})
    with pytest.raises(UpstreamStatus) as err:
        await relay_stream(h)
    assert err.value.upstream_status == 502
    assert h.calls("a") + h.calls("b") == 2


# -- after the commit -----------------------------------------------------------------------------


async def test_a_stream_broken_after_the_first_content_is_not_retried_and_counts_against_the_backend() -> None:
    h = harness([scripted("a", [chunk("Hel"), drop()]), scripted("b")])
    ctx = request()
    seen: list[str] = []
    with pytest.raises(UpstreamError):
        async with h.relay.attempt(ctx, ctx.body) as attempt:
            async for _, parsed in attempt.events(5.0):
                seen.append(parsed["choices"][0]["delta"].get("content") or "")
    assert seen == ["Hel"]  # what was already forwarded stays forwarded; the rest is an error event
    assert h.calls("b") == 0
    assert h.circuit("a").consecutive_failures == 1
    assert h.upstreams["a"].played[0].closed
    assert h.backends["a"].outstanding == 0


async def test_a_stall_after_the_commit_ends_the_stream_within_the_stall_timeout() -> None:
    h = harness([scripted("a", [chunk("Hel"), hang(before_head=False)])])
    ctx = request()
    started = time.perf_counter()
    with pytest.raises(StreamStalled):
        async with h.relay.attempt(ctx, ctx.body) as attempt:
            async for _ in attempt.events(0.05):
                pass
    assert time.perf_counter() - started < 1.0
    played = h.upstreams["a"].played[0]
    assert played.closed and played.cancelled
    assert h.circuit("a").consecutive_failures == 1


# -- hedging --------------------------------------------------------------------------------------


async def test_past_the_deadline_a_hedge_wins_and_the_loser_is_closed_and_not_blamed() -> None:
    h = harness(
        [scripted("a", [hang()]), scripted("b", stream("hedged"))],
        relay={"hedge": True, "first_token_deadline": 0.02, "hedge_budget": 1.0},
    )
    served_by, text = await relay_stream(h)
    assert (served_by, text) == ("b", "hedged")
    loser = h.upstreams["a"].played[0]
    assert loser.cancelled, "the slow primary's call is cancelled"
    assert h.circuit("a").consecutive_failures == 0  # slow is not broken
    assert h.circuit("a").available()
    assert all(b.outstanding == 0 for b in h.backends.values())


async def test_the_primary_can_still_win_after_a_hedge_was_sent() -> None:
    release = asyncio.Event()
    h = harness(
        [scripted("a", [gate(release, before_head=True), *stream("primary")]), scripted("b", [hang()])],
        relay={"hedge": True, "first_token_deadline": 0.02, "hedge_budget": 1.0},
    )
    task = asyncio.create_task(relay_stream(h))
    await h.upstreams["b"].wait_for_calls()  # the hedge has gone out
    release.set()
    assert await task == ("a", "primary")
    assert h.upstreams["b"].played[0].cancelled


async def test_no_hedge_beyond_the_budget() -> None:
    h = harness(
        [scripted("a", [wait(0.05, before_head=True), *stream("slow but sure")]), scripted("b")],
        relay={"hedge": True, "first_token_deadline": 0.01, "hedge_budget": 0.0},
    )
    assert await relay_stream(h) == ("a", "slow but sure")
    assert h.calls("b") == 0


async def test_a_failed_primary_while_a_hedge_runs_lets_the_hedge_answer() -> None:
    release = asyncio.Event()
    h = harness(
        [scripted("a", [gate(release, before_head=True), status(503)]), scripted("b", stream("hedge"))],
        relay={"hedge": True, "first_token_deadline": 0.01, "hedge_budget": 1.0},
    )
    release.set()
    assert await relay_stream(h) == ("b", "hedge")


# -- the circuit ----------------------------------------------------------------------------------


async def test_the_circuit_opens_after_consecutive_failures_and_half_opens_after_the_cooldown() -> None:
    a = scripted("a", [refuse()], [refuse()], stream("recovered"))
    h = harness([a], resilience={"retries": 0, "circuit_failures": 2, "circuit_cooldown": 0.05})
    for _ in range(2):
        with pytest.raises(UpstreamError):
            await relay_stream(h)
    assert h.circuit("a").state is CircuitState.OPEN
    with pytest.raises(NoBackendAvailable):  # refused at once, without calling the backend
        await relay_stream(h)
    assert h.calls("a") == 2
    await asyncio.sleep(0.06)
    assert await relay_stream(h) == ("a", "recovered")  # the half-open probe succeeds
    assert h.circuit("a").state is CircuitState.CLOSED


async def test_a_failed_probe_opens_the_circuit_again() -> None:
    a = scripted("a", [refuse()])
    h = harness([a], resilience={"retries": 0, "circuit_failures": 1, "circuit_cooldown": 0.03})
    with pytest.raises(UpstreamError):
        await relay_stream(h)
    await asyncio.sleep(0.04)
    with pytest.raises(UpstreamError):
        await relay_stream(h)  # the probe
    assert h.circuit("a").state is CircuitState.OPEN
    assert h.calls("a") == 2


async def test_a_request_waits_for_a_cooling_backend_within_its_budget() -> None:
    a = scripted("a", [refuse()], stream("after the wait"))
    h = harness(
        [a], resilience={"retries": 0, "circuit_failures": 1, "circuit_cooldown": 0.1, "wait_for_backend": 2.0}
    )
    with pytest.raises(UpstreamError):
        await relay_stream(h)
    started = time.perf_counter()
    assert await relay_stream(h) == ("a", "after the wait")
    waited = time.perf_counter() - started
    assert 0.05 < waited < 1.5


async def test_without_a_wait_budget_a_cooling_backend_is_refused_at_once() -> None:
    h = harness([scripted("a", [refuse()])], resilience={"retries": 0, "circuit_failures": 1, "circuit_cooldown": 5})
    with pytest.raises(UpstreamError):
        await relay_stream(h)
    started = time.perf_counter()
    with pytest.raises(NoBackendAvailable) as err:
        await relay_stream(h)
    assert time.perf_counter() - started < 0.5
    assert "retry-after" in err.value.headers


# -- the writer and a client that leaves ----------------------------------------------------------


@dataclass
class Client:
    """The ASGI side of one request: collects what is sent, and can disconnect."""

    left: asyncio.Event = field(default_factory=asyncio.Event)
    sent: list[MutableMapping[str, Any]] = field(default_factory=list)
    first_body: asyncio.Event = field(default_factory=asyncio.Event)

    async def receive(self) -> dict[str, Any]:
        await self.left.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: MutableMapping[str, Any]) -> None:
        self.sent.append(message)
        if message["type"] == "http.response.body" and message.get("body"):
            self.first_body.set()

    @property
    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.sent if m["type"] == "http.response.body")


async def serve(h: Harness, client: Client, ctx: RequestContext) -> list[tuple[Completion, int]]:
    finished: list[tuple[Completion, int]] = []

    async def finish(_: RequestContext, completion: Completion, status_: int) -> None:
        finished.append((completion, status_))

    await RelayResponse(h.relay, ctx, ctx.body, finish)({"type": "http"}, client.receive, client.send)
    return finished


async def test_a_client_that_leaves_mid_stream_cancels_the_upstream_call_at_once() -> None:
    h = harness([scripted("a", [chunk("Hel"), hang(before_head=False)])])
    client = Client()
    task = asyncio.create_task(serve(h, client, request()))
    await client.first_body.wait()
    left_at = time.perf_counter()
    client.left.set()
    finished = await asyncio.wait_for(task, 1.0)
    assert time.perf_counter() - left_at < 0.1
    played = h.upstreams["a"].played[0]
    assert played.cancelled and played.closed
    [(completion, code)] = finished
    assert completion.cancelled and code == 499
    assert h.circuit("a").consecutive_failures == 0  # the client left; the backend did nothing wrong
    assert h.backends["a"].outstanding == 0


async def test_a_client_that_leaves_before_the_first_token_cancels_the_waiting_call() -> None:
    h = harness([scripted("a", [hang()])])
    client = Client()
    task = asyncio.create_task(serve(h, client, request()))
    await h.upstreams["a"].wait_for_calls()
    left_at = time.perf_counter()
    client.left.set()
    await asyncio.wait_for(task, 1.0)
    assert time.perf_counter() - left_at < 0.1
    assert h.upstreams["a"].played[0].cancelled
    assert h.backends["a"].outstanding == 0
    assert client.sent == []  # nothing was ever sent


async def test_the_writer_forwards_every_event_and_ends_with_done() -> None:
    h = harness([scripted("a", stream("Hello", " world"))])
    client = Client()
    [(completion, code)] = await serve(h, client, request())
    assert code == 200 and completion.ok and completion.backend == "a"
    body = client.body.decode()
    assert body.count("data: ") == 5  # role, two pieces, finish (the usage chunk was not asked for)
    assert body.endswith("data: [DONE]\n\n")
    assert completion.completion_tokens == 2


async def test_an_error_after_the_first_byte_becomes_an_error_event() -> None:
    h = harness([scripted("a", [chunk("Hel"), drop()])])
    client = Client()
    [(completion, code)] = await serve(h, client, request())
    assert code == 502 and not completion.ok
    assert client.sent[0]["status"] == 200
    assert client.body.decode().rstrip().endswith('"code":"bad_gateway"}}')
    assert h.circuit("a").consecutive_failures == 1


async def test_a_refusal_before_the_first_byte_is_a_proper_http_error() -> None:
    h = harness([scripted("a", [status(503)])], resilience={"retries": 0})
    client = Client()
    [(_, code)] = await serve(h, client, request())
    assert code == 502
    assert client.sent[0]["status"] == 502
    assert b'"type":"upstream_error"' in client.body
