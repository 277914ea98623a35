"""Retries, fallback chains, the circuit breaker and active health checks, driven by the sim's faults."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from tests.support.processes import ServerProcess
from tests.support.stack import SimControl, metric_value, sim_backend, start_gateway, start_sim, wait_for

MSG: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello"}]


@pytest.fixture
def sims(tmp_path: Path) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    a = start_sim("--models", "sim-model,big-model", "--output-tokens", "4", "--seed", "7", log_dir=tmp_path, name="a")
    b = start_sim("--models", "sim-model", "--output-tokens", "4", log_dir=tmp_path, name="b")
    try:
        yield a, b
    finally:
        a.stop()
        b.stop()


def _gateway(tmp_path: Path, backends: list[dict[str, Any]], **resilience: Any) -> ServerProcess:
    config = {
        "auth": {"mode": "none"},
        "backends": backends,
        "relay": {"balancer": "least_outstanding", "hedge": False},
        "resilience": {"backoff_base": 0.01, "backoff_max": 0.05, "health_interval": 30, **resilience},
    }
    return start_gateway(config, tmp_path)


def _client(gw: ServerProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0)


def test_failed_attempts_retry_on_another_backend(tmp_path: Path, sims: tuple[ServerProcess, ServerProcess]) -> None:
    a, b = sims
    SimControl(a).configure(faults={"error": 1.0}, error_status=503)
    gw = _gateway(tmp_path, [sim_backend("a", a), sim_backend("b", b)], retries=2, circuit_failures=100)
    try:
        with _client(gw) as client:
            for _ in range(10):
                assert client.chat.completions.create(model="sim-model", messages=MSG).choices[0].message.content
        assert SimControl(a).requests_to() >= 1  # some requests went to the failing backend first
        assert SimControl(b).requests_to() == 10  # and every one was answered by the healthy one
        assert metric_value(httpx.get(gw.url + "/metrics").text, "switchyard_retries_total", backend="a") >= 1
    finally:
        gw.stop()


def test_retries_with_backoff_on_a_flaky_single_backend(
    tmp_path: Path, sims: tuple[ServerProcess, ServerProcess]
) -> None:
    a, _ = sims
    SimControl(a).configure(faults={"error": 0.4}, error_status=500, seed=3)
    gw = _gateway(tmp_path, [sim_backend("a", a)], retries=5, circuit_failures=100)
    try:
        with _client(gw) as client:
            for _ in range(20):
                client.chat.completions.create(model="sim-model", messages=MSG)
        stats = SimControl(a).stats()
        assert sum(stats["errors_injected"].values()) > 0  # failures happened and were absorbed
        assert stats["requests"]["/v1/chat/completions"] == 20 + sum(stats["errors_injected"].values())
    finally:
        gw.stop()


def test_model_fallback_chain(tmp_path: Path, sims: tuple[ServerProcess, ServerProcess]) -> None:
    a, b = sims
    SimControl(a).configure(faults={"error": 1.0}, error_status=500)
    gw = _gateway(
        tmp_path,
        [sim_backend("a", a, models=["big-model"]), sim_backend("b", b, models=["sim-model"])],
        retries=1,
        fallbacks={"big-model": ["sim-model"]},
    )
    try:
        with _client(gw) as client:
            out = client.chat.completions.create(model="big-model", messages=MSG)
        assert out.model == "sim-model"  # answered by the fallback model
        assert SimControl(b).last_request()["body"]["model"] == "sim-model"
        text = httpx.get(gw.url + "/metrics").text
        assert metric_value(text, "switchyard_fallbacks_total", model="big-model", fallback="sim-model") == 1
    finally:
        gw.stop()


def test_circuit_opens_after_consecutive_failures(tmp_path: Path, sims: tuple[ServerProcess, ServerProcess]) -> None:
    a, _ = sims
    SimControl(a).configure(faults={"error": 1.0}, error_status=500)
    gw = _gateway(
        tmp_path, [sim_backend("a", a)], retries=0, circuit_failures=3, circuit_cooldown=60, wait_for_backend=0
    )
    try:
        with _client(gw) as client:
            for _ in range(3):
                with pytest.raises(openai.InternalServerError) as err:
                    client.chat.completions.create(model="sim-model", messages=MSG)
                assert err.value.status_code == 502
            for _ in range(3):
                with pytest.raises(openai.InternalServerError) as err:
                    client.chat.completions.create(model="sim-model", messages=MSG)
                assert err.value.status_code == 503  # refused at the gateway: the circuit is open
                assert err.value.response.headers["retry-after"]
        assert SimControl(a).requests_to() == 3
        ready = httpx.get(gw.url + "/readyz").json()
        assert ready["backends"]["a"]["circuit"] == "open"
        assert metric_value(httpx.get(gw.url + "/metrics").text, "switchyard_circuit_state", backend="a") == 2
    finally:
        gw.stop()


def test_waits_for_a_cooling_backend_then_probes_it(tmp_path: Path, sims: tuple[ServerProcess, ServerProcess]) -> None:
    a, _ = sims
    control = SimControl(a)
    control.configure(faults={"error": 1.0}, error_status=500)
    gw = _gateway(
        tmp_path, [sim_backend("a", a)], retries=0, circuit_failures=2, circuit_cooldown=1.0, wait_for_backend=5.0
    )
    try:
        with _client(gw) as client:
            for _ in range(2):
                with pytest.raises(openai.InternalServerError):
                    client.chat.completions.create(model="sim-model", messages=MSG)
            control.configure(faults={"error": 0.0})  # the backend recovers while its circuit is open
            started = time.monotonic()
            client.chat.completions.create(model="sim-model", messages=MSG)  # waits for the cooldown
            waited = time.monotonic() - started
        assert 0.3 < waited < 4.0
        assert httpx.get(gw.url + "/readyz").json()["backends"]["a"]["circuit"] == "closed"
    finally:
        gw.stop()


def test_active_health_checks_take_a_dead_backend_out_and_back(tmp_path: Path) -> None:
    port_holder = start_sim("--output-tokens", "3", log_dir=tmp_path, name="dead")
    port = port_holder.port
    config = {
        "auth": {"mode": "none"},
        "backends": [sim_backend("a", port_holder, models=["sim-model"])],
        "resilience": {"health_interval": 0.3},
    }
    gw = start_gateway(config, tmp_path)
    revived = None
    try:
        port_holder.stop()
        wait_for(lambda: not httpx.get(gw.url + "/readyz").json()["backends"]["a"]["healthy"])
        revived = ServerProcess([sys.executable, "-m", "sim", "--port", str(port)], port).start()
        wait_for(lambda: httpx.get(gw.url + "/readyz").json()["backends"]["a"]["healthy"])
        with _client(gw) as client:
            assert client.chat.completions.create(model="sim-model", messages=MSG).choices
    finally:
        gw.stop()
        if revived is not None:
            revived.stop()


def test_504_when_the_upstream_times_out(tmp_path: Path, sims: tuple[ServerProcess, ServerProcess]) -> None:
    a, _ = sims
    gw = _gateway(tmp_path, [sim_backend("a", a, read_timeout=0.3)], retries=0)
    try:
        with _client(gw) as client, pytest.raises(openai.InternalServerError) as err:
            client.chat.completions.create(model="sim-model", messages=MSG, extra_body={"sim": {"fault": "hang"}})
        assert err.value.status_code == 504
        assert err.value.body["type"] == "timeout_error"  # type: ignore[index]
    finally:
        gw.stop()
