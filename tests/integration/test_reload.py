"""Reloading the configuration of a running gateway process: SIGHUP or a change to the file, a
stream in flight finishing on the backend it began on, and a broken file refused."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml
from openai.types.chat import ChatCompletionChunk, ChatCompletionMessageParam

from tests.support.processes import ServerProcess
from tests.support.stack import SimControl, metric_value, sim_backend, start_gateway, start_sim, wait_for

HI: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]


def _config_path(gw: ServerProcess) -> Path:
    return Path(gw.args[gw.args.index("--config") + 1])


def _rewrite(gw: ServerProcess, change: dict[str, Any]) -> None:
    path = _config_path(gw)
    config = yaml.safe_load(path.read_text())
    config.update(change)
    tmp = path.with_suffix(".new")
    tmp.write_text(yaml.safe_dump(config))
    tmp.replace(path)  # one step: the watcher never reads half a file


def _metric(gw: ServerProcess, name: str, **labels: str) -> float:
    return metric_value(httpx.get(gw.url + "/metrics").text, name, **labels)


def _reloads(gw: ServerProcess, outcome: str) -> float:
    return _metric(gw, "switchyard_config_reloads_total", outcome=outcome)


def _chat(gw: ServerProcess) -> httpx.Response:
    return httpx.post(gw.url + "/v1/chat/completions", json={"model": "sim-model", "messages": HI, "max_tokens": 2})


def test_a_reload_mid_stream_finishes_the_stream_and_routes_new_requests_by_the_new_config(tmp_path: Path) -> None:
    old_sim = start_sim("--output-tokens", "2", log_dir=tmp_path, name="old")
    new_sim = start_sim("--output-tokens", "2", log_dir=tmp_path, name="new")
    config = {"auth": {"mode": "none"}, "server": {"watch_config": False},
              "backends": [sim_backend("old", old_sim, models=["sim-model"])]}  # fmt: skip
    gw = start_gateway(config, tmp_path, timeout=120)
    old, new = SimControl(old_sim), SimControl(new_sim)
    try:
        with openai.OpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0) as client:
            stream = client.chat.completions.create(
                model="sim-model",
                messages=HI,
                stream=True,
                max_tokens=40,
                extra_body={"sim": {"output_tokens": 40, "itl_ms": 50}},  # about two seconds of tokens
            )
            chunks = iter(stream)
            first: ChatCompletionChunk = next(chunks)
            assert first.choices[0].delta.role == "assistant"
            _rewrite(gw, {"backends": [sim_backend("new", new_sim, models=["sim-model"])]})
            gw.signal(signal.SIGHUP)
            wait_for(lambda: _reloads(gw, "applied") == 1, timeout=10, what="the reload applied")
            # New requests go by the new configuration, while the stream is still running on the old one.
            before_old = old.requests_to()
            assert _chat(gw).status_code == 200
            assert new.requests_to() == 1 and old.requests_to() == before_old
            assert set(httpx.get(gw.url + "/readyz").json()["backends"]) == {"new"}
            rest = list(chunks)
        text = "".join(c.choices[0].delta.content or "" for c in [first, *rest] if c.choices)
        assert rest[-1].choices[0].finish_reason == "stop"  # the whole answer, not one cut short
        assert len(text.split()) >= 30
        # The removed backend drained, then closed: its series are gone from the metrics.
        wait_for(lambda: _metric(gw, "switchyard_backend_up", backend="old") == 0, timeout=10, what="old closed")
        assert _metric(gw, "switchyard_config_last_reload_ok") == 1
    finally:
        gw.stop()
        old_sim.stop()
        new_sim.stop()


def test_a_broken_config_is_refused_and_the_old_one_keeps_serving(tmp_path: Path) -> None:
    sim = start_sim("--output-tokens", "2", log_dir=tmp_path)
    other = start_sim("--output-tokens", "2", log_dir=tmp_path, name="other")
    config = {"auth": {"mode": "none"}, "backends": [sim_backend("sim", sim, models=["sim-model"])]}
    gw = start_gateway(config, tmp_path, timeout=120)  # watching its file (the default)
    try:
        path = _config_path(gw)
        good = path.read_text()
        # Not a valid configuration: refused, named in the log, exported; the old one serves on.
        _rewrite(gw, {"backends": [{"name": "broken", "type": "openai"}]})  # no base_url
        wait_for(lambda: _reloads(gw, "invalid") == 1, timeout=10, what="the broken file refused")
        assert _metric(gw, "switchyard_config_last_reload_ok") == 0
        assert "backends.0: Value error, base_url is required" in Path(gw.log_path or "").read_text()
        assert _chat(gw).status_code == 200
        # Valid, but it cannot be built (its upstream key is not in the environment): refused too.
        _rewrite(gw, {"backends": [sim_backend("keyed", other, models=["sim-model"], api_key_env="NOT_SET_HERE")]})
        wait_for(lambda: _reloads(gw, "invalid") + _reloads(gw, "failed") == 2, timeout=10, what="refused")
        path.write_text("backends: [")  # not YAML at all
        wait_for(lambda: _reloads(gw, "invalid") + _reloads(gw, "failed") == 3, timeout=10, what="refused")
        assert _chat(gw).status_code == 200 and SimControl(other).requests_to() == 0
        # Fixed: applied.
        fixed = {**yaml.safe_load(good), "backends": [sim_backend("other", other, models=["sim-model"])]}
        path.write_text(yaml.safe_dump(fixed))
        wait_for(lambda: _reloads(gw, "applied") == 1, timeout=10, what="the fixed file applied")
        assert _chat(gw).status_code == 200 and SimControl(other).requests_to() == 1
        assert _metric(gw, "switchyard_config_last_reload_ok") == 1
    finally:
        gw.stop()
        sim.stop()
        other.stop()


@pytest.mark.parametrize("change", [{"redis": {"url": "redis://127.0.0.1:1/0"}}])
def test_what_needs_a_restart_is_refused_by_a_reload(tmp_path: Path, change: dict[str, Any]) -> None:
    sim = start_sim("--output-tokens", "2", log_dir=tmp_path)
    config = {"auth": {"mode": "none"}, "server": {"watch_config": False},
              "backends": [sim_backend("sim", sim, models=["sim-model"])]}  # fmt: skip
    gw = start_gateway(config, tmp_path, timeout=120)
    try:
        _rewrite(gw, change)
        gw.signal(signal.SIGHUP)
        wait_for(lambda: _reloads(gw, "invalid") == 1, timeout=10, what="refused")
        assert "need a restart" in Path(gw.log_path or "").read_text()
        assert _chat(gw).status_code == 200
    finally:
        gw.stop()
        sim.stop()
