"""Servers that benchmark scripts start and stop themselves (a sim, a gateway), on loopback ports."""

from __future__ import annotations

import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import IO

__all__ = ["ManagedServer", "free_port", "sim_command"]

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def sim_command(port: int, *flags: str) -> list[str]:
    return [sys.executable, "-m", "gateway.sim", "--port", str(port), *flags]


class ManagedServer:
    """A child process serving HTTP on 127.0.0.1:`port`, ready once `ready_path` answers 200."""

    def __init__(self, args: Sequence[str] | str, port: int, ready_path: str = "/healthz", timeout_s: float = 60.0):
        self.args = shlex.split(args) if isinstance(args, str) else list(args)
        self.port = port
        self.ready_path = ready_path
        self.timeout_s = timeout_s
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ManagedServer:
        self._log = tempfile.TemporaryFile()  # a file, not a pipe: a chatty server must never block on it
        self.proc = subprocess.Popen(
            self.args, cwd=REPO, env=os.environ.copy(), stdout=self._log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + self.timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self._log.seek(0)
                err = self._log.read().decode(errors="replace")[-2000:]
                raise RuntimeError(f"{self.args[:4]} exited with {self.proc.returncode}: {err}")
            try:
                with urllib.request.urlopen(self.url + self.ready_path, timeout=1.0) as resp:
                    if resp.status == 200:
                        return self
            except OSError:
                time.sleep(0.05)  # polling while the child binds its port
        self.stop()
        raise TimeoutError(f"{self.url}{self.ready_path} not ready after {self.timeout_s}s")

    def stop(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
