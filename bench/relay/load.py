"""What every part of the relay benchmark shares: the request it sends, the client that times it,
open-loop schedules, and how big a run is."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from dataclasses import dataclass
from time import perf_counter
from typing import Any

import orjson

from bench.loadgen.http import HttpError, Pool, fetch, request_bytes
from bench.loadgen.record import RequestRecord, SseObserver
from bench.loadgen.runner import PRIORITY_HEADER
from bench.loadgen.shapes import arrival_gaps
from bench.loadgen.summary import error_kind
from bench.loadgen.target import parse_target
from bench.measure import get_json

__all__ = ["FULL", "MODEL", "QUICK", "Client", "Reply", "Scale", "body", "chat_requests", "poisson_offsets"]

MODEL = "sim-model"
MESSAGES = [{"role": "user", "content": "Tell me about the weather in three short sentences."}]


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


def body(sim: dict[str, Any] | None = None) -> dict[str, Any]:
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
        data = request_bytes("POST", t.path("/chat/completions"), t.authority, headers, orjson.dumps(body))
        rec = RequestRecord(index=index, priority=priority, stream=True)
        observer = SseObserver(rec)
        rec.start = perf_counter()
        try:
            resp = await fetch(self.pool, data, observer, 60.0)
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

    async def aclose(self) -> None:
        await self.pool.aclose()


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


def chat_requests(sim_url: str) -> int:
    return int(get_json(sim_url + "/sim/stats")["requests"].get("/v1/chat/completions", 0))
