from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.processes import RedisServer


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A private Redis for one test: tests may stop and restart it without touching anyone else's."""
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.stop()
