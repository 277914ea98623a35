"""`bench.loadgen.processes.ManagedServer`: a server and everything it forked stop together, and a
start that fails says why with the server's own output."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request

import pytest

from bench.loadgen.processes import REPO, ManagedServer, free_port, sim_command
from tests.support.stack import wait_for


def _group(pgid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "-g", str(pgid)], capture_output=True, text=True, check=False)
    return [int(p) for p in out.stdout.split()]


def test_stop_ends_the_processes_the_server_forked() -> None:
    """`uvicorn --workers 2` forks its workers: none of them outlives the server."""
    port = free_port()
    server = ManagedServer(sim_command(port, "--workers", "2"), port, timeout_s=60)
    with server:
        assert server.proc is not None
        pgid = server.proc.pid
        assert os.getpgid(pgid) == pgid  # a process group of its own, not the test runner's
        assert len(_group(pgid)) >= 3  # the supervisor and its two workers
    assert _group(pgid) == []


def test_a_server_that_dies_at_start_shows_its_log_tail() -> None:
    code = "import sys; print('missing-setting-xyz: cannot start', flush=True); sys.exit(3)"
    with pytest.raises(RuntimeError, match=r"exited with 3: .*missing-setting-xyz"):
        ManagedServer([sys.executable, "-c", code], free_port()).__enter__()


def test_a_server_that_never_gets_ready_times_out_with_its_log_tail() -> None:
    code = "import time; print('still-compiling-abc', flush=True); time.sleep(60)"
    server = ManagedServer([sys.executable, "-c", code], free_port(), timeout_s=2)
    with pytest.raises(TimeoutError, match="still-compiling-abc"):
        server.__enter__()
    assert server.proc is not None and server.proc.poll() is not None  # stopped, not left behind


def test_env_is_added_to_the_child_environment() -> None:
    port = free_port()
    code = (
        "import http.server, os\n"
        "class H(http.server.BaseHTTPRequestHandler):\n"
        "    def do_GET(self):\n"
        "        body = os.environ['MANAGED_SERVER_PROBE'].encode()\n"
        "        self.send_response(200); self.end_headers(); self.wfile.write(body)\n"
        f"http.server.HTTPServer(('127.0.0.1', {port}), H).serve_forever()\n"
    )
    server = ManagedServer([sys.executable, "-c", code], port, env={"MANAGED_SERVER_PROBE": "probe-42"})
    with server, urllib.request.urlopen(server.url + "/healthz", timeout=5) as resp:
        assert resp.read() == b"probe-42"


def test_a_server_stops_when_the_process_that_started_it_is_killed() -> None:
    """A run killed outright (SIGKILL, no teardown) must not leave its servers running."""
    port = free_port()
    parent_code = (
        "import sys, time\n"
        "from bench.loadgen.processes import ManagedServer, sim_command\n"
        f"server = ManagedServer(sim_command({port}), {port}).__enter__()\n"
        "print(server.proc.pid, flush=True)\n"
        "time.sleep(120)\n"
    )
    with subprocess.Popen([sys.executable, "-c", parent_code], cwd=REPO, stdout=subprocess.PIPE, text=True) as parent:
        try:
            assert parent.stdout is not None
            child = int(parent.stdout.readline())
            assert _group(child)
        finally:
            parent.kill()
    wait_for(lambda: _group(child) == [], timeout=20, what="the orphaned server to stop")
