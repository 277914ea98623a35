"""The benchmark scripts built on the generator run end to end and end with one JSON line."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.support.processes import REPO


def last_json(cmd: list[str]) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-m", *cmd], cwd=REPO, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def test_overhead_direct_half() -> None:
    out = last_json(["bench.overhead", "--sim-only", "--requests", "30", "--rps-requests", "300", "--rounds", "1"])
    direct = out["direct"]
    assert isinstance(direct, dict) and direct["errors"] == 0 and direct["max_rps_c32"] > 0
    assert 0 < direct["ttft_ms"]["p50"] < 50


def test_crosscheck_without_guidellm_reports_ours_against_the_configuration() -> None:
    out = last_json(["bench.crosscheck", "--requests", "20", "--ttft-ms", "10", "--itl-ms", "2"])
    ours = out["switchyard_bench"]
    assert isinstance(ours, dict) and "guidellm" not in out
    assert 10 <= ours["ttft_p50_ms"] < 20 and 1.5 <= ours["itl_mean_ms"] < 3


def test_messages_translation_reports_the_added_cost_per_chunk() -> None:
    out = last_json(["bench.messages_translation", "--chunks", "32", "--rounds", "3"])
    assert out["bench"] == "messages_translation"
    for key in ("native_us_per_chunk", "translated_us_per_chunk", "reverse_us_per_event"):
        value = out[key]
        assert isinstance(value, float) and value > 0
    assert isinstance(out["added_ms_per_chunk"], float) and out["added_ms_per_chunk"] < 0.05  # issue 14's bound
