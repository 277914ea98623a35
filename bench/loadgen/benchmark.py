"""One benchmark run from options to report: steps (one load, or a sweep), summaries, JSON, plots.

The report is a plain dict (written as JSON): `target`, `workload`, `tokenizer`, `options`, and
`steps`, each with its `label`, `phase`, `load` and `summary`; `files` lists what was written.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.loadgen.prices import Price
from bench.loadgen.progress import ProgressLine
from bench.loadgen.record import RequestRecord
from bench.loadgen.runner import Runner, StepResult
from bench.loadgen.shapes import Arrival, Load, coarse_ladder, refine_ladder, step_holds
from bench.loadgen.summary import summarize
from bench.loadgen.target import parse_target
from bench.loadgen.workloads import RequestOptions, build_workload

__all__ = ["BenchOptions", "run", "run_benchmark"]


@dataclass(slots=True)
class BenchOptions:
    base_url: str = "http://127.0.0.1:8080/v1"
    allow_hosts: frozenset[str] = frozenset()
    workload: str = "synthetic"
    request: RequestOptions = field(default_factory=RequestOptions)
    concurrency: int | None = None  # closed loop
    rate: float | None = None  # open loop, requests per second
    arrival: Arrival = "poisson"
    burstiness: float = 1.0
    sweep: str | None = None  # "concurrency" or "rate"
    sweep_start: float = 1.0
    sweep_factor: float = 2.0
    sweep_max: float = 64.0
    sweep_refine: int = 2
    requests: int | None = 200  # per step
    duration_s: float | None = 60.0  # per step
    warmup: int = 0
    timeout_s: float = 60.0
    slo: dict[str, float] = field(default_factory=dict)
    price: Price | None = None
    headers: dict[str, str] = field(default_factory=dict)
    priority_mix: dict[str, float] = field(default_factory=dict)
    seed: int = 0
    max_inflight: int = 10_000
    progress: bool = True
    keep_records: bool = False  # keep RequestRecords on the result (tests, plots)
    out: Path | None = None  # JSON report path; plots go beside it
    plots: bool = True


def _step_entry(result: StepResult, opts: BenchOptions) -> dict[str, Any]:
    load = result.load
    return {
        "label": load.label if result.phase == "main" else f"{result.phase} {load.label}",
        "phase": result.phase,
        "load": {"mode": load.mode, "value": load.value, "arrival": load.arrival, "burstiness": load.burstiness},
        "started_at": result.started_at,
        "summary": summarize(result.records, result.wall_s, opts.slo or None, opts.price),
    }


async def run_benchmark(opts: BenchOptions) -> tuple[dict[str, Any], list[list[RequestRecord]]]:
    """Run every step; return the report and (when `keep_records`) each step's records."""
    target = parse_target(opts.base_url, opts.allow_hosts)
    workload = build_workload(opts.workload, opts.request)
    if opts.sweep and len(workload.phases) > 1:
        raise ValueError(f"the {workload.name} workload has phases and cannot be swept")
    progress = ProgressLine() if opts.progress else None
    runner = Runner(
        target,
        timeout_s=opts.timeout_s,
        headers=opts.headers,
        priority_mix=opts.priority_mix,
        seed=opts.seed,
        max_inflight=opts.max_inflight,
        progress=progress,
    )
    steps: list[dict[str, Any]] = []
    kept: list[list[RequestRecord]] = []

    async def one(load: Load) -> list[dict[str, Any]]:
        entries = []
        for phase in workload.phases:
            if opts.warmup:
                await runner.run_step(
                    load, phase, requests=opts.warmup, duration_s=opts.duration_s, label=f"warm-up {load.label}"
                )
            result = await runner.run_step(load, phase, requests=opts.requests, duration_s=opts.duration_s)
            entries.append(_step_entry(result, opts))
            if opts.keep_records or (opts.plots and opts.out is not None):
                kept.append(result.records)
        return entries

    try:
        if opts.sweep:
            integer = opts.sweep == "concurrency"
            mode: Any = opts.sweep
            ladder = coarse_ladder(opts.sweep_start, opts.sweep_factor, opts.sweep_max)
            last_good: float | None = None
            first_bad: float | None = None
            for value in ladder:
                entry = (await one(Load(mode, value, opts.arrival, opts.burstiness)))[0]
                holds = step_holds(entry["summary"], steps[-1]["summary"] if steps else None)
                steps.append(entry)
                if not holds:
                    first_bad = value
                    break
                last_good = value
            if last_good is not None and first_bad is not None and opts.sweep_refine:
                for value in refine_ladder(last_good, first_bad, opts.sweep_refine, integer):
                    steps.extend(await one(Load(mode, value, opts.arrival, opts.burstiness)))
            order = sorted(range(len(steps)), key=lambda i: steps[i]["load"]["value"])
            steps = [steps[i] for i in order]
            kept = [kept[i] for i in order] if len(kept) == len(order) else kept
        else:
            if opts.rate is not None:
                load = Load("rate", opts.rate, opts.arrival, opts.burstiness)
            else:
                load = Load("concurrency", float(opts.concurrency or 1))
            steps.extend(await one(load))
    finally:
        await runner.aclose()
        if progress is not None:
            progress.finish()

    report: dict[str, Any] = {
        "tool": "switchyard bench",
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "target": opts.base_url,
        "workload": {"name": workload.name, **workload.info},
        "tokenizer": opts.request.tokenizer.name,
        "options": {
            "model": opts.request.model,
            "stream": opts.request.stream,
            "requests": opts.requests,
            "duration_s": opts.duration_s,
            "warmup": opts.warmup,
            "seed": opts.seed,
            "prompt_tokens": opts.request.prompt_tokens.model_dump(),
            "output_tokens": opts.request.output_tokens.model_dump(),
            "slo_ms": {k: v * 1000 for k, v in opts.slo.items()},
            "priority_mix": opts.priority_mix,
            "sweep": opts.sweep,
        },
        "steps": steps,
        "files": [],
    }
    if opts.out is not None:
        from bench.loadgen.plots import plot_latency, plot_sweep
        from bench.loadgen.report import write_report

        if opts.plots:
            stem = opts.out.with_suffix("")
            if kept:
                # the step that served the most good traffic: the sweep's knee, or the only step
                best = max(range(len(kept)), key=lambda i: _good_rps(steps[i]["summary"]))
                name = f"{stem}-latency.png"
                plot_latency(kept[best], name, f"{workload.name}: {steps[best]['label']}")
                report["files"].append(name)
            if len(steps) > 1 and opts.sweep:
                name = f"{stem}-sweep.png"
                plot_sweep(steps, name, f"{workload.name} sweep against {opts.base_url}")
                report["files"].append(name)
        report["files"].insert(0, str(opts.out))
        write_report(report, opts.out)
    return report, (kept if opts.keep_records else [])


def _good_rps(summary: dict[str, Any]) -> float:
    goodput = summary.get("goodput")
    return float(goodput["requests_per_s"] if goodput else summary["throughput"]["requests_per_s"])


def run(opts: BenchOptions) -> tuple[dict[str, Any], list[list[RequestRecord]]]:
    """Synchronous entry: runs on uvloop when available."""
    try:
        import uvloop

        return uvloop.run(run_benchmark(opts))
    except ImportError:
        return asyncio.run(run_benchmark(opts))
