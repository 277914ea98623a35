"""The built image as a real container: the embedded default gets ready and answers the openai SDK,
plain and streamed; it runs as a non-root user, on a read-only root filesystem with writable
volumes only where the Kubernetes manifests mount them; its HEALTHCHECK passes; and `docker stop`
during a stream drains it.

One container serves the whole module (each start copies the image on the vfs storage driver and
loads the bundled model); the drain test stops it, so it runs last.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import openai
import pytest
import yaml

from tests.support.containers import IMAGE, Container, image_config, needs_image
from tests.support.processes import REPO, free_port
from tests.support.stack import wait_for

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.model, needs_image]

MODEL = "smollm2-135m-instruct"
MANIFEST = REPO / "deploy" / "kubernetes" / "standalone" / "deployment.yaml"
READY_TIMEOUT_S = 240.0
DRAIN_S = 90


def _manifest_gateway() -> tuple[dict[str, Any], dict[str, Any]]:
    """The standalone Deployment's gateway container and its pod spec."""
    deployment = next(d for d in yaml.safe_load_all(MANIFEST.read_text()) if d and d["kind"] == "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    container = next(c for c in pod["containers"] if c["name"] == "switchyard")
    return container, pod


def _run_args_like_the_manifest(port: int) -> list[str]:
    """`docker run` flags for what the manifest asks of the runtime: a read-only root, every
    capability dropped, no privilege escalation, and a fresh writable volume at each emptyDir mount.
    The config volume is left out: this test runs the image's baked-in default."""
    container, pod = _manifest_gateway()
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True and security["allowPrivilegeEscalation"] is False
    args = ["--read-only", "--security-opt", "no-new-privileges"]
    args += [f"--cap-drop={cap}" for cap in security["capabilities"]["drop"]]
    empty_dirs = {v["name"] for v in pod["volumes"] if "emptyDir" in v}
    mounts = [m["mountPath"] for m in container["volumeMounts"] if m["name"] in empty_dirs]
    assert mounts, "the manifest mounts no writable volume"
    args += [arg for path in mounts for arg in ("--mount", f"type=volume,target={path}")]
    # The host's network (no bridge on this kind of host), on a port of our own; a drain deadline
    # that a slow host still generates the drain test's stream within.
    env = {"SWITCHYARD_SERVER__PORT": str(port), "SWITCHYARD_SERVER__DRAIN_SECONDS": str(DRAIN_S)}
    return [*args, "--network", "host", *(a for k, v in env.items() for a in ("-e", f"{k}={v}"))]


class Gateway:
    def __init__(self, container: Container, port: int):
        self.container = container
        self.url = f"http://127.0.0.1:{port}"
        self.ready_after_s = 0.0

    def client(self) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.url + "/v1", api_key="unused", max_retries=0, timeout=120)


def _ready(url: str) -> bool:
    try:
        return httpx.get(url + "/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture(scope="module")
def gateway() -> Iterator[Gateway]:
    port = free_port()
    container = Container(IMAGE, args=_run_args_like_the_manifest(port), name="sy-image")
    running = Gateway(container, port)
    container.run()
    try:

        def ready() -> bool:
            assert container.running(), container.logs()
            return _ready(running.url)

        wait_for(ready, timeout=READY_TIMEOUT_S, what="/readyz 200 in the container")
        running.ready_after_s = time.monotonic() - container.started_at
        # Shown with -s (deploy/offline/check.sh): the figures deploy/README.md quotes.
        print(f"docker create: {container.created_in_s:.1f} s; start to /readyz 200: {running.ready_after_s:.1f} s")
        yield running
    finally:
        container.remove()


def test_readyz_turns_200_on_the_embedded_default(gateway: Gateway) -> None:
    body = httpx.get(gateway.url + "/readyz", timeout=5)
    assert body.status_code == 200
    assert gateway.ready_after_s < READY_TIMEOUT_S


def test_the_openai_sdk_gets_answers_plain_and_streamed(gateway: Gateway) -> None:
    client = gateway.client()
    messages: Any = [{"role": "user", "content": "Say hello."}]
    plain = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=8)
    assert plain.choices[0].message.content
    assert plain.usage is not None and plain.usage.completion_tokens >= 1

    text, finish = [], None
    for chunk in client.chat.completions.create(model=MODEL, messages=messages, max_tokens=8, stream=True):
        if chunk.choices:
            text.append(chunk.choices[0].delta.content or "")
            finish = chunk.choices[0].finish_reason or finish
    assert "".join(text) and finish in ("stop", "length")


def test_runs_as_the_images_non_root_user(gateway: Gateway) -> None:
    configured = image_config(IMAGE)["Config"]["User"]
    assert configured.split(":")[0] not in ("", "root", "0")
    status = gateway.container.exec("cat", "/proc/1/status").stdout
    uid = next(line.split()[1:] for line in status.splitlines() if line.startswith("Uid:"))
    assert set(uid) == {configured.split(":")[0]}  # real, effective, saved and filesystem uid
    _, pod = _manifest_gateway()
    assert pod["securityContext"]["runAsUser"] == int(configured.split(":")[0])  # what the manifest expects


def test_the_root_filesystem_is_read_only_and_the_volumes_are_writable(gateway: Gateway) -> None:
    state = gateway.container.inspect()
    assert state["HostConfig"]["ReadonlyRootfs"] is True
    assert gateway.container.exec("touch", "/opt/switchyard/probe").returncode != 0
    assert gateway.container.exec("touch", "/etc/switchyard/probe").returncode != 0
    for mount in (m["Destination"] for m in state["Mounts"]):
        assert gateway.container.exec("touch", f"{mount}/probe").returncode == 0, mount


def test_the_image_healthcheck_passes(gateway: Gateway) -> None:
    healthcheck = image_config(IMAGE)["Config"]["Healthcheck"]
    assert "/healthz" in " ".join(healthcheck["Test"])

    def healthy() -> bool:
        return bool(gateway.container.inspect()["State"]["Health"]["Status"] == "healthy")

    # The first check runs one interval after the start.
    wait_for(healthy, timeout=healthcheck["Interval"] / 1e9 * 3 + 30, what="HEALTHCHECK healthy")
    assert gateway.container.inspect()["State"]["Health"]["FailingStreak"] == 0


def test_docker_stop_during_a_stream_drains_it(gateway: Gateway) -> None:
    """Last in the module: it stops the shared container."""
    tokens = 48
    client = gateway.client()
    first_chunk = threading.Event()
    seen: dict[str, Any] = {"chunks": 0, "finish": None, "completion_tokens": None}

    def stream() -> None:
        for chunk in client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "Tell me a long story about a lighthouse."}],
            max_tokens=tokens,
            stream=True,
            stream_options={"include_usage": True},
            extra_body={"ignore_eos": True},
        ):
            if chunk.choices and chunk.choices[0].delta.content:
                seen["chunks"] += 1
                first_chunk.set()
            if chunk.choices and chunk.choices[0].finish_reason:
                seen["finish"] = chunk.choices[0].finish_reason
            if chunk.usage is not None:
                seen["completion_tokens"] = chunk.usage.completion_tokens
        seen["ended"] = time.monotonic()

    drain_s = DRAIN_S
    with ThreadPoolExecutor(2) as pool:
        streaming = pool.submit(stream)
        assert first_chunk.wait(120), "the stream produced nothing"
        stop_started = time.monotonic()
        stopping = pool.submit(gateway.container.stop, drain_s + 30)

        def draining() -> bool:
            try:
                return httpx.get(gateway.url + "/readyz", timeout=2).status_code == 503
            except httpx.HTTPError:
                return False

        wait_for(draining, timeout=10, what="/readyz 503 after docker stop")
        with pytest.raises(openai.APIStatusError) as refused:
            client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=4)
        refused_at = time.monotonic()
        assert refused.value.status_code == 503
        assert refused.value.response.headers.get("retry-after")

        streaming.result(timeout=drain_s + 30)
        stopping.result(timeout=drain_s + 60)
        stopped_after = time.monotonic() - stop_started
    assert seen["ended"] > refused_at, "the stream ended before the newcomer was refused: nothing drained"
    assert seen["finish"] == "length" and seen["completion_tokens"] == tokens
    state = gateway.container.inspect()["State"]
    assert not state["Running"] and state["ExitCode"] == 0  # exited by itself, not SIGKILLed (137)
    assert stopped_after < drain_s, f"took {stopped_after:.1f} s to exit"
