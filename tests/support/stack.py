"""Real processes for integration tests: `switchyard sim` backends and gateways with a config."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.support.processes import ServerProcess, free_port, switchyard_command


def start_sim(*args: str, log_dir: Path | None = None, name: str = "sim") -> ServerProcess:
    port = free_port()
    cmd = [sys.executable, "-m", "sim", "--port", str(port), *args]
    log = log_dir / f"{name}-{port}.log" if log_dir else None
    return ServerProcess(cmd, port, log_path=log).start()


def write_config(path: Path, config: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(config))
    return path


def start_gateway(
    config: dict[str, Any],
    tmp_path: Path,
    *,
    env: dict[str, str] | None = None,
    name: str = "gateway",
    extra_args: tuple[str, ...] = (),
    ready_path: str = "/readyz",
    timeout: float = 60.0,
    lean: bool = True,
) -> ServerProcess:
    """A gateway process with `config`. `lean` turns off what needs the embedding model (the
    semantic cache) unless the config asks for it, so tests that are not about it start fast."""
    port = free_port()
    state_dir = tmp_path / f"{name}-{port}-state"  # router learning never leaks between tests
    config = {**config, "server": {"state_dir": str(state_dir), **config.get("server", {}), "port": port}}
    if lean:
        config.setdefault("cache", {"semantic": False})
        config.setdefault("router", {"enabled": False})
    cfg = write_config(tmp_path / f"{name}-{port}.yaml", config)
    proc = ServerProcess(
        switchyard_command("serve", "--config", str(cfg), *extra_args),
        port,
        ready_path=ready_path,
        env=env,
        log_path=tmp_path / f"{name}-{port}.log",
    )
    return proc.start(timeout)


def sim_backend(name: str, sim: ServerProcess, **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": "openai", "base_url": sim.url + "/v1", **extra}


class SimControl:
    """The sim's admin endpoints."""

    def __init__(self, sim: ServerProcess):
        self.url = sim.url

    def stats(self) -> dict[str, Any]:
        return httpx.get(self.url + "/sim/stats").json()  # type: ignore[no-any-return]

    def configure(self, **patch: Any) -> None:
        httpx.post(self.url + "/sim/config", json=patch).raise_for_status()

    def reset(self) -> None:
        httpx.post(self.url + "/sim/reset").raise_for_status()

    def requests_to(self, path: str = "/v1/chat/completions") -> int:
        return int(self.stats()["requests"].get(path, 0))

    def last_request(self) -> dict[str, Any]:
        recent = self.stats()["recent"]
        return recent[-1]  # type: ignore[no-any-return]


def metric_value(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels`."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        head, _, value = line.rpartition(" ")
        if all(f'{k}="{v}"' in head for k, v in labels.items()):
            total += float(value)
    return total


def wait_for(condition: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    """Return once `condition()` holds; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)  # polling an observable condition, bounded by the deadline
    raise AssertionError(f"{what} not met in {timeout:g}s")


def start_engine_gateway(tmp_path: Path, model: str, engine: dict[str, Any], timeout: float) -> ServerProcess:
    """A gateway whose only backend is its own engine serving `model` (no auth, no response cache)."""
    config = {"auth": {"mode": "none"}, "cache": {"enabled": False},
              "backends": [{"name": "local", "type": "local", "models": [model], "engine": engine}]}
    return start_gateway(config, tmp_path, env={"HF_HUB_OFFLINE": "1"}, timeout=timeout)


TINY_MODEL = "tiny-llama"


def tiny_engine(tmp_path: Path, max_positions: int = 2048, **settings: Any) -> dict[str, Any]:
    """Engine settings for a tiny random Llama (a real BPE tokenizer) built under `tmp_path`: cheap to
    load and run, for tests of what the gateway does around an engine rather than of its answers."""
    from tests.batching.conftest import build_tiny_llama, build_tokenizer

    model_dir = tmp_path / "model"
    model_dir.mkdir()
    build_tiny_llama(model_dir, build_tokenizer(model_dir), max_positions=max_positions)
    engine = {"model": str(model_dir), "devices": ["cpu"], "max_num_seqs": 4, "max_num_batched_tokens": 64,
              "max_model_len": max_positions, "warmup": False}  # fmt: skip
    return {**engine, **settings}
