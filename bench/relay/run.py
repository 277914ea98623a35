"""`python -m bench.relay`: starts the sims and gateways, runs the parts asked for, prints a line per
part and the JSON summary last."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
from pathlib import Path
from time import perf_counter
from typing import Any

import yaml

from bench.loadgen.processes import ManagedServer, free_port, sim_command, start_all
from bench.measure import post, revision, run_loop
from bench.relay.admission import ADMIT_SIM, ADMIT_SLOTS, INTERACTIVE_BUDGET_S, admission
from bench.relay.hedging import HEDGE_SIM, HEDGE_TAIL, hedging
from bench.relay.load import FULL, MODEL, QUICK
from bench.relay.overhead import OVERHEAD_SIM, overhead
from sim.cli import parse_distribution

__all__ = ["configure_sim", "gateway", "main"]

LEAN: dict[str, Any] = {"auth": {"mode": "none"}, "cache": {"enabled": False}, "router": {"enabled": False}}
PARTS = ("overhead", "hedging", "admission")
UNLIMITED_S = 1e6


def gateway(backends: list[tuple[str, str]], relay: dict[str, Any], workdir: Path) -> ManagedServer:
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


def configure_sim(url: str, profile: dict[str, str], seed: int, slots: int | None = None) -> None:
    """Give a running sim `profile` (distribution specs as on its command line) and a fresh seed."""
    patch: dict[str, Any] = {k: parse_distribution(v) for k, v in profile.items()}
    patch |= {"seed": seed, "max_concurrency": slots}
    post(url + "/sim/config", json.dumps(patch).encode())


def _sim() -> ManagedServer:
    port = free_port()
    return ManagedServer(sim_command(port, "--log-level", "warning"), port)


def _pid(server: ManagedServer) -> int | None:
    return server.proc.pid if server.proc is not None else None


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
    result["revision"] = revision()
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
            gws["open"] = gateway([("a", a)], {"ttft_budget": unlimited}, work)
        if "hedging" in parts:
            two = [("a", a), ("b", sims["b"].url)]
            gws["hedge"] = gateway(two, {**relay_hedge, "hedge": True}, work)
            gws["no_hedge"] = gateway(two, {**relay_hedge, "hedge": False}, work)
        if "admission" in parts:
            budget = {"interactive": INTERACTIVE_BUDGET_S, "batch": 60.0}
            gws["admission"] = gateway([("a", a)], {"ttft_budget": budget}, work)
        start_all(stack, list(gws.values()))
        seconds["start"] = perf_counter() - t
        urls = {k: g.url for k, g in gws.items()}
        if "overhead" in parts:
            t = perf_counter()
            configure_sim(a, OVERHEAD_SIM, args.seed)
            pids = {"gateway": _pid(gws["open"]), "sim": _pid(sims["a"])}
            result["overhead"] = run_loop(overhead(a, urls["open"], scale, pids))
            seconds["overhead"] = perf_counter() - t
            _print_overhead(result["overhead"])
        if "hedging" in parts:
            t = perf_counter()
            b = sims["b"].url
            configure_sim(a, HEDGE_SIM, args.seed + 1)
            configure_sim(b, {**HEDGE_SIM, "ttft_ms": HEDGE_SIM["ttft_ms"] + HEDGE_TAIL}, args.seed + 2)
            result["hedging"] = run_loop(hedging(urls, [a, b], scale, args.seed, args.deadline, args.balancer))
            seconds["hedging"] = perf_counter() - t
            _print_hedging(result["hedging"])
        if "admission" in parts:
            t = perf_counter()
            configure_sim(a, ADMIT_SIM, args.seed + 3, slots=ADMIT_SLOTS)
            arms = {"admission": urls["admission"], "no_admission": urls["open"]}
            result["admission"] = run_loop(admission(arms, a, scale, args.seed, args.interactive_share))
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
