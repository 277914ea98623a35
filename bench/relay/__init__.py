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

One module per part (`overhead.py`, `hedging.py`, `admission.py`), what they share in `load.py`, the
processes and the command line in `run.py`; helpers common to every benchmark in `bench/measure.py`.
"""

from bench.measure import percentiles_ms as pcts
from bench.relay.admission import admission, capacity_rps, class_summary, ramp_schedule
from bench.relay.hedging import hedging
from bench.relay.load import FULL, QUICK, Client, Reply, Scale
from bench.relay.overhead import added, overhead, per_chunk
from bench.relay.run import main

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
