"""`switchyard bench`: an LLM-aware load generator. `switchyard bench compare A.json B.json` too.

switchyard bench --base-url http://127.0.0.1:8090/v1 --concurrency 16 --requests 500
switchyard bench --rate 200 --arrival gamma --burstiness 2 --duration 30 --slo ttft=500ms,tpot=50ms
switchyard bench --sweep concurrency --sweep-max 256 --slo ttft=200ms --out bench/results/sweep.json
switchyard bench --workload tools --tools-per-request uniform:20:200
switchyard bench compare before.json after.json
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main"]


def _mix(spec: str) -> dict[str, float]:
    out = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, sep, weight = part.partition("=")
        if not sep or name not in ("interactive", "batch"):
            raise argparse.ArgumentTypeError(f"bad priority term {part!r}: use interactive=W,batch=W")
        out[name] = float(weight)
    return out


def _header(spec: str) -> tuple[str, str]:
    name, sep, value = spec.partition(":")
    if not sep:
        raise argparse.ArgumentTypeError(f"bad header {spec!r}: use 'Name: value'")
    return name.strip().lower(), value.strip()


def _parser() -> argparse.ArgumentParser:
    from sim.cli import parse_distribution

    p = argparse.ArgumentParser(
        prog="switchyard bench",
        description="LLM-aware load generator.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__,
    )
    p.add_argument("--base-url", default="http://127.0.0.1:8080/v1", help="OpenAI-compatible base URL")
    p.add_argument(
        "--allow-host",
        action="append",
        default=[],
        help="a non-loopback host this run may load (repeatable); loopback needs no flag",
    )
    p.add_argument("--model", default="sim-model")
    p.add_argument("--workload", default="synthetic", choices=["synthetic", "paraphrase", "tools", "multiturn"])
    p.add_argument("--no-stream", action="store_true", help="plain JSON responses (no TTFT/ITL)")
    p.add_argument(
        "--prompt-tokens",
        type=parse_distribution,
        default=None,
        help="prompt length in tokens: N, uniform:LO:HI, lognormal:MEDIAN:SIGMA (default 128)",
    )
    p.add_argument(
        "--output-tokens",
        type=parse_distribution,
        default=None,
        help="max_tokens per request, same syntax (default 64)",
    )
    p.add_argument(
        "--exact-output",
        action="store_true",
        help="ask for exactly that many tokens (vLLM ignore_eos/min_tokens, sim override)",
    )
    p.add_argument("--tools-per-request", type=parse_distribution, default=None, help="tools workload (default 50)")
    p.add_argument("--turns", type=parse_distribution, default=None, help="multiturn workload (default 3)")
    p.add_argument("--extra-body", type=json.loads, default=None, help="JSON merged into every request body")
    p.add_argument("--tokenizer", default="auto", choices=["auto", "smollm2", "approx"])
    load = p.add_argument_group("load")
    load.add_argument("--concurrency", type=int, help="closed loop: this many requests in flight")
    load.add_argument("--rate", type=float, help="open loop: requests per second")
    load.add_argument("--arrival", default="poisson", choices=["poisson", "gamma", "constant"])
    load.add_argument("--burstiness", type=float, default=1.0, help="gamma arrivals: CV of gaps (>1 bursty)")
    load.add_argument("--sweep", choices=["concurrency", "rate"], help="climb a ladder until the SLO breaks")
    load.add_argument("--sweep-start", type=float, default=1.0)
    load.add_argument("--sweep-factor", type=float, default=2.0)
    load.add_argument("--sweep-max", type=float, default=64.0)
    load.add_argument("--sweep-refine", type=int, default=2, help="finer steps between last good and first bad")
    load.add_argument("--requests", type=int, default=200, help="requests per step (bound)")
    load.add_argument("--duration", type=float, default=60.0, help="seconds per step (bound)")
    load.add_argument("--warmup", type=int, default=0, help="requests sent and discarded before each step")
    load.add_argument("--timeout", type=float, default=60.0, help="per-request timeout, seconds")
    load.add_argument("--max-inflight", type=int, default=10_000)
    load.add_argument("--priority-mix", type=_mix, default=None, help="e.g. interactive=0.7,batch=0.3")
    load.add_argument("--header", type=_header, action="append", default=[], help="'Name: value' (repeatable)")
    load.add_argument("--seed", type=int, default=0)
    rep = p.add_argument_group("report")
    rep.add_argument("--slo", default="", help="e.g. ttft=500ms,tpot=50ms (goodput counts requests meeting all)")
    rep.add_argument("--price", help="USD per million tokens, e.g. in=0.15,out=0.60")
    rep.add_argument("--price-table", help="YAML/JSON: model -> {input_per_mtok, output_per_mtok}")
    rep.add_argument("--out", type=Path, help="JSON report path (plots are written beside it)")
    rep.add_argument("--no-plots", action="store_true")
    rep.add_argument("--quiet", action="store_true", help="no progress line")
    rep.add_argument("--json", action="store_true", help="print the JSON report instead of the table")
    return p


def _run(argv: list[str]) -> int:
    from bench.loadgen.benchmark import BenchOptions, run
    from bench.loadgen.prices import DEFAULT_PRICES, Price, load_prices, parse_price
    from bench.loadgen.report import render_report
    from bench.loadgen.slo import parse_slo
    from bench.loadgen.target import TargetRefused
    from bench.loadgen.tokens import load_tokenizer
    from bench.loadgen.workloads import RequestOptions
    from sim.config import Distribution

    args = _parser().parse_args(argv)
    try:
        slo = parse_slo(args.slo)
        price: Price | None
        if args.price:
            price = parse_price(args.price)
        else:
            table = load_prices(args.price_table) if args.price_table else DEFAULT_PRICES
            price = table.get(args.model)
    except (ValueError, OSError) as exc:
        print(f"switchyard bench: {exc}", file=sys.stderr)
        return 2
    if args.concurrency is not None and args.rate is not None:
        print("switchyard bench: choose --concurrency or --rate, not both", file=sys.stderr)
        return 2
    request = RequestOptions(
        model=args.model,
        stream=not args.no_stream,
        exact_output=args.exact_output,
        extra_body=args.extra_body or {},
        tokenizer=load_tokenizer(args.tokenizer),
    )
    for name in ("prompt_tokens", "output_tokens", "tools_per_request", "turns"):
        spec = getattr(args, name)
        if spec is not None:
            setattr(request, name, Distribution.model_validate(spec))
    opts = BenchOptions(
        base_url=args.base_url,
        allow_hosts=frozenset(args.allow_host),
        workload=args.workload,
        request=request,
        concurrency=args.concurrency,
        rate=args.rate,
        arrival=args.arrival,
        burstiness=args.burstiness,
        sweep=args.sweep,
        sweep_start=args.sweep_start,
        sweep_factor=args.sweep_factor,
        sweep_max=args.sweep_max,
        sweep_refine=args.sweep_refine,
        requests=args.requests,
        duration_s=args.duration,
        warmup=args.warmup,
        timeout_s=args.timeout,
        slo=slo,
        price=price,
        headers=dict(args.header),
        priority_mix=args.priority_mix or {},
        seed=args.seed,
        max_inflight=args.max_inflight,
        progress=not args.quiet,
        out=args.out,
        plots=not args.no_plots,
    )
    try:
        report, _ = run(opts)
    except (TargetRefused, ValueError) as exc:
        print(f"switchyard bench: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(report) if args.json else render_report(report))
    if report["files"] and not args.json:
        print("wrote " + ", ".join(report["files"]))
    return 0


def _compare(argv: list[str]) -> int:
    from bench.loadgen.report import compare_reports, load_report

    p = argparse.ArgumentParser(prog="switchyard bench compare", description="Two runs side by side.")
    p.add_argument("a", type=Path)
    p.add_argument("b", type=Path)
    args = p.parse_args(argv)
    try:
        a, b = load_report(args.a), load_report(args.b)
    except (ValueError, OSError) as exc:
        print(f"switchyard bench compare: {exc}", file=sys.stderr)
        return 2
    print(compare_reports(a, b, (str(args.a), str(args.b))))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["compare"]:
        return _compare(args[1:])
    if args[:1] == ["run"]:
        args = args[1:]
    return _run(args)


if __name__ == "__main__":
    raise SystemExit(main())
