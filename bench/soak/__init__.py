"""Soak the whole gateway: steady mixed load for --minutes, resident memory and latency over time.

One gateway process runs every stage (auth, limits on Redis, the Redis-backed exact and semantic
cache, the tool router, the relay, stored responses, span export) in front of a `switchyard sim`
and the local engine, and with --vllm-url (or --vllm) a vLLM server too. Requests arrive at a
steady --rps (Poisson, seeded) and mix:

    cacheable chat (a small pool of questions: hits and misses), plain and streamed
    uncacheable chat (temperature 1, fresh text), plain and streamed
    chat with 24 tools (over the router's threshold of 16; the sim calls one, the router learns)
    the local engine (a tiny random Llama built on the spot, or --engine-model), plain and streamed
    legacy completions and embeddings
    streams the client abandons after two chunks, and requests that ask the sim for a fault
    (errors these are meant to be, counted apart from unexpected ones; they go to a sim of their own)
    the Responses API, plain and streamed, stored (`responses`), a share continuing one of the
    tenant's recent stored responses (`chained`, up to 4 turns), and retrieves of stored ones
    (`retrieve`: GET /v1/responses/{id}); stored responses expire after --responses-ttl (120 s),
    and a 404 for one asked for at least that long ago is counted as `expired`, not as an error
    the Anthropic Messages API (key in x-api-key), plain and streamed, the sim answering natively
    with a vLLM server: greedy 8-token chat to its model (`vllm`), and a few Responses and Messages
    requests to it (`vllm_responses`, `vllm_messages`); vLLM on CPU is slow to start, so it is off
    unless asked for

The original eight kinds keep their proportions; the Responses and Messages kinds take about a
sixth of the traffic, vLLM's about a twentieth. Traces are on: the gateway exports head-sampled
spans (--trace-ratio, 0.25) over OTLP/HTTP to `bench/otlp_sink.py` in its own process; the summary
says how many spans the gateway exported and dropped and how many the sink received (--no-traces:
off).

The response cache and the router's feedback are capped low (300 entries, 100 examples per scope)
so that they are full by the end of warm-up, and stored responses reach their steady number within
one TTL. Every --sample-seconds the gateway's resident set size is read (psutil if installed, else
/proc), and its child processes' by name (`sy-engine`: the engine's workers; `sy-span-export`: the span
export process). The
first tenth of the run is warm-up (caches, pools, allocator arenas and the router's catalogues
fill). Memory growth is the least-squares slope of the samples after warm-up, per hour, as a share
of the post-warm-up start; latency drift compares the p99 of the first tenth of the post-warm-up
run with the last tenth (overall, and per kind).

    .venv/bin/python -m bench.soak                       # 30 minutes
    .venv/bin/python -m bench.soak --minutes 10 --rps 20
    .venv/bin/python -m bench.soak --minutes 0.5         # a smoke run
    .venv/bin/python -m bench.soak --vllm                # with vLLM (bench.vllm_cpu starts it)
    .venv/bin/python -m bench.soak --vllm-url http://127.0.0.1:8000   # or one already running

The last line printed is the JSON summary.

One module per job: `workload.py` (what is sent), `memory.py` (what the gateway holds, and where it
goes), `drive.py` (the stack and the open-loop client), `report.py` (the JSON summary); the command
line in `run.py`. Helpers common to every benchmark are in `bench/measure.py`.
"""

from bench.soak.memory import growth
from bench.soak.run import main

__all__ = ["growth", "main"]
