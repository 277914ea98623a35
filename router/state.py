"""Where feedback examples and trained models persist: Redis (shared by replicas) or a local file.

Both hold, per scope (a tenant, or the shared pool), the examples with a version (how many were ever
added) and, per (scope, catalogue), the latest trained model. Replicas notice each other's work by
the version moving; models are stored so a restart or another replica need not train again.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from router.feedback import CatalogueModel, Example

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = ["FileState", "RedisState", "State"]

log = logging.getLogger(__name__)


class State(Protocol):
    shared: bool  # other processes write here too: worth polling

    async def versions(self) -> dict[str, int]: ...

    async def examples(self, scope: str) -> tuple[list[Example], int]: ...

    async def append(self, scope: str, examples: Sequence[Example]) -> int: ...

    async def models(self) -> list[CatalogueModel]: ...

    async def model(self, scope: str, catalogue: str) -> CatalogueModel | None: ...

    async def save_model(self, model: CatalogueModel) -> None: ...


def _model_field(scope: str, catalogue: str) -> str:
    return json.dumps([scope, catalogue])


def _parse_field(field: str | bytes) -> tuple[str, str] | None:
    try:
        scope, catalogue = json.loads(field)
    except (ValueError, TypeError):
        return None
    return str(scope), str(catalogue)


class RedisState:
    """Needs a client that returns bytes (redis-py's default, `decode_responses=False`)."""

    shared = True

    def __init__(self, redis: Redis, prefix: str, max_examples: int):
        self._redis = redis
        self._prefix = prefix
        self._max = max_examples

    def _key(self, kind: str, scope: str = "") -> str:
        return f"{self._prefix}{kind}:{scope}" if scope else f"{self._prefix}{kind}"

    async def versions(self) -> dict[str, int]:
        scopes = sorted(
            s.decode() if isinstance(s, bytes) else str(s) for s in await self._redis.smembers(self._key("scopes"))
        )
        if not scopes:
            return {}
        values = await self._redis.mget([self._key("ver", s) for s in scopes])
        return {s: int(v or 0) for s, v in zip(scopes, values, strict=True)}

    async def examples(self, scope: str) -> tuple[list[Example], int]:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.lrange(self._key("ex", scope), 0, -1)
            pipe.get(self._key("ver", scope))
            raw, version = await pipe.execute()
        parsed = (Example.from_json(r) for r in raw)
        return [e for e in parsed if e is not None], int(version or 0)

    async def append(self, scope: str, examples: Sequence[Example]) -> int:
        key = self._key("ex", scope)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.rpush(key, *[e.to_json() for e in examples])
            pipe.ltrim(key, -self._max, -1)
            pipe.incrby(self._key("ver", scope), len(examples))
            pipe.sadd(self._key("scopes"), scope)
            results = await pipe.execute()
        return int(results[2])

    async def models(self) -> list[CatalogueModel]:
        out = []
        for field, blob in (await self._redis.hgetall(self._key("models"))).items():
            parsed = _parse_field(field)
            model = CatalogueModel.from_bytes(*parsed, blob) if parsed and isinstance(blob, bytes) else None
            if model is not None:
                out.append(model)
        return out

    async def model(self, scope: str, catalogue: str) -> CatalogueModel | None:
        blob = await self._redis.hget(self._key("models"), _model_field(scope, catalogue))
        return CatalogueModel.from_bytes(scope, catalogue, blob) if isinstance(blob, bytes) else None

    async def save_model(self, model: CatalogueModel) -> None:
        await self._redis.hset(self._key("models"), _model_field(model.scope, model.catalogue), model.to_bytes())


class FileState:
    """One JSON file, rewritten atomically after each change (one process owns it); no file: memory only."""

    shared = False

    def __init__(self, path: Path | None, max_examples: int):
        self._path = path
        self._max = max_examples
        self._examples: dict[str, list[str]] = {}
        self._versions: dict[str, int] = {}
        self._models: dict[str, str] = {}
        self._lock = asyncio.Lock()
        if path is not None and path.exists():
            try:
                data = json.loads(path.read_text())
                for scope, entry in data.get("scopes", {}).items():
                    self._examples[scope] = list(entry["examples"])
                    self._versions[scope] = int(entry["version"])
                self._models = dict(data.get("models", {}))
            except (ValueError, KeyError, TypeError, OSError) as exc:
                log.warning("router state file %s unreadable, starting empty: %r", path.name, exc)

    async def versions(self) -> dict[str, int]:
        return dict(self._versions)

    async def examples(self, scope: str) -> tuple[list[Example], int]:
        parsed = (Example.from_json(r) for r in self._examples.get(scope, ()))
        return [e for e in parsed if e is not None], self._versions.get(scope, 0)

    async def append(self, scope: str, examples: Sequence[Example]) -> int:
        kept = self._examples.setdefault(scope, [])
        kept.extend(e.to_json() for e in examples)
        del kept[: max(0, len(kept) - self._max)]
        self._versions[scope] = self._versions.get(scope, 0) + len(examples)
        await self._write()
        return self._versions[scope]

    async def models(self) -> list[CatalogueModel]:
        out = []
        for field, blob in self._models.items():
            parsed = _parse_field(field)
            model = CatalogueModel.from_bytes(*parsed, base64.b64decode(blob)) if parsed else None
            if model is not None:
                out.append(model)
        return out

    async def model(self, scope: str, catalogue: str) -> CatalogueModel | None:
        blob = self._models.get(_model_field(scope, catalogue))
        return CatalogueModel.from_bytes(scope, catalogue, base64.b64decode(blob)) if blob else None

    async def save_model(self, model: CatalogueModel) -> None:
        self._models[_model_field(model.scope, model.catalogue)] = base64.b64encode(model.to_bytes()).decode()
        await self._write()

    async def _write(self) -> None:
        if self._path is None:
            return
        snapshot = json.dumps(
            {
                "version": 1,
                "scopes": {s: {"version": self._versions[s], "examples": e} for s, e in self._examples.items()},
                "models": self._models,
            }
        )
        async with self._lock:
            await asyncio.to_thread(_atomic_write, self._path, snapshot)


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text)
    os.replace(temporary, path)
