"""Gateway overhead: the gateway in front of a sim versus the sim directly, in the same run.

    python -m bench.overhead                       # starts a sim and `python -m gateway serve --upstream`
    python -m bench.overhead --gateway-cmd "python -m gateway serve --upstream {upstream} --port {port}"
    python -m bench.overhead --sim-only            # just the direct half (a baseline for the client)

Measures, with `switchyard bench`'s client, against a zero-latency sim (16 output tokens):
- added latency p50/p99 at concurrency 1: whole non-streamed response, and time to the first
  content chunk when streaming (gateway minus direct, rounds interleaved so drift hits both);
- the most requests per second at concurrency 32 (small non-streamed requests), best round of each.
The last line printed is a JSON summary.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

import numpy as np

from bench.loadgen import BenchOptions, RequestOptions, RequestRecord, run_benchmark
from bench.loadgen.processes import ManagedServer, free_port, sim_command
from gateway.sim.config import Distribution

DEFAULT_GATEWAY = f"{sys.executable} -m gateway serve --upstream {{upstream}} --port {{port}}"


def _opts(url: str, stream: bool, concurrency: int, requests: int, warmup: int) -> BenchOptions:
    request = RequestOptions(stream=stream, prompt_tokens=Distribution.fixed(8), output_tokens=Distribution.fixed(16))
    return BenchOptions(
        base_url=url + "/v1",
        request=request,
        concurrency=concurrency,
        requests=requests,
        warmup=warmup,
        progress=False,
        keep_records=True,
        duration_s=120.0,
    )


async def _records(
    url: str, stream: bool, concurrency: int, requests: int, warmup: int
) -> tuple[list[RequestRecord], dict[str, Any]]:
    report, records = await run_benchmark(_opts(url, stream, concurrency, requests, warmup))
    return records[0], report["steps"][0]["summary"]


def _pcts(values: list[float]) -> dict[str, float]:
    a = np.asarray(values) * 1000
    return {"p50": float(np.percentile(a, 50)), "p99": float(np.percentile(a, 99))}


async def measure(urls: dict[str, str], requests: int, rps_requests: int, rounds: int) -> dict[str, Any]:
    e2e: dict[str, list[float]] = {k: [] for k in urls}
    ttft: dict[str, list[float]] = {k: [] for k in urls}
    rps: dict[str, list[float]] = {k: [] for k in urls}
    errors: dict[str, int] = dict.fromkeys(urls, 0)
    for r in range(rounds):
        order = list(urls) if r % 2 == 0 else list(reversed(urls))
        for name in order:
            recs, s = await _records(urls[name], False, 1, requests, 20)
            e2e[name] += [x.e2e for x in recs if x.ok]
            errors[name] += s["requests"] - s["ok"]
            recs, s = await _records(urls[name], True, 1, requests, 20)
            ttft[name] += [x.ttft for x in recs if x.ok and x.ttft is not None]
            errors[name] += s["requests"] - s["ok"]
            _, s = await _records(urls[name], False, 32, rps_requests, 200)
            rps[name].append(s["throughput"]["requests_per_s"])
            errors[name] += s["requests"] - s["ok"]
    out: dict[str, Any] = {}
    for name in urls:
        out[name] = {
            "e2e_ms": _pcts(e2e[name]),
            "ttft_ms": _pcts(ttft[name]),
            "max_rps_c32": max(rps[name]),
            "rps_rounds": rps[name],
            "errors": errors[name],
        }
    if "gateway" in out:
        g, d = out["gateway"], out["direct"]
        out["added"] = {
            "e2e_p50_ms": g["e2e_ms"]["p50"] - d["e2e_ms"]["p50"],
            "e2e_p99_ms": g["e2e_ms"]["p99"] - d["e2e_ms"]["p99"],
            "first_chunk_p50_ms": g["ttft_ms"]["p50"] - d["ttft_ms"]["p50"],
            "first_chunk_p99_ms": g["ttft_ms"]["p99"] - d["ttft_ms"]["p99"],
            "rps_ratio_c32": g["max_rps_c32"] / d["max_rps_c32"],
        }
        a = out["added"]
        out["goals"] = {  # issue targets on a 2-core machine
            "added_p50_le_1ms": max(a["e2e_p50_ms"], a["first_chunk_p50_ms"]) <= 1.0,
            "added_p99_le_3ms": max(a["e2e_p99_ms"], a["first_chunk_p99_ms"]) <= 3.0,
            "gateway_ge_1000_rps": g["max_rps_c32"] >= 1000,
        }
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--gateway-cmd",
        default=DEFAULT_GATEWAY,
        help="command starting the gateway; {upstream} and {port} are filled in",
    )
    p.add_argument("--gateway-ready", default="/readyz", help="path that answers 200 once the gateway is up")
    p.add_argument("--sim-only", action="store_true", help="measure the direct path only")
    p.add_argument("--requests", type=int, default=1000, help="requests per round at concurrency 1")
    p.add_argument("--rps-requests", type=int, default=4000, help="requests per round at concurrency 32")
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args(argv)
    sim_port = free_port()
    with ManagedServer(sim_command(sim_port, "--output-tokens", "16", "--seed", "1"), sim_port) as sim:
        urls = {"direct": sim.url}
        if args.sim_only:
            result = _run(measure(urls, args.requests, args.rps_requests, args.rounds))
        else:
            gw_port = free_port()
            cmd = args.gateway_cmd.format(upstream=sim.url, port=gw_port)
            with ManagedServer(cmd, gw_port, ready_path=args.gateway_ready) as gw:
                urls["gateway"] = gw.url
                result = _run(measure(urls, args.requests, args.rps_requests, args.rounds))
    for name in urls:
        r = result[name]
        print(
            f"{name:8s} e2e p50 {r['e2e_ms']['p50']:.3f} ms p99 {r['e2e_ms']['p99']:.3f} ms | first chunk p50 "
            f"{r['ttft_ms']['p50']:.3f} ms p99 {r['ttft_ms']['p99']:.3f} ms | c=32 {r['max_rps_c32']:,.0f} req/s"
        )
    if "added" in result:
        a = result["added"]
        print(
            f"added    e2e p50 {a['e2e_p50_ms']:.3f} ms p99 {a['e2e_p99_ms']:.3f} ms | first chunk p50 "
            f"{a['first_chunk_p50_ms']:.3f} ms p99 {a['first_chunk_p99_ms']:.3f} ms | "
            f"throughput ratio {a['rps_ratio_c32']:.3f}"
        )
    print(json.dumps({"bench": "overhead", "requests": args.requests, "rounds": args.rounds, **result}))
    return 0


def _run(coro: Any) -> Any:
    try:
        import uvloop

        return uvloop.run(coro)
    except ImportError:
        return asyncio.run(coro)


if __name__ == "__main__":
    sys.exit(main())
