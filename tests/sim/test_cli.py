"""`switchyard sim` flags and profiles, and the multi-worker start-up path."""

from __future__ import annotations

import sys
from pathlib import Path

import httpx
import pytest

from sim import Distribution
from sim.cli import _parser, build_config
from tests.support.processes import ServerProcess, free_port

PROFILE = """
models: [alpha, beta]
ttft_ms: {kind: lognormal, value: 40, sigma: 0.3}
faults: {error: 0.1}
error_status: 503
"""


def test_flags_override_the_profile(tmp_path: Path) -> None:
    profile = tmp_path / "sim.yaml"
    profile.write_text(PROFILE)
    args = _parser().parse_args(
        ["--profile", str(profile), "--error-status", "429", "--hang-rate", "0.2", "--itl-ms", "uniform:2:4"]
    )
    cfg = build_config(args)
    assert cfg.models == ("alpha", "beta")
    assert cfg.ttft_ms == Distribution(kind="lognormal", value=40, sigma=0.3)
    assert cfg.itl_ms == Distribution(kind="uniform", low=2, high=4)
    assert (cfg.error_status, cfg.faults.error, cfg.faults.hang) == (429, 0.1, 0.2)


def test_bad_profile_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from sim.cli import main

    profile = tmp_path / "sim.json"
    profile.write_text('{"faults": {"error": 3}}')
    assert main(["--profile", str(profile)]) == 2
    assert "faults.error" in capsys.readouterr().err


def test_workers_serve_the_profile(tmp_path: Path) -> None:
    profile = tmp_path / "sim.yaml"
    profile.write_text("models: [alpha, beta]\noutput_tokens: {kind: fixed, value: 3}\n")
    port = free_port()
    args = [sys.executable, "-m", "sim", "--port", str(port), "--workers", "2", "--profile", str(profile)]
    with ServerProcess(args, port) as sim:
        assert [m["id"] for m in httpx.get(sim.url + "/v1/models").json()["data"]] == ["alpha", "beta"]
        body = {"model": "beta", "messages": [{"role": "user", "content": "hi"}]}
        for _ in range(4):
            r = httpx.post(sim.url + "/v1/chat/completions", json=body)
            assert r.json()["usage"]["completion_tokens"] == 3
