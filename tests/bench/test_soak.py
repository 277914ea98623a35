"""The soak benchmark's smoke run: half a minute of the full mix against a real stack, ending with
its JSON summary. (The long run is `python -m bench.soak`, 30 minutes by default.)"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from bench.soak import growth
from tests.support.processes import REPO

pytestmark = [pytest.mark.slow, pytest.mark.model, pytest.mark.redis]

KINDS = {"cacheable", "chat", "tools", "engine", "completions", "embeddings", "abandoned", "fault"}


def test_a_short_soak_serves_the_whole_mix_and_reports_memory_and_latency() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench.soak", "--minutes", "0.5", "--rps", "12", "--sample-seconds", "1"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["requests"] > 100
    assert set(summary["by_kind"]) == KINDS
    assert summary["unexpected_errors"] == 0, summary["unexpected_examples"]
    for kind in KINDS - {"abandoned", "fault"}:
        assert summary["by_kind"][kind].get("ok", 0) > 0, kind
    # Clear errors, as asked for: the backend's, or its open circuit's.
    assert set(summary["by_kind"]["fault"]) <= {"error_status:502", "error_status:503", "error_event"}
    gateway = summary["gateway"]
    assert gateway["cache_hits"] > 0 and gateway["router_narrowed"] > 0 and gateway["client_cancellations"] > 0
    memory = summary["memory_gateway"]
    assert 0 < memory["start_mb"] <= memory["max_mb"] and isinstance(memory["growth_pct_per_hour"], float)
    assert summary["latency"]["p99_first_s"] > 0 and summary["latency"]["p99_drift"] is not None


def test_growth_is_the_post_warm_up_slope_per_hour() -> None:
    flat = [(t, 100.0) for t in range(0, 600, 10)]
    assert growth(flat, 60)["growth_pct_per_hour"] == 0.0
    # Warm-up climbs to 100 MB, then 1 MB a minute: 60 MB an hour, 60 % of the post-warm-up start.
    rising = [(t, 50.0 + t) if t < 50 else (t, 100.0 + (t - 60) / 60) for t in range(0, 3600, 10)]
    out = growth(rising, 60)
    assert out["slope_mb_per_hour"] == pytest.approx(60.0, rel=0.01)
    assert out["growth_pct_per_hour"] == pytest.approx(60.0 * 100 / out["start_mb"], rel=0.01)
    assert out["max_mb"] == pytest.approx(max(m for _, m in rising), abs=0.05)
