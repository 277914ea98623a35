"""The streaming relay against shaped and faulty sims: no bunching, failover, error events,
cancellation, hedging, keep-alive and latency-protecting admission."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from pathlib import Path
from statistics import median
from typing import Any

import httpx
import openai
import pytest

from tests.support.processes import ServerProcess
from tests.support.stack import SimControl, metric_value, sim_backend, start_gateway, start_sim

BODY: dict[str, Any] = {"model": "sim-model", "stream": True, "messages": [{"role": "user", "content": "hello"}]}


@pytest.fixture
def two_sims(tmp_path: Path) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    a = start_sim("--output-tokens", "6", log_dir=tmp_path, name="a")
    b = start_sim("--output-tokens", "6", log_dir=tmp_path, name="b")
    try:
        yield a, b
    finally:
        a.stop()
        b.stop()


def _gateway(
    tmp_path: Path, backends: list[dict[str, Any]], relay: dict[str, Any] | None = None, **resilience: Any
) -> ServerProcess:
    return start_gateway(
        {
            "auth": {"mode": "none"},
            "backends": backends,
            "relay": relay or {},
            "resilience": {"backoff_base": 0.01, "health_interval": 30, **resilience},
        },
        tmp_path,
    )


def _content_arrivals(url: str, body: dict[str, Any]) -> list[float]:
    """perf_counter times at which content-bearing SSE events reached the client."""
    arrivals = []
    with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=30) as resp:
        assert resp.status_code == 200
        for line in resp.iter_lines():
            if line.startswith("data: {") and '"content":"' in line.replace(" ", "") and '"content":""' not in line:
                arrivals.append(time.perf_counter())
    return arrivals


def test_chunks_arrive_as_the_upstream_sends_them(
    tmp_path: Path, two_sims: tuple[ServerProcess, ServerProcess]
) -> None:
    a, _ = two_sims
    gw = _gateway(tmp_path, [sim_backend("a", a)])
    try:
        body = {**BODY, "sim": {"itl_ms": 40, "output_tokens": 12}}
        direct = _content_arrivals(a.url, body)
        relayed = _content_arrivals(gw.url, body)
    finally:
        gw.stop()
    gaps_direct = [y - x for x, y in itertools.pairwise(direct)]
    gaps_relayed = [y - x for x, y in itertools.pairwise(relayed)]
    assert len(relayed) == len(direct) == 12
    # Every chunk keeps its own arrival time: no two come together (bunching would show ~0 gaps).
    assert min(gaps_relayed) > 0.02
    assert median(gaps_relayed) == pytest.approx(median(gaps_direct), abs=0.01)


def test_hang_before_first_byte_fails_over_invisibly(
    tmp_path: Path, two_sims: tuple[ServerProcess, ServerProcess]
) -> None:
    a, b = two_sims
    SimControl(a).configure(faults={"hang": 1.0})
    gw = _gateway(
        tmp_path,
        # a's weight makes it everyone's first choice, so every request must be moved off it
        [sim_backend("a", a, read_timeout=0.5, weight=100), sim_backend("b", b)],
        relay={"balancer": "least_outstanding", "hedge": False},
        retries=1,
        circuit_failures=100,
    )
    try:
        with openai.OpenAI(base_url=gw.url + "/v1", api_key="x", max_retries=0) as client:
            for _ in range(4):
                chunks = list(client.chat.completions.create(model="sim-model", messages=BODY["messages"], stream=True))
                assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert SimControl(a).requests_to() == 4  # each went to the hanging backend first and was moved
    finally:
        gw.stop()


def test_mid_stream_drop_becomes_an_error_event_the_sdk_raises(
    tmp_path: Path, two_sims: tuple[ServerProcess, ServerProcess]
) -> None:
    a, _ = two_sims
    gw = _gateway(tmp_path, [sim_backend("a", a)])
    try:
        with openai.OpenAI(base_url=gw.url + "/v1", api_key="x", max_retries=0) as client:
            stream = client.chat.completions.create(
                model="sim-model",
                messages=BODY["messages"],
                stream=True,
                extra_body={"sim": {"fault": "disconnect", "after_chunks": 3}},
            )
            received = []
            with pytest.raises(openai.APIError) as err:
                for chunk in stream:
                    received.append(chunk)
        assert len(received) >= 2  # the failure came after the first byte
        assert "closed the connection" in err.value.message
        text = httpx.get(gw.url + "/metrics").text
        assert metric_value(text, "switchyard_stream_errors_total") >= 1
    finally:
        gw.stop()


def test_a_stalled_stream_is_cut_with_an_error_event(
    tmp_path: Path, two_sims: tuple[ServerProcess, ServerProcess]
) -> None:
    a, _ = two_sims
    gw = _gateway(tmp_path, [sim_backend("a", a)], relay={"stall_timeout": 0.3})
    try:
        started = time.monotonic()
        with httpx.stream(
            "POST", gw.url + "/v1/chat/completions", timeout=10, json={**BODY, "sim": {"fault": "slow"}}
        ) as resp:
            lines = [line for line in resp.iter_lines() if line.startswith("data:")]
        assert time.monotonic() - started < 3.0  # never a hung client
        assert '"error"' in lines[-1] and "stalled" in lines[-1]
        assert "[DONE]" not in lines[-1]
    finally:
        gw.stop()


def test_client_disconnect_cancels_the_upstream_within_100ms(
    tmp_path: Path, two_sims: tuple[ServerProcess, ServerProcess]
) -> None:
    a, _ = two_sims
    gw = _gateway(tmp_path, [sim_backend("a", a)])
    control = SimControl(a)
    url = gw.url + "/v1/chat/completions"
    try:
        # While streaming: the client reads the first chunk, then goes away.
        with httpx.Client(timeout=10) as client:
            with client.stream("POST", url, json={**BODY, "sim": {"itl_ms": 200, "output_tokens": 50}}) as resp:
                next(resp.iter_lines())
            closed_at = time.time()
        assert _cancellation(control)["time"] - closed_at < 0.1
        # While waiting for the first token: the client's own timeout fires first.
        control.reset()
        with httpx.Client(timeout=httpx.Timeout(10, read=0.3)) as client, pytest.raises(httpx.ReadTimeout):
            client.post(url, json={**BODY, "sim": {"ttft_ms": 5000}})
        closed_at = time.time()
        cancellation = _cancellation(control)
        assert cancellation["phase"] == "before_first_token"
        assert cancellation["time"] - closed_at < 0.1
        text = httpx.get(gw.url + "/metrics").text
        assert metric_value(text, "switchyard_client_cancellations_total") == 2
    finally:
        gw.stop()


def _cancellation(control: SimControl) -> dict[str, Any]:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        cancellations = control.stats()["cancellations"]
        if cancellations:
            return cancellations[0]  # type: ignore[no-any-return]
        time.sleep(0.01)  # polling the sim's observable record, bounded
    raise AssertionError("the sim saw no cancellation")


def test_hedging_fires_past_the_deadline_and_the_loser_is_closed(
    tmp_path: Path, two_sims: tuple[ServerProcess, ServerProcess]
) -> None:
    a, b = two_sims
    SimControl(a).configure(ttft_ms={"value": 3000})
    gw = _gateway(
        tmp_path,
        [sim_backend("a", a, weight=100), sim_backend("b", b)],  # the slow one is tried first
        relay={"balancer": "least_outstanding", "first_token_deadline": 0.2, "hedge_budget": 1.0},
    )
    try:
        ttfts = []
        for _ in range(6):
            started = time.perf_counter()
            arrivals = _content_arrivals(gw.url, BODY)
            ttfts.append(arrivals[0] - started)
        assert max(ttfts) < 1.5  # nobody waited for the slow backend's three seconds
        text = httpx.get(gw.url + "/metrics").text
        sent = metric_value(text, "switchyard_hedges_total", outcome="sent")
        won = metric_value(text, "switchyard_hedges_total", outcome="won")
        assert sent == won == 6
        assert SimControl(a).stats()["cancelled"] == SimControl(a).requests_to() == 6  # every slow attempt was closed
    finally:
        gw.stop()


def test_no_hedging_before_the_deadline_and_within_budget(
    tmp_path: Path, two_sims: tuple[ServerProcess, ServerProcess]
) -> None:
    a, b = two_sims
    SimControl(a).configure(ttft_ms={"value": 600})
    SimControl(b).configure(ttft_ms={"value": 600})
    gw = _gateway(
        tmp_path,
        [sim_backend("a", a), sim_backend("b", b)],
        relay={"balancer": "least_outstanding", "first_token_deadline": 0.2, "hedge_budget": 0.1},
    )
    try:
        for _ in range(3):
            _content_arrivals(gw.url, {**BODY, "sim": {"ttft_ms": 20}})  # fast: under the deadline
        text = httpx.get(gw.url + "/metrics").text
        assert metric_value(text, "switchyard_hedges_total", outcome="sent") == 0
        for _ in range(10):
            _content_arrivals(gw.url, BODY)  # every one is past the deadline
        text = httpx.get(gw.url + "/metrics").text
        sent = metric_value(text, "switchyard_hedges_total", outcome="sent")
        # The budget is 10 % of requests plus the one hedge the budget starts with.
        assert 1 <= sent <= 1 + 0.1 * 13
        assert metric_value(text, "switchyard_hedges_total", outcome="over_budget") >= 8
        total_upstream = SimControl(a).requests_to() + SimControl(b).requests_to()
        assert total_upstream == 13 + sent
    finally:
        gw.stop()


def test_keepalive_comments_while_waiting_for_a_slow_first_token(
    tmp_path: Path, two_sims: tuple[ServerProcess, ServerProcess]
) -> None:
    a, _ = two_sims
    gw = _gateway(tmp_path, [sim_backend("a", a)], relay={"keepalive_interval": 0.1})
    try:
        with httpx.stream(
            "POST", gw.url + "/v1/chat/completions", timeout=10, json={**BODY, "sim": {"ttft_ms": 600}}
        ) as resp:
            lines = [line for line in resp.iter_lines() if line]
        first_data = next(i for i, line in enumerate(lines) if line.startswith("data:"))
        assert first_data >= 3 and all(line.startswith(":") for line in lines[:first_data])
        assert lines[-1] == "data: [DONE]"
    finally:
        gw.stop()


def test_batch_is_shed_to_keep_interactive_within_its_ttft_budget(
    tmp_path: Path, two_sims: tuple[ServerProcess, ServerProcess]
) -> None:
    a, _ = two_sims
    SimControl(a).configure(ttft_ms={"value": 150})
    gw = _gateway(
        tmp_path,
        [sim_backend("a", a)],
        relay={"ttft_budget": {"interactive": 0.5, "batch": 30}, "batch_shed_fraction": 0.2, "hedge": False},
    )
    try:
        for _ in range(3):  # teach the gateway this backend's time to first token
            _content_arrivals(gw.url, BODY)
        batch = httpx.post(gw.url + "/v1/chat/completions", json=BODY, headers={"x-switchyard-priority": "batch"})
        assert batch.status_code == 503 and int(batch.headers["retry-after"]) >= 1
        assert batch.json()["error"]["type"] == "overloaded_error"
        started = time.perf_counter()
        interactive = _content_arrivals(gw.url, BODY)  # interactive traffic is still served, within its budget
        assert interactive and interactive[0] - started < 0.5
        assert metric_value(httpx.get(gw.url + "/metrics").text, "switchyard_shed_total", priority="batch") == 1
    finally:
        gw.stop()
