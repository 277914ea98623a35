"""Runs load against a target: closed loop (fixed concurrency) or open loop (arrivals at a rate).

Each request's bytes are rendered before its clock starts; its record is filled in by callbacks as
bytes arrive (`record.SseObserver`). An open loop never waits for the target: arrivals that find
`max_inflight` requests outstanding are recorded as `generator_saturated`, not silently delayed,
so a slow target cannot hide behind a polite generator (no coordinated omission).
"""

from __future__ import annotations

import asyncio
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from time import perf_counter

import orjson

from bench.loadgen.http import HttpError, Pool, fetch, request_bytes
from bench.loadgen.record import RequestRecord, SseObserver, parse_json_response
from bench.loadgen.shapes import Load, arrival_gaps
from bench.loadgen.summary import error_kind
from bench.loadgen.target import Target
from bench.loadgen.workloads import Phase, Session, Turn

__all__ = ["PRIORITY_HEADER", "Runner", "StepResult"]

PRIORITY_HEADER = "x-switchyard-priority"


@dataclass(slots=True)
class StepResult:
    load: Load
    phase: str
    records: list[RequestRecord]
    wall_s: float
    started_at: float = field(default_factory=time.time)  # wall clock, for the report


class _Budget:
    """Stops a step after `requests` requests or at `deadline` (perf_counter), whichever comes first."""

    def __init__(self, requests: int | None, duration_s: float | None):
        self.left = requests if requests is not None else sys.maxsize
        self.deadline = perf_counter() + duration_s if duration_s is not None else float("inf")

    def take(self) -> bool:
        if self.left <= 0 or perf_counter() >= self.deadline:
            return False
        self.left -= 1
        return True


class Runner:
    def __init__(
        self,
        target: Target,
        *,
        timeout_s: float = 60.0,
        headers: dict[str, str] | None = None,
        priority_mix: dict[str, float] | None = None,
        seed: int = 0,
        max_inflight: int = 10_000,
        progress: Callable[[list[RequestRecord], int, float, str], None] | None = None,
    ):
        self.target = target
        self.pool = Pool(target.host, target.port)
        self.timeout_s = timeout_s
        self.headers = {"content-type": "application/json", **(headers or {})}
        self.priority_mix = priority_mix or {}
        self.seed = seed
        self.max_inflight = max_inflight
        self.progress = progress
        self._in_flight = 0

    async def execute(self, turn: Turn, rec: RequestRecord) -> None:
        """Send one turn and fill `rec`; never raises for target failures (they become `rec.error`)."""
        headers = self.headers
        if rec.priority is not None:
            headers = {**headers, PRIORITY_HEADER: rec.priority}
        data = request_bytes(
            "POST", self.target.path(turn.endpoint), self.target.authority, headers, orjson.dumps(turn.body)
        )
        stream = rec.stream = turn.body.get("stream") is True
        rec.expected_tool = turn.expected_tool
        rec.tag = rec.tag or turn.tag
        if turn.collect_text:
            rec.text = []
        observer = SseObserver(rec) if stream else None
        self._in_flight += 1
        rec.start = perf_counter()
        try:
            resp = await fetch(self.pool, data, observer, self.timeout_s)
        except HttpError as exc:
            rec.end = perf_counter()
            rec.error = exc.kind
            return
        finally:
            self._in_flight -= 1
        rec.end = perf_counter()
        rec.status = resp.status
        rec.take_headers(resp.headers)
        if resp.status >= 400:
            rec.error = error_kind(resp.status)
            rec.chunk_times.clear()
            rec.ttft = None
        elif observer is None:
            parse_json_response(rec, resp.body)
        elif not observer.done and rec.error is None:
            rec.error = "incomplete_stream"
        if rec.prompt_tokens is None:
            rec.prompt_tokens = turn.prompt_tokens
        if rec.output_tokens is None and rec.stream and rec.error is None:
            rec.output_tokens = len(rec.chunk_times)  # no usage reported: one token per content chunk

    def _priority(self, rng: random.Random) -> str | None:
        if not self.priority_mix:
            return None
        names = list(self.priority_mix)
        return rng.choices(names, weights=[self.priority_mix[n] for n in names])[0]

    async def _session(
        self, session: Session, first: RequestRecord, records: list[RequestRecord], budget: _Budget | None
    ) -> None:
        turn: Turn | None = session.first()
        rec = first
        while turn is not None:
            await self.execute(turn, rec)
            records.append(rec)
            turn = session.next(rec)
            if turn is None or (budget is not None and not budget.take()):
                return
            rec = RequestRecord(index=len(records), priority=first.priority)

    async def run_step(
        self, load: Load, phase: Phase, *, requests: int | None, duration_s: float | None, label: str = ""
    ) -> StepResult:
        limit = phase.limit if requests is None else min(requests, phase.limit or requests)
        budget = _Budget(limit, duration_s)
        rng = random.Random(self.seed)
        records: list[RequestRecord] = []
        sessions = 0
        ticker = asyncio.create_task(self._tick(records, label or f"{phase.name} {load.label}"))
        t0 = perf_counter()
        try:
            if load.mode == "concurrency":

                async def worker() -> None:
                    nonlocal sessions
                    while budget.take():
                        i = sessions
                        sessions += 1
                        session = phase.make(i, rng)
                        rec = RequestRecord(index=len(records), priority=self._priority(rng))
                        await self._session(session, rec, records, budget)

                await asyncio.gather(*(worker() for _ in range(max(1, int(load.value)))))
            else:
                tasks: set[asyncio.Task[None]] = set()
                gaps = arrival_gaps(load.value, load.arrival, random.Random(self.seed + 1), load.burstiness)
                due = perf_counter()
                while budget.take():
                    now = perf_counter()
                    if due > now + 0.0005:
                        await asyncio.sleep(due - now)
                    session = phase.make(sessions, rng)
                    sessions += 1
                    rec = RequestRecord(index=len(records), priority=self._priority(rng), scheduled=due)
                    if self._in_flight >= self.max_inflight:
                        rec.start = rec.end = perf_counter()
                        rec.error = "generator_saturated"
                        records.append(rec)
                    else:
                        task = asyncio.create_task(self._session(session, rec, records, None))
                        tasks.add(task)
                        task.add_done_callback(tasks.discard)
                    due += next(gaps)
                if tasks:
                    await asyncio.gather(*tasks)
        finally:
            ticker.cancel()
        wall = perf_counter() - t0
        records.sort(key=lambda r: r.start)
        return StepResult(load, phase.name, records, wall)

    async def _tick(self, records: list[RequestRecord], label: str) -> None:
        if self.progress is None:
            return
        t0 = perf_counter()
        while True:
            await asyncio.sleep(0.5)
            self.progress(records, self._in_flight, perf_counter() - t0, label)

    async def aclose(self) -> None:
        await self.pool.aclose()
