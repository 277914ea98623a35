"""The optional append-only spend ledger: one row per priced request, written in batches off the
hot path, to a Redis stream or a PostgreSQL table.

Requests only append to a bounded in-memory buffer. One background task writes the oldest rows
in batches; a batch leaves the buffer only once the sink has taken it, so an outage delays rows
instead of losing them. While the buffer is full new rows are dropped and counted. Each row has
a unique id: PostgreSQL ignores a batch written twice (after a reply lost in an outage), and a
stream's readers can do the same.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import uuid
from typing import Any, Protocol

from gateway import metrics
from gateway.settings import LedgerSettings

__all__ = ["COLUMNS", "Ledger", "LedgerSink", "PostgresSink", "RedisStreamSink", "new_row_id", "open_ledger"]

log = logging.getLogger(__name__)

COLUMNS = (
    "id", "ts", "request_id", "key_id", "tenant", "team", "model", "backend",
    "prompt_tokens", "cached_tokens", "completion_tokens", "cost_usd", "outcome",
)  # fmt: skip
_MAX_BACKOFF = 5.0


def new_row_id() -> str:
    return uuid.uuid4().hex


class LedgerSink(Protocol):
    name: str

    async def write(self, rows: list[tuple[Any, ...]]) -> None:
        """Store every row or raise; rows already stored may be sent again."""
        ...

    async def aclose(self) -> None: ...


class RedisStreamSink:
    name = "redis"

    def __init__(self, redis: Any, stream: str, maxlen: int | None):
        self._redis = redis
        self._stream = stream
        self._maxlen = maxlen

    async def write(self, rows: list[tuple[Any, ...]]) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:  # all of a batch or none of it
            for row in rows:
                fields = {k: "" if v is None else str(v) for k, v in zip(COLUMNS, row, strict=True)}
                pipe.xadd(self._stream, fields, maxlen=self._maxlen, approximate=True)
            await pipe.execute()

    async def aclose(self) -> None:
        return None


class PostgresSink:
    """Rows into one table (created if missing) through one connection, reopened after a failure."""

    name = "postgres"

    def __init__(self, dsn: str, table: str):
        self._dsn = dsn
        self._table = table  # validated as an identifier by LedgerSettings
        self._conn: Any = None
        placeholders = ", ".join(["%s"] * len(COLUMNS))
        self._insert = f"INSERT INTO {table} ({', '.join(COLUMNS)}) VALUES ({placeholders}) ON CONFLICT (id) DO NOTHING"

    async def _connect(self) -> Any:
        import psycopg

        conn = await psycopg.AsyncConnection.connect(self._dsn, autocommit=True, connect_timeout=3)
        await conn.execute(
            f"CREATE TABLE IF NOT EXISTS {self._table} ("
            "id uuid PRIMARY KEY, ts timestamptz NOT NULL, request_id text, key_id text, tenant text, "
            "team text, model text, backend text, prompt_tokens integer, cached_tokens integer, "
            "completion_tokens integer, cost_usd double precision NOT NULL, outcome text)"
        )
        return conn

    async def write(self, rows: list[tuple[Any, ...]]) -> None:
        import datetime as dt

        if self._conn is None or self._conn.closed:
            self._conn = await self._connect()
        values = [(r[0], dt.datetime.fromtimestamp(r[1], dt.UTC), *r[2:]) for r in rows]
        try:
            async with self._conn.transaction(), self._conn.cursor() as cur:
                await cur.executemany(self._insert, values)
        except Exception:
            await self.aclose()  # the next batch starts on a fresh connection
            raise

    async def aclose(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()


class Ledger:
    def __init__(self, sink: LedgerSink, settings: LedgerSettings):
        self.sink = sink
        self.settings = settings
        self._rows: collections.deque[tuple[Any, ...]] = collections.deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.written = 0
        self.dropped = 0

    @property
    def buffered(self) -> int:
        return len(self._rows)

    def append(self, row: tuple[Any, ...]) -> None:
        """Queue one row (never blocks). Past `buffer_rows` the row is dropped and counted."""
        if len(self._rows) >= self.settings.buffer_rows:
            self.dropped += 1
            metrics.labelled(metrics.LEDGER_ROWS, self.sink.name, "dropped").inc()
            return
        self._rows.append(row)
        metrics.LEDGER_BUFFERED.set(len(self._rows))
        if len(self._rows) >= self.settings.batch_rows:
            self._wake.set()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="ledger")

    async def _run(self) -> None:
        failures = 0
        while True:
            if failures:
                delay = min(_MAX_BACKOFF, 0.1 * 2**failures)
            elif len(self._rows) < self.settings.batch_rows and not self._closing:
                delay = self.settings.flush_seconds
            else:
                delay = 0.0
            if delay:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), delay)  # a timer, or a full batch
                self._wake.clear()
            if not self._rows:
                if self._closing:
                    return
                continue
            if await self._write_batch():
                failures = 0
            else:
                failures += 1
                if self._closing:
                    return

    async def _write_batch(self) -> bool:
        batch = [self._rows[i] for i in range(min(self.settings.batch_rows, len(self._rows)))]
        try:
            await self.sink.write(batch)
        except Exception as exc:
            metrics.STORE_ERRORS.labels("ledger").inc()
            log.warning("ledger: could not write %d row(s) to %s (%s); keeping them", len(batch), self.sink.name, exc)
            return False
        for _ in batch:  # only this task removes rows, and only from the left: these are the batch
            self._rows.popleft()
        self.written += len(batch)
        metrics.labelled(metrics.LEDGER_ROWS, self.sink.name, "written").inc(len(batch))
        metrics.LEDGER_BUFFERED.set(len(self._rows))
        return True

    async def aclose(self, timeout: float = 5.0) -> None:
        """Write what is buffered (for up to `timeout` seconds), then close the sink."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, timeout)
            except TimeoutError:
                log.warning("ledger: %d row(s) unwritten at shutdown", len(self._rows))
        if self._rows:
            metrics.labelled(metrics.LEDGER_ROWS, self.sink.name, "dropped").inc(len(self._rows))
        await self.sink.aclose()


def open_ledger(settings: LedgerSettings, redis: Any, prefix: str) -> Ledger | None:
    if settings.sink == "none":
        return None
    sink: LedgerSink
    if settings.sink == "redis":
        sink = RedisStreamSink(redis, prefix + settings.stream, settings.stream_maxlen)
    else:
        assert settings.dsn is not None
        sink = PostgresSink(settings.dsn, settings.table)
    return Ledger(sink, settings)
