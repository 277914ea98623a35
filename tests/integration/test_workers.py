"""Several gateway processes on one port: metrics aggregate across them (Prometheus multiprocess mode)."""

from __future__ import annotations

from pathlib import Path

import httpx

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
