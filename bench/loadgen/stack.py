"""Sims and gateways a benchmark starts itself, started together, plus what it reads between phases.

A gateway gets a YAML config written to a scratch directory (its port and state directory filled
in). Several servers start in parallel, since a gateway takes seconds to import and a short bench
would otherwise spend most of its time waiting for them. Between phases a bench reads the sims'
`/sim/stats`, restarts their random draws with `/sim/reset`, and sums the gateway's Prometheus
counters; none of that is on a timed path, so plain blocking HTTP is enough.
"""

from __future__ import annotations

import contextlib
import json
import sys
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import yaml

from bench.loadgen.processes import ManagedServer, free_port

__all__ = ["gateway_server", "get_json", "metric_total", "post", "start_all"]


def gateway_server(config: dict[str, Any], workdir: Path, ready_path: str = "/readyz") -> ManagedServer:
    """A `python -m gateway serve --config` process for `config` (not started yet)."""
    port = free_port()
    server = {"state_dir": str(workdir / f"state-{port}"), "log_level": "warning", **config.get("server", {})}
    full = {**config, "server": {**server, "port": port}}
    path = workdir / f"gateway-{port}.yaml"
    path.write_text(yaml.safe_dump(full))
    return ManagedServer([sys.executable, "-m", "gateway", "serve", "--config", str(path)], port, ready_path=ready_path)


def start_all(stack: contextlib.ExitStack, servers: Sequence[ManagedServer]) -> None:
    """Start `servers` in parallel; each is stopped when `stack` closes, also if another failed."""
    with ThreadPoolExecutor(max_workers=max(1, len(servers))) as pool:
        futures = [pool.submit(s.__enter__) for s in servers]
    for server in servers:
        stack.callback(server.stop)
    for f in futures:
        f.result()  # raise the first start-up failure, after every server is registered for stopping


def get_json(url: str, timeout: float = 10.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return json.loads(resp.read())


def post(url: str, body: bytes = b"{}", timeout: float = 10.0) -> bytes:
    req = urllib.request.Request(url, data=body, headers={"content-type": "application/json"}, method="POST")
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return bytes(resp.read())


def metric_total(url: str, name: str, **labels: str) -> float:
    """The sum of `name`'s samples whose labels include `labels`, from `url`'s `/metrics`."""
    with urllib.request.urlopen(url + "/metrics", timeout=10.0) as resp:
        text = resp.read().decode()
    total = 0.0
    for line in text.splitlines():
        if not (line.startswith(name + "{") or line.startswith(name + " ")):
            continue
        head, _, value = line.rpartition(" ")
        if all(f'{k}="{v}"' in head for k, v in labels.items()):
            total += float(value)
    return total
