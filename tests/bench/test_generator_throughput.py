"""The generator is not the bottleneck: at least 2,000 streamed requests per second against the sim.

Run through the real CLI (uvloop, as users run it) against a zero-latency sim streaming 16 tokens.
Other work on a shared machine can only slow a round down, so the best of three rounds counts.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.support.processes import REPO, ServerProcess, free_port

REQUIRED_RPS = 2000.0


@pytest.mark.slow
def test_at_least_2000_streamed_requests_per_second() -> None:
    port = free_port()
    with ServerProcess([sys.executable, "-m", "sim", "--port", str(port), "--output-tokens", "16"], port):
        cmd = [
            sys.executable,
            "-m",
            "bench.cli",
            "--base-url",
            f"http://127.0.0.1:{port}/v1",
            "--concurrency",
            "64",
            "--requests",
            "10000",
            "--warmup",
            "500",
            "--prompt-tokens",
            "32",
            "--tokenizer",
            "approx",
            "--quiet",
            "--json",
        ]
        best = 0.0
        for _ in range(3):
            done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120, check=True)
            summary = json.loads(done.stdout)["steps"][0]["summary"]
            assert summary["ok"] == 10000 and summary["tokens"]["output"] == 16 * 10000
            assert summary["ttft_ms"]["n"] == 10000  # every request streamed and was timed
            best = max(best, summary["throughput"]["requests_per_s"])
            if best >= REQUIRED_RPS:
                break
        assert best >= REQUIRED_RPS, f"best round: {best:.0f} streamed req/s"
