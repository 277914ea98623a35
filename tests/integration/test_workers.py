"""Several gateway processes on one port: metrics aggregate across them (Prometheus multiprocess mode)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import httpx

from tests.support.processes import wait_until_ready
from tests.support.stack import metric_value, sim_backend, start_gateway, start_sim


def test_metrics_count_every_worker(tmp_path: Path) -> None:
    sim = start_sim("--output-tokens", "3", log_dir=tmp_path)
    config = {"auth": {"mode": "none"}, "server": {"workers": 2}, "backends": [sim_backend("s", sim)]}
    gw = start_gateway(config, tmp_path)
    try:
        with httpx.Client() as client:  # new connections spread the requests over both workers
            for _ in range(30):
                body = {"model": "sim-model", "messages": [{"role": "user", "content": "hi"}]}
                assert httpx.post(gw.url + "/v1/chat/completions", json=body).status_code == 200
            totals = {
                metric_value(client.get(gw.url + "/metrics").text, "switchyard_requests_total", status="200")
                for _ in range(6)
            }
        assert totals == {30.0}  # whichever worker answers the scrape reports all of them
    finally:
        assert gw.stop(timeout=30) == 0
        sim.stop()


def _workers(parent: int) -> set[int]:
    children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
    return {int(pid) for pid in children if "spawn_main" in Path(f"/proc/{pid}/cmdline").read_text()}


def test_a_dead_worker_is_replaced(tmp_path: Path) -> None:
    sim = start_sim("--output-tokens", "3", log_dir=tmp_path)
    config = {"auth": {"mode": "none"}, "server": {"workers": 2}, "backends": [sim_backend("s", sim)]}
    gw = start_gateway(config, tmp_path)
    try:
        assert gw.proc is not None
        before = _workers(gw.proc.pid)
        assert len(before) == 2
        victim = min(before)
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            now = _workers(gw.proc.pid)
            if len(now) == 2 and victim not in now:
                break
            time.sleep(0.1)  # polling the process table while the parent respawns, bounded
        else:
            raise AssertionError("the dead worker was not replaced")
        wait_until_ready(gw.url + "/readyz", gw.proc, timeout=60)
        body = {"model": "sim-model", "messages": [{"role": "user", "content": "hi"}]}
        assert all(httpx.post(gw.url + "/v1/chat/completions", json=body).status_code == 200 for _ in range(10))
    finally:
        assert gw.stop(timeout=30) == 1  # the parent reports that a worker died
        sim.stop()
