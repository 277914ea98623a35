"""Where load may go: loopback by default, another host only when the user names it explicitly.

A load generator pointed at the wrong address is an attack; refusing is the safe default.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from urllib.parse import urlsplit

__all__ = ["Target", "TargetRefused", "parse_target"]


class TargetRefused(ValueError):
    """The base URL is not a loopback address and its host was not explicitly allowed."""


@dataclass(frozen=True, slots=True)
class Target:
    host: str
    port: int
    base_path: str  # e.g. "/v1"

    @property
    def authority(self) -> str:
        return f"{self.host}:{self.port}"

    def path(self, endpoint: str) -> str:
        """`endpoint` ("/chat/completions") under the base path."""
        return self.base_path.rstrip("/") + endpoint


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def parse_target(base_url: str, allow_hosts: frozenset[str] = frozenset()) -> Target:
    """Split `http://host:port/v1`; refuse hosts that are neither loopback nor in `allow_hosts`."""
    parts = urlsplit(base_url)
    if parts.scheme != "http":
        raise TargetRefused(f"{base_url}: only plain http:// targets are supported")
    host = parts.hostname or ""
    if not host:
        raise TargetRefused(f"{base_url}: no host")
    if not _is_loopback(host) and host not in allow_hosts:
        raise TargetRefused(f"{host} is not a loopback address; pass --allow-host {host} to send load there on purpose")
    return Target(host=host, port=parts.port or 80, base_path=parts.path.rstrip("/") or "/v1")
