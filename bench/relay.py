"""The streaming relay: what it adds, and what hedging and admission buy, each against a baseline run
in the same process, on sims and gateways this script starts itself (cache, router and auth off,
so only the relay is measured).

    python -m bench.relay            # full: a few minutes
    python -m bench.relay --quick    # smoke: under a minute

1. overhead: streams at concurrency 1 from a sim directly and through the gateway, in alternating
   rounds so drift hits both. Added time to first content chunk (p50, p99); added gap between
   chunks on a paced stream (ITL 2 ms); and the relay's cost per chunk when chunks come back to back.
   Goals: ≤ 1 ms added TTFT and ≤ 0.2 ms per chunk at p50.
2. hedging: two sims, B with a heavy-tailed TTFT (5 % of requests 20× slower), the same seeded
   open-loop request sequence through a gateway with hedging and one without (sims reset to the
   same seeds). p99 TTFT, extra upstream requests (from the sims' /sim/stats) and hedges (from the
   gateway's /metrics). Goal: ≥ 3× lower p99 at ≤ 10 % extra upstream requests.
3. admission: a ramp of open-loop load, interactive and batch mixed, against a sim that serves
   `--max-concurrency` requests at once (the rest queue, so TTFT grows with load), through a gateway
   with a TTFT budget and one without (budget 10^6 s). Interactive p95 TTFT, batch refusals (503
   with Retry-After), goodput (requests per second within their class's TTFT SLO).

The last line printed is a JSON summary.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import random
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from time import perf_counter
from typing import Any

import numpy as np
import orjson
import yaml

from bench.loadgen.http import HttpError, Pool, render_request
from bench.loadgen.processes import ManagedServer, free_port, sim_command
from bench.loadgen.record import RequestRecord, SseObserver
from bench.loadgen.runner import PRIORITY_HEADER
from bench.loadgen.shapes import arrival_gaps
from bench.loadgen.summary import error_kind
from bench.loadgen.target import parse_target
from gateway.sim.cli import parse_distribution

__all__ = [
    "FULL",
    "QUICK",
    "Client",
    "Reply",
    "Scale",
    "added",
    "admission",
    "capacity_rps",
    "class_summary",
    "hedging",
    "main",
    "overhead",
    "pcts",
    "per_chunk",
    "ramp_schedule",
]

MODEL = "sim-model"
LEAN: dict[str, Any] = {"auth": {"mode": "none"}, "cache": {"enabled": False}, "router": {"enabled": False}}
MESSAGES = [{"role": "user", "content": "Tell me about the weather in three short sentences."}]
PARTS = ("overhead", "hedging", "admission")

# What each part asks of the sims (two processes, reconfigured live between parts through
# POST /sim/config, which also restarts their random draws from the seed).
OVERHEAD_SIM = {"ttft_ms": "0", "itl_ms": "2", "output_tokens": "16"}  # zero TTFT: the rest is overhead
BURST = {"itl_ms": 0, "output_tokens": 64}  # per-request sim override: chunks back to back
HEDGE_SIM = {"ttft_ms": "lognormal:100:0.25", "itl_ms": "5", "output_tokens": "8"}
HEDGE_TAIL = ",tail=0.05x20"  # backend B only: 5 % of first tokens 20× later
# Part 3: 4 generations at once; mean service ≈ 40 ms + 23 × 4 ms, so ≈ 30 requests/s of capacity.
ADMIT_SLOTS, ADMIT_TTFT_MS, ADMIT_SIGMA, ADMIT_ITL_MS, ADMIT_TOKENS = 4, 40.0, 0.2, 4.0, 24
ADMIT_SIM = {
    "ttft_ms": f"lognormal:{ADMIT_TTFT_MS:g}:{ADMIT_SIGMA:g}",
    "itl_ms": f"{ADMIT_ITL_MS:g}",
    "output_tokens": str(ADMIT_TOKENS),
}
INTERACTIVE_BUDGET_S = 0.5
SLO_S = {"interactive": INTERACTIVE_BUDGET_S, "batch": 10 * INTERACTIVE_BUDGET_S}
UNLIMITED_S = 1e6


@dataclass(frozen=True, slots=True)
class Scale:
    rounds: int  # part 1: rounds per target
    paced: int  # part 1: paced streams per round
    burst: int  # part 1: back-to-back streams per round
    warmup: int  # part 2: requests before measuring (the derived deadline needs 20 TTFTs)
    hedge_requests: int  # part 2: measured requests per arm
    hedge_rate: float  # part 2: requests per second
    ramp: tuple[float, ...]  # part 3: load steps as multiples of the sim's capacity
    step_s: float  # part 3: seconds per step


FULL = Scale(
    rounds=6, paced=100, burst=30, warmup=60, hedge_requests=800, hedge_rate=20.0, ramp=(0.4, 0.8, 1.2, 1.6), step_s=8.0
)
QUICK = Scale(
    rounds=2, paced=25, burst=8, warmup=25, hedge_requests=100, hedge_rate=30.0, ramp=(0.6, 1.2, 1.8), step_s=1.5
)


# -- pure helpers (numbers in, numbers out) ---------------------------------------------------


def pcts(values: Sequence[float], qs: Sequence[float] = (50, 99)) -> dict[str, float] | None:
    """Percentiles of seconds, in milliseconds: {"p50": …, "p99": …}; None without values."""
    if not values:
        return None
    a = np.percentile(np.asarray(values, dtype=float) * 1000.0, list(qs))
    return {f"p{q:g}": float(v) for q, v in zip(qs, a, strict=True)}


def added(gateway: dict[str, float] | None, direct: dict[str, float] | None) -> dict[str, float] | None:
    """Gateway minus direct, percentile by percentile."""
    if gateway is None or direct is None:
        return None
    return {k: gateway[k] - direct[k] for k in gateway if k in direct}


def per_chunk(chunk_times: Sequence[float]) -> float | None:
    """Seconds per chunk after the first: (last − first) / (chunks − 1)."""
    if len(chunk_times) < 2:
        return None
    return (chunk_times[-1] - chunk_times[0]) / (len(chunk_times) - 1)


def capacity_rps(slots: int, ttft_ms: float, sigma: float, itl_ms: float, tokens: int) -> float:
    """Requests per second a sim with `slots` generations at once finishes: slots / mean service time."""
    service_s = (ttft_ms * math.exp(sigma * sigma / 2) + (tokens - 1) * itl_ms) / 1000.0
    return slots / service_s


def ramp_schedule(
    rates: Sequence[float], step_s: float, interactive_share: float, seed: int
) -> list[tuple[float, int, str]]:
    """(send offset in seconds, step index, priority) for Poisson arrivals at each step's rate."""
    rng = random.Random(seed)
    out: list[tuple[float, int, str]] = []
    for step, rate in enumerate(rates):
        gaps = arrival_gaps(rate, "poisson", random.Random(seed + 1 + step))
        t = step * step_s + next(gaps)
        while t < (step + 1) * step_s:
            out.append((t, step, "interactive" if rng.random() < interactive_share else "batch"))
            t += next(gaps)
    return out


def class_summary(replies: Sequence[Reply], slo_s: float, wall_s: float) -> dict[str, Any]:
    """One priority class of a ramp: counts, refusals, TTFT of the answered ones, goodput."""
    recs = [r.record for r in replies]
    ok = [r for r in recs if r.ok and r.ttft is not None]
    refused = [r for r in replies if r.record.status == 503]
    good = sum(1 for r in ok if r.ttft is not None and r.ttft <= slo_s)
    return {
        "requests": len(recs),
        "ok": len(ok),
        "refused_503": len(refused),
        "refused_with_retry_after": sum(1 for r in refused if r.retry_after is not None),
        "other_errors": len(recs) - len(ok) - len(refused),
        "ttft_ms": pcts([r.ttft for r in ok if r.ttft is not None], (50, 95, 99)),
        "within_slo": good,
        "goodput_rps": good / wall_s if wall_s > 0 else 0.0,
    }


# -- load -------------------------------------------------------------------------------------


def _body(sim: dict[str, Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"model": MODEL, "messages": MESSAGES, "stream": True}
    if sim:
        body["sim"] = sim
    return body


@dataclass(slots=True)
class Reply:
    record: RequestRecord
    retry_after: float | None = None  # seconds, from a Retry-After header


class Client:
    """Keep-alive connections to one server, timing streams as `switchyard bench` does, but keeping
    the `Retry-After` header, which its runner drops and a shedding test needs."""

    def __init__(self, url: str):
        self.target = parse_target(url + "/v1")
        self.pool = Pool(self.target.host, self.target.port)

    async def one(self, body: dict[str, Any], priority: str | None = None, index: int = 0) -> Reply:
        """POST a streamed chat request; failures become `record.error`, never exceptions."""
        headers = {"content-type": "application/json"}
        if priority is not None:
            headers[PRIORITY_HEADER] = priority
        t = self.target
        data = render_request("POST", t.path("/chat/completions"), t.authority, headers, orjson.dumps(body))
        rec = RequestRecord(index=index, priority=priority, stream=True)
        observer = SseObserver(rec)
        rec.start = perf_counter()
        try:
            resp = await self.pool.request(data, observer, 60.0)
        except HttpError as exc:
            rec.end = perf_counter()
            rec.error = exc.kind
            return Reply(rec)
        rec.end = perf_counter()
        rec.status = resp.status
        retry_after = resp.headers.get(b"retry-after")
        if resp.status >= 400:
            rec.error = error_kind(resp.status)
            rec.chunk_times.clear()
            rec.ttft = None
        elif not observer.done and rec.error is None:
            rec.error = "incomplete_stream"
        return Reply(rec, _seconds(retry_after))

    async def open_loop(self, schedule: Sequence[tuple[float, str | None]], body: dict[str, Any]) -> list[Reply]:
        """Send at the scheduled offsets whatever the answers do (no coordinated omission)."""
        t0 = perf_counter()
        tasks = []
        for i, (at, priority) in enumerate(schedule):
            delay = t0 + at - perf_counter()
            if delay > 0.0005:
                await asyncio.sleep(delay)
            tasks.append(asyncio.ensure_future(self.one(body, priority, i)))
        return list(await asyncio.gather(*tasks))

    def close(self) -> None:
        self.pool.close()


def _seconds(value: bytes | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None  # an HTTP date: not something a gateway sends for these refusals


def poisson_offsets(n: int, rate: float, seed: int) -> list[float]:
    gaps = arrival_gaps(rate, "poisson", random.Random(seed))
    t, out = 0.0, []
    for _ in range(n):
        t += next(gaps)
        out.append(t)
    return out


def _chat_requests(sim_url: str) -> int:
    return int(get_json(sim_url + "/sim/stats")["requests"].get("/v1/chat/completions", 0))


# -- part 1: overhead -------------------------------------------------------------------------


class CpuMeter:
    """CPU a process spends on blocks of requests, per request (from /proc; empty elsewhere)."""

    def __init__(self, pid: int | None):
        self.pid = pid
        self.spent: dict[str, float] = {}
        self.count: dict[str, int] = {}

    @contextlib.contextmanager
    def block(self, kind: str, requests: int) -> Iterator[None]:
        before = cpu_seconds(self.pid) if self.pid else None
        yield
        after = cpu_seconds(self.pid) if self.pid else None
        if before is not None and after is not None:
            self.spent[kind] = self.spent.get(kind, 0.0) + after - before
            self.count[kind] = self.count.get(kind, 0) + requests

    def per_request_ms(self) -> dict[str, float]:
        return {k: 1000.0 * v / self.count[k] for k, v in self.spent.items() if self.count[k]}


async def overhead(
    direct_url: str, gateway_url: str, scale: Scale, pids: dict[str, int | None] | None = None
) -> dict[str, Any]:
    """Part 1; `pids` ("gateway", "sim") adds the CPU each process spends per request."""
    clients = {"direct": Client(direct_url), "gateway": Client(gateway_url)}
    # What each request costs the process that does the serving work: the gateway on its rounds (the
    # sim's share is the same both ways), the sim on the direct rounds, as a yardstick.
    meters = {"gateway": CpuMeter((pids or {}).get("gateway")), "direct": CpuMeter((pids or {}).get("sim"))}
    ttft: dict[str, list[float]] = {k: [] for k in clients}
    gaps: dict[str, list[float]] = {k: [] for k in clients}
    cost: dict[str, list[float]] = {k: [] for k in clients}
    errors = dict.fromkeys(clients, 0)
    paced, burst = _body(), _body(BURST)
    try:
        for c in clients.values():  # connections and first-use costs, not measured
            for _ in range(10):
                await c.one(paced)
                await c.one(burst)
        for r in range(scale.rounds):
            for name in list(clients) if r % 2 == 0 else list(reversed(clients)):
                c, meter = clients[name], meters[name]
                with meter.block("paced", scale.paced):
                    paced_recs = [(await c.one(paced)).record for _ in range(scale.paced)]
                with meter.block("back_to_back", scale.burst):
                    burst_recs = [(await c.one(burst)).record for _ in range(scale.burst)]
                for rec in paced_recs:
                    if not rec.ok or rec.ttft is None:
                        errors[name] += 1
                        continue
                    ttft[name].append(rec.ttft)
                    gaps[name].extend(rec.itls)
                for rec in burst_recs:
                    if not rec.ok or rec.ttft is None or (pc := per_chunk(rec.chunk_times)) is None:
                        errors[name] += 1
                        continue
                    ttft[name].append(rec.ttft)
                    cost[name].append(pc)
    finally:
        for c in clients.values():
            c.close()
    out: dict[str, Any] = {}
    for name in clients:
        out[name] = {
            "ttft_ms": pcts(ttft[name]),
            "paced_gap_ms": pcts(gaps[name]),
            "back_to_back_per_chunk_ms": pcts(cost[name]),
            "requests": len(ttft[name]),
            "errors": errors[name],
        }
    out["cpu_ms_per_request"] = {
        "gateway": meters["gateway"].per_request_ms(),
        "sim_direct": meters["direct"].per_request_ms(),
        "chunks_per_request": {"paced": int(OVERHEAD_SIM["output_tokens"]), "back_to_back": BURST["output_tokens"]},
    }
    g, d = out["gateway"], out["direct"]
    out["added"] = {
        "ttft_ms": added(g["ttft_ms"], d["ttft_ms"]),
        "paced_gap_ms": added(g["paced_gap_ms"], d["paced_gap_ms"]),
        "back_to_back_per_chunk_ms": added(g["back_to_back_per_chunk_ms"], d["back_to_back_per_chunk_ms"]),
    }
    a = out["added"]
    out["goals"] = {
        "ttft_p50_le_1ms": a["ttft_ms"] is not None and a["ttft_ms"]["p50"] <= 1.0,
        "paced_gap_p50_le_0_2ms": a["paced_gap_ms"] is not None and a["paced_gap_ms"]["p50"] <= 0.2,
        "back_to_back_per_chunk_p50_le_0_2ms": (
            a["back_to_back_per_chunk_ms"] is not None and a["back_to_back_per_chunk_ms"]["p50"] <= 0.2
        ),
    }
    return out


# -- part 2: hedging --------------------------------------------------------------------------


async def _hedge_arm(gw_url: str, sims: Sequence[str], scale: Scale, seed: int) -> dict[str, Any]:
    client = Client(gw_url)
    body = _body()
    try:
        for s in sims:
            post(s + "/sim/reset")
        warm = await client.open_loop(
            [(t, None) for t in poisson_offsets(scale.warmup, scale.hedge_rate, seed + 100)], body
        )
        for s in sims:
            post(s + "/sim/reset")  # both arms then see the same draws for the same sequence
        hedges0 = {o: metric_total(gw_url, "switchyard_hedges_total", outcome=o) for o in _OUTCOMES}
        wasted0 = metric_total(gw_url, "switchyard_hedge_wasted_tokens_total")
        schedule = [(t, None) for t in poisson_offsets(scale.hedge_requests, scale.hedge_rate, seed)]
        started = perf_counter()
        replies = await client.open_loop(schedule, body)
        wall = perf_counter() - started
    finally:
        client.close()
    upstream = [_chat_requests(s) for s in sims]
    recs = [r.record for r in replies]
    ttfts = [r.ttft for r in recs if r.ok and r.ttft is not None]
    warm_ttfts = [r.record.ttft for r in warm if r.record.ok and r.record.ttft is not None]
    hedges = {o: metric_total(gw_url, "switchyard_hedges_total", outcome=o) - hedges0[o] for o in _OUTCOMES}
    return {
        "requests": len(recs),
        "errors": len(recs) - len(ttfts),
        "wall_s": wall,
        "ttft_ms": {**(pcts(ttfts, (50, 95, 99)) or {}), "max": max(ttfts) * 1000.0} if ttfts else None,
        "warmup_ttft_p95_ms": pcts(warm_ttfts, (95,)),
        "upstream_requests": {"a": upstream[0], "b_tailed": upstream[1]},
        "extra_upstream": (sum(upstream) - len(recs)) / len(recs) if recs else 0.0,
        "hedges": {k: int(v) for k, v in hedges.items()},
        "hedge_wasted_chunks": int(metric_total(gw_url, "switchyard_hedge_wasted_tokens_total") - wasted0),
    }


_OUTCOMES = ("sent", "won", "over_budget", "no_backend")


async def hedging(
    gateways: dict[str, str], sims: Sequence[str], scale: Scale, seed: int, deadline: str, balancer: str
) -> dict[str, Any]:
    out: dict[str, Any] = {"balancer": balancer, "deadline": deadline, "rate_rps": scale.hedge_rate}
    for arm in ("no_hedge", "hedge"):
        out[arm] = await _hedge_arm(gateways[arm], sims, scale, seed)
    h, n = out["hedge"], out["no_hedge"]
    if h["ttft_ms"] and n["ttft_ms"]:
        out["p99_ratio"] = n["ttft_ms"]["p99"] / h["ttft_ms"]["p99"]
        out["goals"] = {
            "p99_3x_lower": out["p99_ratio"] >= 3.0,
            "extra_upstream_le_10pct": h["extra_upstream"] <= 0.10,
        }
    warm = h["warmup_ttft_p95_ms"]
    if deadline == "derived" and warm:
        # What the gateway derives (1.5 × recent p95, at least 0.25 s), estimated from the client side.
        out["deadline_s_estimate"] = max(0.25, 1.5 * warm["p95"] / 1000.0)
    return out


# -- part 3: admission ------------------------------------------------------------------------


async def _admission_arm(
    gw_url: str, sim_url: str, rates: Sequence[float], scale: Scale, share: float, seed: int
) -> dict[str, Any]:
    client = Client(gw_url)
    post(sim_url + "/sim/reset")
    try:
        await client.open_loop([(t, "interactive") for t in poisson_offsets(20, rates[0], seed + 7)], _body())
        plan = ramp_schedule(rates, scale.step_s, share, seed)
        started = perf_counter()
        replies = await client.open_loop([(t, p) for t, _, p in plan], _body())
        wall = perf_counter() - started
    finally:
        client.close()
    steps = []
    for i, rate in enumerate(rates):
        mine = [r for r, (_, step, _) in zip(replies, plan, strict=True) if step == i]
        inter = [r.record.ttft for r in mine if r.record.priority == "interactive" and r.record.ttft is not None]
        batch = [r for r in mine if r.record.priority == "batch"]
        steps.append(
            {
                "rate_rps": rate,
                "interactive_ttft_p95_ms": (pcts(inter, (95,)) or {}).get("p95"),
                "batch_refused": sum(1 for r in batch if r.record.status == 503),
                "batch_requests": len(batch),
            }
        )
    by_class = {p: class_summary([r for r in replies if r.record.priority == p], SLO_S[p], wall) for p in SLO_S}
    good = sum(c["within_slo"] for c in by_class.values())
    return {"wall_s": wall, **by_class, "goodput_rps": good / wall, "steps": steps}


async def admission(gateways: dict[str, str], sim_url: str, scale: Scale, seed: int, share: float) -> dict[str, Any]:
    cap = capacity_rps(ADMIT_SLOTS, ADMIT_TTFT_MS, ADMIT_SIGMA, ADMIT_ITL_MS, ADMIT_TOKENS)
    rates = [round(cap * f, 1) for f in scale.ramp]
    out: dict[str, Any] = {
        "capacity_rps": cap,
        "ramp_rps": rates,
        "step_s": scale.step_s,
        "interactive_share": share,
        "slo_s": SLO_S,
        "ttft_budget_s": {"interactive": INTERACTIVE_BUDGET_S, "batch_shed_at": INTERACTIVE_BUDGET_S * 0.5},
    }
    for arm in ("no_admission", "admission"):
        out[arm] = await _admission_arm(gateways[arm], sim_url, rates, scale, share, seed)
    a, n = out["admission"], out["no_admission"]
    ai, ni = a["interactive"]["ttft_ms"], n["interactive"]["ttft_ms"]
    if ai and ni:
        out["interactive_p95_ratio"] = ni["p95"] / ai["p95"]
        out["goals"] = {
            "interactive_p95_within_budget": ai["p95"] <= INTERACTIVE_BUDGET_S * 1000.0,
            "batch_refusals_carry_retry_after": a["batch"]["refused_503"] == a["batch"]["refused_with_retry_after"],
        }
    return out


# -- processes --------------------------------------------------------------------------------


def _gateway(backends: list[tuple[str, str]], relay: dict[str, Any], workdir: Path) -> ManagedServer:
    """A `python -m gateway serve --config` process with only the relay switched on (not started)."""
    port = free_port()
    config = {
        **LEAN,
        "backends": [{"name": n, "type": "openai", "base_url": url + "/v1", "models": [MODEL]} for n, url in backends],
        "relay": relay,
        "server": {"port": port, "state_dir": str(workdir / f"state-{port}"), "log_level": "warning"},
    }
    path = workdir / f"gateway-{port}.yaml"
    path.write_text(yaml.safe_dump(config))
    return ManagedServer([sys.executable, "-m", "gateway", "serve", "--config", str(path)], port, ready_path="/readyz")


def start_all(stack: contextlib.ExitStack, servers: Sequence[ManagedServer]) -> None:
    """Start `servers` in parallel (a gateway spends seconds importing); all stop when `stack` closes."""
    with ThreadPoolExecutor(max_workers=max(1, len(servers))) as pool:
        futures = [pool.submit(s.__enter__) for s in servers]
    for server in servers:
        stack.callback(server.stop)
    for f in futures:
        f.result()  # the first start-up failure, raised once every server is registered for stopping


def cpu_seconds(pid: int) -> float | None:
    """User plus system CPU time a process has used so far (Linux `/proc`; None elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


# Between phases, off every timed path: plain blocking HTTP to the sims' admin endpoints and /metrics.


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10.0) as resp:
        return json.loads(resp.read())


def post(url: str, body: bytes = b"{}") -> None:
    req = urllib.request.Request(url, data=body, headers={"content-type": "application/json"}, method="POST")
    with urllib.request.urlopen(req, timeout=10.0) as resp:
        resp.read()


def metric_total(url: str, name: str, **labels: str) -> float:
    """The sum of `name`'s samples whose labels include `labels`, from `url`'s /metrics."""
    with urllib.request.urlopen(url + "/metrics", timeout=10.0) as resp:
        text = resp.read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith((name + "{", name + " ")):
            head, _, value = line.rpartition(" ")
            if all(f'{k}="{v}"' in head for k, v in labels.items()):
                total += float(value)
    return total


def configure_sim(url: str, profile: dict[str, str], seed: int, slots: int | None = None) -> None:
    """Give a running sim `profile` (distribution specs as on its command line) and a fresh seed."""
    patch: dict[str, Any] = {k: parse_distribution(v) for k, v in profile.items()}
    patch |= {"seed": seed, "max_concurrency": slots}
    post(url + "/sim/config", json.dumps(patch).encode())


def _sim() -> ManagedServer:
    port = free_port()
    return ManagedServer(sim_command(port, "--log-level", "warning"), port)


def _revision() -> str | None:
    """The commit the gateway runs from, `+dirty` when gateway/ differs from it (a shared checkout)."""
    root = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "gateway"], cwd=root, capture_output=True, text=True)
    except OSError:
        return None
    if head.returncode != 0:
        return None
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def _pid(server: ManagedServer) -> int | None:
    return server.proc.pid if server.proc is not None else None


def _run(coro: Any) -> Any:
    try:
        import uvloop

        return uvloop.run(coro)
    except ImportError:
        return asyncio.run(coro)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="a short smoke run (under a minute)")
    p.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument(
        "--deadline",
        default="derived",
        help="part 2: 'derived' (1.5 × recent p95 TTFT, the default a user gets) or fixed seconds",
    )
    p.add_argument(
        "--balancer",
        default="least_outstanding",
        choices=("least_outstanding", "ttft"),
        help="part 2: how the gateway spreads requests over the two backends",
    )
    p.add_argument("--interactive-share", type=float, default=0.5, help="part 3: share of interactive requests")
    args = p.parse_args(argv)
    parts = [x.strip() for x in args.parts.split(",") if x.strip()]
    unknown = set(parts) - set(PARTS)
    if unknown:
        p.error(f"unknown parts: {', '.join(sorted(unknown))}")
    scale = QUICK if args.quick else FULL
    relay_hedge: dict[str, Any] = {"balancer": args.balancer}
    if args.deadline != "derived":
        relay_hedge["first_token_deadline"] = float(args.deadline)
    unlimited = {"interactive": UNLIMITED_S, "batch": UNLIMITED_S}
    load_before = os.getloadavg()
    seconds: dict[str, float] = {}
    result: dict[str, Any] = {"bench": "relay", "quick": args.quick, "seed": args.seed, "parts": parts}
    result["revision"] = _revision()
    with tempfile.TemporaryDirectory(prefix="relay-bench-") as tmp, contextlib.ExitStack() as stack:
        work = Path(tmp)
        t = perf_counter()
        # Few processes: each gateway spends a second of CPU importing, on a machine that may be busy.
        sims = {"a": _sim()} | ({"b": _sim()} if "hedging" in parts else {})
        start_all(stack, list(sims.values()))
        a = sims["a"].url
        gws: dict[str, ManagedServer] = {}
        if "overhead" in parts or "admission" in parts:
            # Defaults but an unbounded TTFT budget: part 1's gateway and part 3's baseline (part 1's
            # sim answers at once, so no budget could shed there anyway).
            gws["open"] = _gateway([("a", a)], {"ttft_budget": unlimited}, work)
        if "hedging" in parts:
            two = [("a", a), ("b", sims["b"].url)]
            gws["hedge"] = _gateway(two, {**relay_hedge, "hedge": True}, work)
            gws["no_hedge"] = _gateway(two, {**relay_hedge, "hedge": False}, work)
        if "admission" in parts:
            budget = {"interactive": INTERACTIVE_BUDGET_S, "batch": 60.0}
            gws["admission"] = _gateway([("a", a)], {"ttft_budget": budget}, work)
        start_all(stack, list(gws.values()))
        seconds["start"] = perf_counter() - t
        urls = {k: g.url for k, g in gws.items()}
        if "overhead" in parts:
            t = perf_counter()
            configure_sim(a, OVERHEAD_SIM, args.seed)
            pids = {"gateway": _pid(gws["open"]), "sim": _pid(sims["a"])}
            result["overhead"] = _run(overhead(a, urls["open"], scale, pids))
            seconds["overhead"] = perf_counter() - t
            _print_overhead(result["overhead"])
        if "hedging" in parts:
            t = perf_counter()
            b = sims["b"].url
            configure_sim(a, HEDGE_SIM, args.seed + 1)
            configure_sim(b, {**HEDGE_SIM, "ttft_ms": HEDGE_SIM["ttft_ms"] + HEDGE_TAIL}, args.seed + 2)
            result["hedging"] = _run(hedging(urls, [a, b], scale, args.seed, args.deadline, args.balancer))
            seconds["hedging"] = perf_counter() - t
            _print_hedging(result["hedging"])
        if "admission" in parts:
            t = perf_counter()
            configure_sim(a, ADMIT_SIM, args.seed + 3, slots=ADMIT_SLOTS)
            arms = {"admission": urls["admission"], "no_admission": urls["open"]}
            result["admission"] = _run(admission(arms, a, scale, args.seed, args.interactive_share))
            seconds["admission"] = perf_counter() - t
            _print_admission(result["admission"])
    result["seconds"] = seconds
    result["loadavg"] = {"before": list(load_before), "after": list(os.getloadavg())}
    print(json.dumps(result))
    return 0


# -- human-readable lines before the JSON -----------------------------------------------------


def _fmt(d: dict[str, float] | None, key: str) -> str:
    return "n/a" if d is None else f"{d[key]:.3f}"


def _print_overhead(o: dict[str, Any]) -> None:
    a = o["added"]
    print(
        f"overhead: added TTFT p50 {_fmt(a['ttft_ms'], 'p50')} ms p99 {_fmt(a['ttft_ms'], 'p99')} ms | "
        f"added paced gap p50 {_fmt(a['paced_gap_ms'], 'p50')} ms p99 {_fmt(a['paced_gap_ms'], 'p99')} ms | "
        f"back-to-back per chunk p50 {_fmt(a['back_to_back_per_chunk_ms'], 'p50')} ms "
        f"(direct TTFT p50 {_fmt(o['direct']['ttft_ms'], 'p50')} ms, gateway {_fmt(o['gateway']['ttft_ms'], 'p50')} ms)"
    )


def _print_hedging(h: dict[str, Any]) -> None:
    for arm in ("no_hedge", "hedge"):
        x = h[arm]
        t = x["ttft_ms"] or {}
        print(
            f"hedging {arm:8s}: TTFT p50 {t.get('p50', float('nan')):.1f} p99 {t.get('p99', float('nan')):.1f} "
            f"max {t.get('max', float('nan')):.1f} ms | upstream {x['upstream_requests']} "
            f"(+{x['extra_upstream']:.1%}) | hedges {x['hedges']} | errors {x['errors']}"
        )
    if "p99_ratio" in h:
        print(f"hedging: p99 {h['p99_ratio']:.2f}× lower with hedging ({h['deadline']} deadline, {h['balancer']})")


def _print_admission(a: dict[str, Any]) -> None:
    print(f"admission: capacity ≈ {a['capacity_rps']:.1f} req/s, ramp {a['ramp_rps']} req/s × {a['step_s']:g} s")
    for arm in ("no_admission", "admission"):
        x = a[arm]
        i, b = x["interactive"], x["batch"]
        print(
            f"admission {arm:12s}: interactive p95 {_fmt(i['ttft_ms'], 'p95')} ms (refused {i['refused_503']}) | "
            f"batch p95 {_fmt(b['ttft_ms'], 'p95')} ms, refused {b['refused_503']}/{b['requests']} "
            f"({b['refused_with_retry_after']} with Retry-After) | goodput {x['goodput_rps']:.1f} req/s | "
            "interactive p95 by step "
            + ", ".join(
                "n/a" if s["interactive_ttft_p95_ms"] is None else f"{s['interactive_ttft_p95_ms']:.0f}"
                for s in x["steps"]
            )
        )


if __name__ == "__main__":
    sys.exit(main())
