"""CPU the request path spends on a sampled trace, measured in process (no network, no export):

    python -m bench.tracing_cost --requests 20000

Each simulated request records what a streamed chat request through every stage records: the
server span, five stage spans with their attributes, one attempt span with its trace headers and
first-token event, the server span's attributes, and the hand-over tuple the shipper pickles. CPU
time (not wall time) per request is reported, so a loaded machine inflates it less than it does
end-to-end latency. The last line printed is a JSON summary.
"""

from __future__ import annotations

import argparse
import json
import pickle
import sys
import time

from gateway.telemetry.propagation import new_trace_id
from gateway.telemetry.spans import CLIENT, RequestTrace

__all__ = ["main"]

_STAGES = ("switchyard.auth", "switchyard.admission", "switchyard.cache", "switchyard.tools", "switchyard.route")


def _one_request() -> tuple[object, ...]:
    trace = RequestTrace(new_trace_id(), None, True)
    for name in _STAGES:
        span = trace.stage = trace.span(name)
        trace.note({"switchyard.x": "verdict", "switchyard.y": 0.93, "switchyard.z": None, "switchyard.n": 8})
        span.end()
    attempt = trace.span("chat m", CLIENT)
    trace.upstream_headers(attempt)
    attempt.event("gen_ai.first_token")
    attempt.set(
        {
            "gen_ai.operation.name": "chat",
            "gen_ai.request.model": "m",
            "gen_ai.response.model": "m",
            "gen_ai.usage.input_tokens": 12,
            "gen_ai.usage.output_tokens": 16,
            "server.address": "127.0.0.1",
            "server.port": 9000,
            "switchyard.backend": "b",
            "switchyard.attempt.outcome": "ok",
            "gen_ai.response.finish_reasons": ["stop"],
        }
    )
    attempt.end()
    trace.server.set({f"attr.{i}": i for i in range(18)})
    trace.server.end()
    return (trace.trace_id, None, None, [span.as_tuple() for span in trace.spans])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--requests", type=int, default=20000)
    args = p.parse_args(argv)
    recorded = pickled = 0.0
    for _ in range(0, args.requests, 200):  # as the shipper takes them: a batch at a time, then gone
        started = time.process_time()
        items = [_one_request() for _ in range(200)]
        between = time.process_time()
        pickle.dumps(items, protocol=pickle.HIGHEST_PROTOCOL)
        recorded += between - started
        pickled += time.process_time() - between
    result = {
        "bench": "tracing_cost",
        "requests": args.requests,
        "record_us_per_request": recorded / args.requests * 1e6,
        "pickle_us_per_request": pickled / args.requests * 1e6,
    }
    print(
        f"recording {result['record_us_per_request']:.1f} us/request, pickling {result['pickle_us_per_request']:.1f}"
        " us/request (CPU time)"
    )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
