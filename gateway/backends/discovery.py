"""Replicas found by name: a backend with `discovery: dns` is the set of addresses its base_url's
host resolves to (a Kubernetes headless Service has one A/AAAA record per ready pod).

Every `discovery_interval` the name is resolved again. A new address becomes a replica (a backend
of its own, named `<backend>@<address>`) once its `/health` answers and its health check passes;
until then it gets no traffic. An address that is gone drains: it takes no new requests, the
streams in flight on it finish, and it is removed (its connections closed) when the last ends.
The resolver is injectable; `HostsFileResolver` reads a hosts-format file, for tests and for
setups without DNS.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit, urlunsplit

from gateway import metrics
from gateway.backends.backend import Backend
from gateway.backends.engine_metrics import forget
from gateway.backends.health import HealthChecker
from gateway.backends.registry import BackendRegistry
from gateway.settings import BackendSettings
from gateway.upstreams import http1

__all__ = ["DNSResolver", "Discovery", "HostsFileResolver", "Resolver", "replica_settings"]

log = logging.getLogger(__name__)


class Resolver(Protocol):
    async def resolve(self, host: str) -> list[str]:
        """The addresses `host` names now (empty when it names none)."""
        ...


class DNSResolver:
    """The system resolver: every A and AAAA record of the name."""

    async def resolve(self, host: str) -> list[str]:
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            log.warning("cannot resolve %s: %s", host, exc)
            return []
        return sorted({str(info[4][0]) for info in infos})


class HostsFileResolver:
    """A hosts-format file (`address name [names...]` per line, `#` comments), read on every
    resolution: every line that lists the name adds an address."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    async def resolve(self, host: str) -> list[str]:
        try:
            text = await asyncio.to_thread(self.path.read_text)
        except OSError as exc:
            log.warning("cannot read hosts file %s: %s", self.path, exc.strerror)
            return []
        found = []
        for line in text.splitlines():
            fields = line.split("#", 1)[0].split()
            if len(fields) >= 2 and host in fields[1:] and fields[0] not in found:
                found.append(fields[0])
        return found


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        log.warning("ignoring %r: not an IP address", text)
        return False
    return True


def replica_settings(group: BackendSettings, address: str) -> BackendSettings:
    """One replica of a discovered backend: the group's settings at one address."""
    assert group.base_url is not None
    parts = urlsplit(group.base_url)
    host = f"[{address}]" if ipaddress.ip_address(address).version == 6 else address
    netloc = host if parts.port is None else f"{host}:{parts.port}"
    if parts.username:
        netloc = parts.netloc.rsplit("@", 1)[0] + "@" + netloc
    url = urlunsplit(parts._replace(netloc=netloc))
    return group.model_copy(update={"name": f"{group.name}@{address}", "base_url": url, "discovery": None})


@dataclass(eq=False)
class _Group:
    settings: BackendSettings
    resolver: Resolver
    replicas: dict[str, Backend] = field(default_factory=dict)  # address → replica (draining ones too)
    due: float = 0.0

    @property
    def host(self) -> str:
        return urlsplit(self.settings.base_url or "").hostname or ""


class Discovery:
    def __init__(
        self,
        groups: list[BackendSettings],
        registry: BackendRegistry,
        health: HealthChecker,
        make_backend: Callable[[BackendSettings], Backend],
        resolver: Resolver | None = None,
    ):
        self._groups = [
            _Group(g, resolver or (HostsFileResolver(g.hosts_file) if g.hosts_file else DNSResolver())) for g in groups
        ]
        self._registry = registry
        self._health = health
        self._make = make_backend
        self._task: asyncio.Task[None] | None = None

    async def refresh(self) -> None:
        """Resolve every group once: gate new addresses, drain gone ones, remove drained ones."""
        await asyncio.gather(*(self._refresh(g) for g in self._groups))

    async def _refresh(self, group: _Group) -> None:
        addresses = set(await group.resolver.resolve(group.host))
        for address, replica in group.replicas.items():
            if replica.draining != (address not in addresses):
                replica.draining = address not in addresses  # or back before it finished draining
                log.info("replica %s %s", replica.name, "left: draining" if replica.draining else "is back")
        await self._sweep(group)
        new = [a for a in addresses if a not in group.replicas and _is_address(a)]
        joined = await asyncio.gather(*(self._gate(group, a) for a in new))
        for address, gated in zip(new, joined, strict=True):
            if gated is not None:
                group.replicas[address] = gated
                self._registry.add(gated)
                log.info("replica %s joined %s", gated.name, group.host)

    async def _gate(self, group: _Group, address: str) -> Backend | None:
        """A replica for `address` once its /health and health check pass; None: not yet."""
        settings = replica_settings(group.settings, address)
        root = (settings.base_url or "").removesuffix("/v1")
        try:
            status, _ = await http1.get(root + "/health", timeout=2.0)
        except (http1.HttpError, OSError, ValueError):
            return None
        if status != 200:
            return None
        backend = self._make(settings)
        if not await self._health.check(backend):
            await backend.transport.aclose()
            return None
        return backend

    async def _sweep(self, group: _Group) -> None:
        """Remove the draining replicas whose last request ended."""
        for address, replica in list(group.replicas.items()):
            if replica.draining and replica.outstanding == 0:
                await self._remove(group, address, replica)

    async def _remove(self, group: _Group, address: str, replica: Backend) -> None:
        del group.replicas[address]
        self._registry.remove(replica)
        forget(replica.name)
        for metric in (metrics.BACKEND_UP, metrics.CIRCUIT_STATE):
            with contextlib.suppress(KeyError):
                metric.remove(replica.name)
        await replica.transport.aclose()
        log.info("replica %s drained and removed", replica.name)

    def start(self) -> None:
        if self._groups and self._task is None:
            self._task = asyncio.create_task(self._loop(), name="discovery")

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(0.5)  # the resolution period's resolution, not a synchronisation
            now = loop.time()
            for group in self._groups:
                try:
                    if group.due <= now:
                        group.due = now + group.settings.discovery_interval
                        await self._refresh(group)
                    else:
                        await self._sweep(group)  # drained replicas leave as soon as they are idle
                except Exception:
                    log.exception("discovery of %s failed", group.host)

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        for group in self._groups:
            for replica in group.replicas.values():
                await replica.transport.aclose()
