"""`switchyard bench`'s engine: an LLM-aware load generator.

Front door: `BenchOptions` + `run`/`run_benchmark` (one run, report dict), `RequestOptions` and
`build_workload` (what requests say), `Load` (one step of load), `summarize` (records → numbers),
`render_report`/`compare_reports` (text), `Pool` (the lean HTTP/1.1 client) and `RequestRecord`.
"""

from bench.loadgen.benchmark import BenchOptions, run, run_benchmark
from bench.loadgen.http import HttpError, Pool, fetch, request_bytes
from bench.loadgen.prices import Price, parse_price, request_cost
from bench.loadgen.record import RequestRecord, SseObserver
from bench.loadgen.report import compare_reports, load_report, render_report, write_report
from bench.loadgen.shapes import Load, arrival_gaps, coarse_ladder, refine_ladder, step_holds
from bench.loadgen.slo import meets_slo, parse_slo
from bench.loadgen.summary import bunching, distribution, summarize
from bench.loadgen.target import Target, TargetRefused, parse_target
from bench.loadgen.tokens import load_tokenizer
from bench.loadgen.workloads import RequestOptions, Turn, Workload, build_workload

__all__ = [
    "BenchOptions",
    "HttpError",
    "Load",
    "Pool",
    "Price",
    "RequestOptions",
    "RequestRecord",
    "SseObserver",
    "Target",
    "TargetRefused",
    "Turn",
    "Workload",
    "arrival_gaps",
    "build_workload",
    "bunching",
    "coarse_ladder",
    "compare_reports",
    "distribution",
    "fetch",
    "load_report",
    "load_tokenizer",
    "meets_slo",
    "parse_price",
    "parse_slo",
    "parse_target",
    "refine_ladder",
    "render_report",
    "request_bytes",
    "request_cost",
    "run",
    "run_benchmark",
    "step_holds",
    "summarize",
    "write_report",
]
