from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from hypothesis import settings

from tests.support.processes import RedisServer

# Session-wide fixtures for real vLLM servers (`vllm_server`, `vllm_servers`, `vllm_gateway`).
pytest_plugins = ["tests.support.vllm"]

# Property tests explore new examples on every developer run; CI (.ci/run sets HYPOTHESIS_PROFILE=ci)
# replays a fixed sequence, so a landing is decided by the code, not by the draw.
settings.register_profile("ci", derandomize=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A private Redis for one test: tests may stop and restart it without touching anyone else's."""
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.stop()
