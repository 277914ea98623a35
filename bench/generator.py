"""Is the load generator the bottleneck? Its ceiling and its own share of measured TTFT.

    python -m bench.generator

Against a sim started here (zero latency, 16 streamed output tokens, 32-token prompts):
1. TTFT floor: concurrency 1 against a zero-TTFT sim. Everything measured is overhead (client,
   loopback, sim), an upper bound on what the generator adds to any TTFT it reports.
2. TTFT bias: concurrency 1 against a sim with a fixed 20 ms TTFT; measured p50 minus 20 ms.
3. Ceiling: the most streamed requests per second, closed loop at concurrency 64 (best of rounds),
   and in an open loop at a fixed rate with the generator's send lag (how late it sent).
The last line printed is a JSON summary.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from bench.loadgen import BenchOptions, RequestOptions, run
from bench.loadgen.processes import ManagedServer, free_port, sim_command
from sim.config import Distribution


def _summary(url: str, **kw: Any) -> dict[str, Any]:
    request = RequestOptions(prompt_tokens=Distribution.fixed(32), output_tokens=Distribution.fixed(1000))
    report, _ = run(BenchOptions(base_url=url + "/v1", request=request, progress=False, duration_s=60.0, **kw))
    return dict(report["steps"][0]["summary"])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--requests", type=int, default=20000, help="requests per ceiling round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--rate", type=float, default=2000.0, help="open-loop rate to hold")
    p.add_argument("--sim-workers", type=int, default=1)
    args = p.parse_args(argv)
    out: dict[str, Any] = {"bench": "generator"}
    port = free_port()
    flags = ["--output-tokens", "16", "--workers", str(args.sim_workers)]
    with ManagedServer(sim_command(port, *flags), port) as sim:
        floor = _summary(sim.url, concurrency=1, requests=2000, warmup=100)
        out["ttft_floor_ms"] = {k: floor["ttft_ms"][k] for k in ("p50", "p90", "p99")}
        rounds = [_summary(sim.url, concurrency=64, requests=args.requests, warmup=500) for _ in range(args.rounds)]
        out["closed_loop_streamed_rps"] = [r["throughput"]["requests_per_s"] for r in rounds]
        out["closed_loop_errors"] = sum(r["requests"] - r["ok"] for r in rounds)
        s = _summary(sim.url, rate=args.rate, requests=int(args.rate * 5), warmup=500)
        out["open_loop"] = {
            "offered_rps": args.rate,
            "achieved_rps": s["throughput"]["requests_per_s"],
            "send_lag_ms": {k: s["send_lag_ms"][k] for k in ("p50", "p99")},
            "errors": s["requests"] - s["ok"],
        }
    port = free_port()
    with ManagedServer(sim_command(port, "--output-tokens", "16", "--ttft-ms", "20"), port) as sim:
        biased = _summary(sim.url, concurrency=1, requests=500, warmup=20)
        out["ttft_bias_at_20ms_ms"] = {k: biased["ttft_ms"][k] - 20.0 for k in ("p50", "p90", "p99")}
    out["closed_loop_best_rps"] = max(out["closed_loop_streamed_rps"])
    print(
        f"TTFT floor (c=1, zero-latency sim): p50 {out['ttft_floor_ms']['p50']:.3f} ms, "
        f"p99 {out['ttft_floor_ms']['p99']:.3f} ms"
    )
    print(
        f"TTFT bias vs a 20 ms sim: p50 +{out['ttft_bias_at_20ms_ms']['p50']:.3f} ms, "
        f"p99 +{out['ttft_bias_at_20ms_ms']['p99']:.3f} ms"
    )
    print("closed loop c=64, streamed: " + ", ".join(f"{v:,.0f}" for v in out["closed_loop_streamed_rps"]) + " req/s")
    ol = out["open_loop"]
    print(
        f"open loop {ol['offered_rps']:,.0f}/s offered: {ol['achieved_rps']:,.0f} req/s, send lag p50 "
        f"{ol['send_lag_ms']['p50']:.2f} ms p99 {ol['send_lag_ms']['p99']:.2f} ms"
    )
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
