"""Servers that benchmark scripts start and stop themselves (a sim, a gateway, vLLM), on loopback ports."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import IO

__all__ = ["ManagedServer", "free_port", "sim_command", "start_all"]

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def sim_command(port: int, *flags: str) -> list[str]:
    return [sys.executable, "-m", "sim", "--port", str(port), *flags]


_PR_SET_PDEATHSIG = 1
_LIBC = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True) if sys.platform == "linux" else None


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM it when the process that started it dies, so a test run or
    benchmark killed outright (a `timeout`, SIGKILL) leaves no server behind. Linux sends it when
    the *thread* that forked the child exits, so children must be started from a thread that lives
    as long as they do (`start`, then `wait_ready` from anywhere)."""
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class ManagedServer:
    """A child process serving HTTP on 127.0.0.1:`port`, ready once `ready_path` answers 200.

    It runs in a process group of its own, so stopping it also stops the workers it forked, and
    it is told to stop when this process dies. `env` is added to this process's environment. A
    start that fails says why with the tail of its log."""

    def __init__(
        self,
        args: Sequence[str] | str,
        port: int,
        ready_path: str = "/healthz",
        timeout_s: float = 60.0,
        env: Mapping[str, str] | None = None,
        stop_timeout_s: float = 10.0,
    ):
        self.args = shlex.split(args) if isinstance(args, str) else list(args)
        self.port = port
        self.ready_path = ready_path
        self.timeout_s = timeout_s
        self.env = {**os.environ, **(env or {})}
        self.stop_timeout_s = stop_timeout_s
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_tail(self, chars: int = 4000) -> str:
        """The last `chars` characters the server printed (stdout and stderr together)."""
        if self._log is None:
            return ""
        self._log.flush()
        self._log.seek(0, os.SEEK_END)
        size = self._log.tell()
        self._log.seek(max(0, size - chars))
        return self._log.read().decode(errors="replace")

    def __enter__(self) -> ManagedServer:
        self.start()
        self.wait_ready()
        return self

    def start(self) -> None:
        """Start the process without waiting for it (see `_die_with_parent` for which thread may)."""
        # A file, not a pipe: a chatty server must never block on it. Closed by `stop`.
        self._log = tempfile.TemporaryFile()  # noqa: SIM115
        self.proc = subprocess.Popen(
            self.args,
            cwd=REPO,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,  # only prctl runs between fork and exec
        )

    def wait_ready(self) -> None:
        """Return once `ready_path` answers 200; a server that dies or times out is stopped."""
        try:
            self._poll_ready()
        except BaseException:  # not ready, or interrupted while waiting: nothing is left running
            self.stop()
            raise

    def _poll_ready(self) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + self.timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.args[:4]} exited with {self.proc.returncode}: {self.log_tail()}")
            try:
                with urllib.request.urlopen(self.url + self.ready_path, timeout=1.0) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                time.sleep(0.05)  # polling while the child binds its port
        raise TimeoutError(
            f"{self.url}{self.ready_path} not ready after {self.timeout_s}s; its log ends: {self.log_tail()}"
        )

    def stop(self) -> None:
        """SIGTERM to the whole process group, SIGKILL to what is left after `stop_timeout_s`;
        returns once every process of the group is gone (its memory and ports are free)."""
        proc = self.proc
        if proc is not None:
            self._signal_group(proc, signal.SIGTERM)
            if not self._wait_group(proc, self.stop_timeout_s):
                self._signal_group(proc, signal.SIGKILL)
                self._wait_group(proc, 10.0)
        if self._log is not None:
            self._log.close()
            self._log = None

    @staticmethod
    def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> bool:
        """Send `sig` to the group; False when no process of it is left."""
        try:
            os.killpg(proc.pid, sig)  # the group id is the leader's pid (start_new_session)
        except (ProcessLookupError, PermissionError):
            return False
        return True

    @classmethod
    def _wait_group(cls, proc: subprocess.Popen[bytes], timeout_s: float) -> bool:
        """Wait for the leader, then for the processes it forked; True once all are gone."""
        deadline = time.monotonic() + timeout_s
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            return False
        while cls._signal_group(proc, 0):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)  # polling while the group's last processes exit
        return True

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


def start_all(stack: contextlib.ExitStack, servers: Sequence[ManagedServer]) -> None:
    """Start `servers` in parallel (a gateway spends seconds importing); all stop when `stack` closes.
    They are forked from this thread, since a child dies with the thread that forked it."""
    for server in servers:
        server.start()
        stack.callback(server.stop)
    with ThreadPoolExecutor(max_workers=max(1, len(servers))) as pool:
        futures = [pool.submit(s.wait_ready) for s in servers]
    for f in futures:
        f.result()  # the first start-up failure, raised once every server is registered for stopping
