"""Gateway overhead: the gateway in front of a sim versus the sim directly, in the same run.

    python -m bench.overhead                       # starts a sim and `python -m gateway serve --upstream`
    python -m bench.overhead --gateway-cmd "python -m gateway serve --upstream {upstream} --port {port}"
    python -m bench.overhead --sim-only            # just the direct half (a baseline for the client)
    python -m bench.overhead --tracing             # also the same gateway tracing every request
    python -m bench.overhead --baseline-cmd "..."  # also another gateway (an older checkout, say)
    python -m bench.overhead --spend               # also a gateway with keys, budgets and spend on (Redis)
    python -m bench.overhead --spend --spend-baseline-cmd "..."  # ... and another such gateway ({config}, {port})

Measures, with `switchyard bench`'s client, against a zero-latency sim (16 output tokens):
- added latency p50/p99 at concurrency 1: whole non-streamed response, and time to the first
  content chunk when streaming (gateway minus direct, rounds interleaved so drift hits both);
- the most requests per second at concurrency 32 (small non-streamed requests), best round of each.

With `--tracing` a third target is the same gateway with every request's spans exported (100 %
sampling, OTLP/HTTP to `bench.otlp_sink` in its own process); `tracing_added` is what that adds
over the gateway with tracing off. With `--baseline-cmd` another gateway is measured too and
`off_vs_baseline` is what the plain gateway adds over it. With `--spend` another target runs in
the same rounds: a gateway whose client key was made with the admin API and carries key, team and
tenant budgets (daily, far from reached), prices on, the ledger writing to a Redis stream,
everything in the Redis at `--redis` under a prefix of its own; `added_spend` is what it adds over
the sim; `--spend-baseline-cmd` adds another gateway on its own such configuration, and
`spend_vs_baseline` is what the spend gateway adds over it. The last line printed is a JSON summary.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import secrets
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import yaml

from bench.loadgen import BenchOptions, RequestOptions, RequestRecord, run_benchmark
from bench.loadgen.processes import ManagedServer, free_port, sim_command
from bench.measure import percentiles_ms, run_loop
from sim.config import Distribution

DEFAULT_GATEWAY = f"{sys.executable} -m gateway serve --upstream {{upstream}} --port {{port}}"
SPEND_GATEWAY = f"{sys.executable} -m gateway serve --config {{config}} --port {{port}}"


def _opts(
    url: str, stream: bool, concurrency: int, requests: int, warmup: int, headers: dict[str, str] | None = None
) -> BenchOptions:
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
        headers=headers or {},
    )


async def _records(
    url: str, stream: bool, concurrency: int, requests: int, warmup: int, headers: dict[str, str] | None = None
) -> tuple[list[RequestRecord], dict[str, Any]]:
    report, records = await run_benchmark(_opts(url, stream, concurrency, requests, warmup, headers))
    return records[0], report["steps"][0]["summary"]


async def measure(
    urls: dict[str, str],
    requests: int,
    rps_requests: int,
    rounds: int,
    headers: dict[str, dict[str, str]] | None = None,
) -> dict[str, Any]:
    headers = headers or {}
    e2e: dict[str, list[float]] = {k: [] for k in urls}
    ttft: dict[str, list[float]] = {k: [] for k in urls}
    rps: dict[str, list[float]] = {k: [] for k in urls}
    errors: dict[str, int] = dict.fromkeys(urls, 0)
    for r in range(rounds):
        order = list(urls) if r % 2 == 0 else list(reversed(urls))
        for name in order:
            h = headers.get(name)
            recs, s = await _records(urls[name], False, 1, requests, 20, h)
            e2e[name] += [x.e2e for x in recs if x.ok]
            errors[name] += s["requests"] - s["ok"]
            recs, s = await _records(urls[name], True, 1, requests, 20, h)
            ttft[name] += [x.ttft for x in recs if x.ok and x.ttft is not None]
            errors[name] += s["requests"] - s["ok"]
            _, s = await _records(urls[name], False, 32, rps_requests, 200, h)
            rps[name].append(s["throughput"]["requests_per_s"])
            errors[name] += s["requests"] - s["ok"]
    out: dict[str, Any] = {}
    for name in urls:
        out[name] = {
            "e2e_ms": percentiles_ms(e2e[name]),
            "ttft_ms": percentiles_ms(ttft[name]),
            "max_rps_c32": max(rps[name]),
            "rps_rounds": rps[name],
            "errors": errors[name],
        }
    if "gateway_traced" in out:
        out["tracing_added"] = _added(out["gateway_traced"], out["gateway"])
        out["goals"] = {
            "tracing_added_p50_le_0.1ms": max(
                out["tracing_added"]["e2e_p50_ms"], out["tracing_added"]["first_chunk_p50_ms"]
            )
            <= 0.1
        }
    if "baseline" in out:
        out["off_vs_baseline"] = _added(out["gateway"], out["baseline"])
    if "gateway" in out:
        g, d = out["gateway"], out["direct"]
        a = out["added"] = _added(g, d)
        out["goals"] = {  # issue targets on a 2-core machine
            **out.get("goals", {}),
            "added_p50_le_1ms": max(a["e2e_p50_ms"], a["first_chunk_p50_ms"]) <= 1.0,
            "added_p99_le_3ms": max(a["e2e_p99_ms"], a["first_chunk_p99_ms"]) <= 3.0,
            "gateway_ge_1000_rps": g["max_rps_c32"] >= 1000,
        }
    if "spend" in out:
        a = out["added_spend"] = _added(out["spend"], out["direct"])
        out.setdefault("goals", {})["spend_added_p50_le_0.35ms"] = max(a["e2e_p50_ms"], a["first_chunk_p50_ms"]) <= 0.35
    if "spend_baseline" in out:
        out["spend_vs_baseline"] = _added(out["spend"], out["spend_baseline"])
    return out


def _added(a: dict[str, Any], b: dict[str, Any]) -> dict[str, float]:
    """What target `a` adds over target `b`."""
    return {
        "e2e_p50_ms": a["e2e_ms"]["p50"] - b["e2e_ms"]["p50"],
        "e2e_p99_ms": a["e2e_ms"]["p99"] - b["e2e_ms"]["p99"],
        "first_chunk_p50_ms": a["ttft_ms"]["p50"] - b["ttft_ms"]["p50"],
        "first_chunk_p99_ms": a["ttft_ms"]["p99"] - b["ttft_ms"]["p99"],
        "rps_ratio_c32": a["max_rps_c32"] / b["max_rps_c32"],
    }


@contextlib.contextmanager
def _spend_config(upstream: str, redis_url: str, admin_key: str) -> Iterator[Path]:
    """A gateway configuration like `serve --upstream` (no auth aside), plus keys in Redis, budgets,
    prices and a Redis-stream ledger, under a Redis prefix of this run's own."""
    from gateway.auth import hash_key

    config = {
        "auth": {"mode": "keys"},
        "admin": {"key_sha256": hash_key(admin_key)},
        "redis": {"url": redis_url, "key_prefix": f"switchyard-bench-{secrets.token_hex(4)}:"},
        "cache": {"store": "memory"},  # as in the plain gateway: only keys, budgets and spend differ
        "backends": [{"name": "upstream-1", "type": "openai", "base_url": upstream + "/v1"}],
        "spend": {"enabled": True, "ledger": {"sink": "redis", "stream_maxlen": 100_000}},
    }
    with tempfile.TemporaryDirectory(prefix="switchyard-bench-") as tmp:
        path = Path(tmp) / "spend.yaml"
        path.write_text(yaml.safe_dump(config))
        yield path


def _spend_key(url: str, admin_key: str) -> str:
    """A client key with key, team and tenant budgets that the benchmark never reaches."""
    admin = httpx.Client(base_url=url, headers={"authorization": f"Bearer {admin_key}"}, timeout=10)
    with admin:
        budget = {"amount_usd": 1e6, "period": "daily"}
        made = admin.post("/admin/keys", json={"tenant": "bench", "team": "load", "budget": budget})
        made.raise_for_status()
        admin.put("/admin/tenants/bench/teams/load/budget", json=budget).raise_for_status()
        admin.put("/admin/tenants/bench/budget", json={**budget, "period": "monthly"}).raise_for_status()
        return str(made.json()["key"])


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
    p.add_argument("--tracing", action="store_true", help="also the gateway exporting every request's spans")
    p.add_argument("--baseline-cmd", help="also this gateway command ({upstream} and {port} filled in)")
    p.add_argument("--spend", action="store_true", help="also measure a gateway with keys, budgets and spend on")
    p.add_argument("--redis", default="redis://127.0.0.1:6379/0", help="the Redis that --spend uses")
    p.add_argument(
        "--spend-baseline-cmd", help="with --spend, also this gateway command on its own spend configuration "
        "({config} and {port} filled in)",
    )  # fmt: skip
    args = p.parse_args(argv)
    sim_port = free_port()
    with contextlib.ExitStack() as servers:
        sim = servers.enter_context(
            ManagedServer(sim_command(sim_port, "--output-tokens", "16", "--seed", "1"), sim_port)
        )
        urls = {"direct": sim.url}
        headers: dict[str, dict[str, str]] = {}
        if not args.sim_only:
            urls["gateway"] = _gateway(servers, args.gateway_cmd, sim.url, args.gateway_ready)
            if args.baseline_cmd:
                urls["baseline"] = _gateway(servers, args.baseline_cmd, sim.url, args.gateway_ready)
            if args.tracing:
                sink_port = free_port()
                sink = servers.enter_context(
                    ManagedServer([sys.executable, "-m", "bench.otlp_sink", "--port", str(sink_port)], sink_port)
                )
                env = {
                    "OTEL_EXPORTER_OTLP_ENDPOINT": sink.url,
                    "OTEL_TRACES_SAMPLER": "always_on",
                    "OTEL_BSP_SCHEDULE_DELAY": "200",
                }
                urls["gateway_traced"] = _gateway(servers, args.gateway_cmd, sim.url, args.gateway_ready, env)
            spend_targets = {"spend": SPEND_GATEWAY} if args.spend else {}
            if args.spend and args.spend_baseline_cmd:
                spend_targets["spend_baseline"] = args.spend_baseline_cmd
            for name, template in spend_targets.items():
                admin_key = "sk-bench-admin-" + secrets.token_hex(8)
                config = servers.enter_context(_spend_config(sim.url, args.redis, admin_key))
                urls[name] = _gateway(servers, template.format(config=config, port="{port}"), sim.url, "/readyz")
                headers[name] = {"authorization": f"Bearer {_spend_key(urls[name], admin_key)}"}
        result = run_loop(measure(urls, args.requests, args.rps_requests, args.rounds, headers))
        if args.tracing:
            result["gateway_traced"]["spans_received"] = httpx.get(sink.url + "/stats").json()["spans"]
            scraped = httpx.get(urls["gateway_traced"] + "/metrics").text
            result["gateway_traced"]["spans_dropped"] = sum(
                float(line.rsplit(" ", 1)[1])
                for line in scraped.splitlines()
                if line.startswith("switchyard_trace_spans_dropped_total{")
            )
    for name in urls:
        r = result[name]
        print(
            f"{name:8s} e2e p50 {r['e2e_ms']['p50']:.3f} ms p99 {r['e2e_ms']['p99']:.3f} ms | first chunk p50 "
            f"{r['ttft_ms']['p50']:.3f} ms p99 {r['ttft_ms']['p99']:.3f} ms | c=32 {r['max_rps_c32']:,.0f} req/s"
        )
    for key in ("tracing_added", "off_vs_baseline", "added_spend", "spend_vs_baseline"):
        if key in result:
            a = result[key]
            print(
                f"{key}: e2e p50 {a['e2e_p50_ms']:+.3f} ms p99 {a['e2e_p99_ms']:+.3f} ms | first chunk p50 "
                f"{a['first_chunk_p50_ms']:+.3f} ms p99 {a['first_chunk_p99_ms']:+.3f} ms | "
                f"throughput ratio {a['rps_ratio_c32']:.3f}"
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


def _gateway(
    servers: contextlib.ExitStack, cmd: str, upstream: str, ready: str, env: dict[str, str] | None = None
) -> str:
    port = free_port()
    server = ManagedServer(cmd.format(upstream=upstream, port=port), port, ready_path=ready, timeout_s=180, env=env)
    return str(servers.enter_context(server).url)


if __name__ == "__main__":
    sys.exit(main())
