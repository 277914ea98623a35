"""Reloading the configuration without a restart: on SIGHUP, or when the config file changes.

The new file is read the way the running one was (file, environment, command-line overrides),
validated, and built into a new generation (gateway/services.py); only then is it installed, in
one step. When any of that fails the running configuration stays, the error is logged, and
`switchyard_config_reloads_total{outcome="invalid"|"failed"}` and `switchyard_config_last_reload_ok`
say so. Requests already running keep their generation: streams finish on the backends they began
on, and backends the new file drops are closed once their last request ends.

Redis, the embedder and the ledger are shared by every generation; a file that changes them is
refused (they need a restart). Changes under `server`, `tracing`, `request_log` and `responses`
are applied at the next restart (logged).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import signal
from pathlib import Path

from gateway import metrics
from gateway.admin.store import AdminStore
from gateway.services import Services, assemble, start_engines
from gateway.settings import ConfigError, Settings, SettingsSource

__all__ = ["ConfigReloader"]

log = logging.getLogger(__name__)


def _needs_restart(old: Settings, new: Settings) -> list[str]:
    changed = []
    if old.redis != new.redis:
        changed.append("redis")
    if old.embedder != new.embedder or old.needs_embedder() != new.needs_embedder():
        changed.append("embedder (or turning on the semantic cache or the tool router)")
    if old.spend.ledger != new.spend.ledger:
        changed.append("spend.ledger")
    return changed


def _at_restart(old: Settings, new: Settings) -> list[str]:
    """What the process built once at start-up (the HTTP server, tracing and the request log, the
    Responses store): changes to it are applied at the next restart."""
    parts = ("server", "tracing", "request_log", "responses")
    return [part for part in parts if getattr(old, part) != getattr(new, part)]


class ConfigReloader:
    def __init__(self, services: Services, source: SettingsSource, poll_seconds: float = 1.0):
        self.services = services
        self.source = source
        self.poll_seconds = poll_seconds
        self.generation = 1
        self._lock = asyncio.Lock()
        self._watch: asyncio.Task[None] | None = None
        self._pending: set[asyncio.Task[bool]] = set()
        metrics.CONFIG_LOADED.set(1)  # the configuration the process started with is in force

    async def reload(self, reason: str = "request") -> bool:
        """Apply the configuration as it is now; False (and the old one stays) when it is refused."""
        async with self._lock:
            current = self.services.settings
            try:
                settings = await asyncio.to_thread(self.source.load)
                restart = _needs_restart(current, settings)
                if restart:
                    raise ConfigError(f"these need a restart, not a reload: {', '.join(restart)}")
                settings.admin.digest()  # an admin key named by a missing variable is refused now
            except ConfigError as exc:
                return self._refused("invalid", reason, str(exc))
            svc = self.services
            try:
                gen = await assemble(
                    settings, redis=svc.redis, embedder=svc.embedder, counters=svc.counters,
                    ledger=svc.ledger, responses=svc.responses, overrides=svc.transport_overrides,
                    resolver=svc.resolver, previous=svc.generation,
                )  # fmt: skip
            except Exception as exc:
                log.exception("reload (%s): building the new configuration failed", reason)
                return self._refused("failed", reason, f"{type(exc).__name__}: {exc}")
            for part in _at_restart(current, settings):
                log.warning("reload (%s): changes under %r take effect at the next restart", reason, part)
            old = svc.install(gen)
            svc.admin_digest = settings.admin.digest()
            if settings.admin.enabled and svc.redis is not None:
                svc.admin = svc.admin or AdminStore(svc.redis, settings.redis.key_prefix, svc.counters)
            else:
                svc.admin = None
            start_engines(svc, gen.registry.backends)
            gen.start()
            if old is not None:
                svc.retire(old)
            self.generation += 1
            metrics.CONFIG_RELOADS.labels("applied").inc()
            metrics.CONFIG_LOADED.set(1)
            log.info(
                "reload (%s): configuration %d applied; backends: %s",
                reason, self.generation, ", ".join(b.name for b in gen.registry.backends) or "none",
            )  # fmt: skip
            return True

    @staticmethod
    def _refused(outcome: str, reason: str, message: str) -> bool:
        metrics.CONFIG_RELOADS.labels(outcome).inc()
        metrics.CONFIG_LOADED.set(0)
        log.error("reload (%s) refused, the running configuration stays: %s", reason, message)
        return False

    def _spawn(self, reason: str) -> None:
        task = asyncio.ensure_future(self.reload(reason))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    def start(self, watch: bool) -> None:
        """Reload on SIGHUP, and on changes to the file when `watch` is on."""
        loop = asyncio.get_running_loop()
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):  # not the main thread
            loop.add_signal_handler(signal.SIGHUP, self._spawn, "SIGHUP")
        if watch and self.source.path is not None and self._watch is None:
            self._watch = asyncio.create_task(self._watch_file(self.source.path), name="config-watch")

    async def _watch_file(self, path: Path) -> None:
        last = await asyncio.to_thread(_fingerprint, path)
        while True:
            await asyncio.sleep(self.poll_seconds)  # the polling period of the file, not a synchronisation
            now = await asyncio.to_thread(_fingerprint, path)
            if now != last:
                last = now
                await self.reload("file changed")

    async def aclose(self) -> None:
        loop = asyncio.get_running_loop()
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.remove_signal_handler(signal.SIGHUP)
        tasks = [t for t in (self._watch, *self._pending) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _fingerprint(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None
