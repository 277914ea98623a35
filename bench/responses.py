"""The Responses API's added cost: translation per chunk, and time to first token through the gateway.

    python -m bench.responses                  # starts a sim and `python -m gateway serve --upstream`
    python -m bench.responses --requests 500

1. Translation: a 16-token chat stream is turned into Responses events the way a translated call
   does it (parse each chunk, translate, serialise each event), against only parsing the chunks
   (what a pass-through does with them anyway). Reported per chat chunk.
2. Time to first token at concurrency 1, rounds interleaved so drift hits all three alike: a chat
   stream straight to the sim, the same chat stream through the gateway, and a Responses stream
   through the gateway (translated to chat: the sim speaks only chat). The Responses figure minus
   the direct one is what a Responses client pays; minus the gateway's chat one, what the
   Responses path adds over chat.
The last line printed is a JSON summary.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

import httpx
import numpy as np
import orjson

from bench.loadgen.processes import ManagedServer, free_port, sim_command
from gateway.openai.responses.translate import ChatToResponsesStream

GATEWAY = f"{sys.executable} -m gateway serve --upstream {{upstream}} --port {{port}}"
_REQUEST = {"model": "sim-model", "max_tokens": 16}


def _chat_chunks(tokens: int = 16) -> list[bytes]:
    head = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "sim-model"}
    chunks = [{**head, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]}]
    chunks += [
        {**head, "choices": [{"index": 0, "delta": {"content": f" word{i}"}, "finish_reason": None}]}
        for i in range(tokens)
    ]
    chunks.append({**head, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    chunks.append({**head, "choices": [], "usage": {"prompt_tokens": 8, "completion_tokens": tokens}})
    return [orjson.dumps(c) for c in chunks]


def translation_cost(streams: int) -> dict[str, float]:
    chunks = _chat_chunks()
    request = {"model": "sim-model", "input": "hi"}

    def parse_only() -> None:
        for raw in chunks:
            orjson.loads(raw)

    def translate() -> None:
        stream = ChatToResponsesStream(request)
        for raw in chunks:
            for event in stream.feed(orjson.loads(raw)):
                orjson.dumps(event)
        for event in stream.close():
            orjson.dumps(event)

    timings: dict[str, float] = {}
    for name, fn in (("parse_only", parse_only), ("translate", translate)):
        for _ in range(200):
            fn()  # warm up
        started = time.perf_counter()
        for _ in range(streams):
            fn()
        timings[name] = (time.perf_counter() - started) / (streams * len(chunks)) * 1000
    return {
        "chunks_per_stream": len(chunks),
        "parse_only_ms_per_chunk": timings["parse_only"],
        "translate_ms_per_chunk": timings["translate"],
        "added_ms_per_chunk": timings["translate"] - timings["parse_only"],
    }


async def _first_token(client: httpx.AsyncClient, url: str, body: dict[str, Any], marker: bytes) -> float:
    started = time.perf_counter()
    async with client.stream("POST", url, json=body) as response:
        response.raise_for_status()
        elapsed: float | None = None
        async for line in response.aiter_lines():  # read to the end: the connection is reused
            if elapsed is None and marker in line.encode():
                elapsed = time.perf_counter() - started
    if elapsed is None:
        raise RuntimeError(f"no first token from {url}")
    return elapsed


async def ttft(sim: str, gateway: str, requests: int) -> dict[str, Any]:
    paths = {
        "direct_chat": (sim + "/v1/chat/completions", {**_REQUEST, "messages": [{"role": "user", "content": "hi"}]},
                        b'"content":"'),
        "gateway_chat": (gateway + "/v1/chat/completions",
                         {**_REQUEST, "messages": [{"role": "user", "content": "hi"}]}, b'"content":"'),
        "gateway_responses": (gateway + "/v1/responses",
                              {"model": "sim-model", "input": "hi", "max_output_tokens": 16},
                              b"response.output_text.delta"),
    }  # fmt: skip
    samples: dict[str, list[float]] = {k: [] for k in paths}
    async with httpx.AsyncClient(timeout=30) as client:
        for i in range(requests + 20):
            for name, (url, body, marker) in paths.items():
                # A fresh prompt each round: no cache may answer (the sim ignores the words).
                prompt = (
                    {"input": f"hi {i}"} if "input" in body else {"messages": [{"role": "user", "content": f"hi {i}"}]}
                )
                fresh = {**body, **prompt, "stream": True}
                value = await _first_token(client, url, fresh, marker)
                if i >= 20:  # warm-up rounds
                    samples[name].append(value)

    def pct(values: list[float]) -> dict[str, float]:
        a = np.asarray(values) * 1000
        return {"p50": float(np.percentile(a, 50)), "p99": float(np.percentile(a, 99))}

    out: dict[str, Any] = {name: pct(v) for name, v in samples.items()}
    direct, chat, resp = (np.asarray(samples[k]) for k in ("direct_chat", "gateway_chat", "gateway_responses"))
    out["added_vs_direct_p50_ms"] = float(np.percentile(resp, 50) - np.percentile(direct, 50)) * 1000
    out["added_vs_gateway_chat_p50_ms"] = float(np.percentile(resp, 50) - np.percentile(chat, 50)) * 1000
    out["chat_added_vs_direct_p50_ms"] = float(np.percentile(chat, 50) - np.percentile(direct, 50)) * 1000
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--requests", type=int, default=300, help="measured rounds (each: one request per path)")
    p.add_argument("--streams", type=int, default=5000, help="translated streams in the per-chunk measurement")
    args = p.parse_args(argv)
    translation = translation_cost(args.streams)
    print(f"translation: {translation['added_ms_per_chunk'] * 1000:.1f} µs added per chat chunk")
    sim_port, gw_port = free_port(), free_port()
    # No response cache or tool router: every request goes upstream, and no embedding model loads.
    lean = {"SWITCHYARD_CACHE__ENABLED": "false", "SWITCHYARD_ROUTER__ENABLED": "false"}
    with (
        ManagedServer(sim_command(sim_port, "--output-tokens", "16", "--seed", "1"), sim_port) as sim,
        ManagedServer(GATEWAY.format(upstream=sim.url, port=gw_port), gw_port, ready_path="/readyz", env=lean) as gw,
    ):
        first = asyncio.run(ttft(sim.url, gw.url, args.requests))
    for name in ("direct_chat", "gateway_chat", "gateway_responses"):
        print(f"{name:18s} first token p50 {first[name]['p50']:.3f} ms p99 {first[name]['p99']:.3f} ms")
    print(f"responses added vs direct p50 {first['added_vs_direct_p50_ms']:.3f} ms, "
          f"vs the gateway's chat {first['added_vs_gateway_chat_p50_ms']:.3f} ms")  # fmt: skip
    print(json.dumps({"bench": "responses", "requests": args.requests, "translation": translation, "ttft": first}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
