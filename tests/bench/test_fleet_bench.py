"""bench/fleet.py: the traffic has the same shape for every balancer and different words, and the
script runs end to end (against two sims here; the figures come from vLLM replicas)."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path

from bench.fleet import workload
from bench.vllm_cpu import MODEL_NAME
from tests.support.processes import REPO
from tests.support.stack import start_sim


def test_every_balancer_gets_traffic_of_one_shape_with_its_own_words() -> None:
    a, b = workload(6, 3, 0.5, 7, 1), workload(6, 3, 0.5, 7, 2)
    assert [c.arrival for c in a] == [c.arrival for c in b]
    assert [c.output_tokens for c in a] == [c.output_tokens for c in b]
    assert [len(t.split()) for c in a for t in c.turns] == [len(t.split()) for c in b for t in c.turns]
    assert all(x.system != y.system for x, y in zip(a, b, strict=True))
    assert all(len(c.system.split()) > 700 for c in a)  # about 1,000 tokens of prefix
    gaps = [later.arrival - earlier.arrival for earlier, later in itertools.pairwise(a)]
    assert all(g > 0 for g in gaps) and len(set(gaps)) == len(gaps)  # Poisson: no fixed spacing


def test_fleet_bench_runs_end_to_end(tmp_path: Path) -> None:
    sims = [start_sim("--models", MODEL_NAME, "--ttft-ms", "5", log_dir=tmp_path, name=f"s{i}") for i in range(2)]
    try:
        done = subprocess.run(
            [sys.executable, "-m", "bench.fleet", "--urls", ",".join(s.url for s in sims),
             "--conversations", "4", "--turns", "2", "--rate", "20"],
            cwd=REPO, capture_output=True, text=True, timeout=240, check=False,
        )
    finally:
        for sim in sims:
            sim.stop()
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert [r["balancer"] for r in summary["results"]] == ["prefix", "least_outstanding", "round_robin"]
    for result in summary["results"]:
        assert result["requests"] == 8 and result["errors"] == {}, result
    decisions = summary["results"][0]["decisions"]  # one per request, the first ones cold
    assert sum(decisions.values()) == 8 and decisions["cold"] >= 1 and decisions["affinity"] >= 1, decisions
