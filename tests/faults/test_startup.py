"""Start-up with both users of transformers in one process: the shared embedder (semantic cache,
tool router) and the local engine's tokenizer. transformers' lazy imports are not thread-safe;
loaded at the same time, one can fail with "cannot import name 'AutoTokenizer' from
'transformers'" and the engine then never becomes ready (seen in the soak: a gateway that never
turned ready). They must load one after the other, and both must end up ready.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from gateway.services import build_services
from gateway.settings import Settings
from tests.batching.conftest import build_tiny_llama, build_tokenizer

pytestmark = [pytest.mark.model, pytest.mark.slow]


async def test_the_engine_loads_after_the_embedder_and_both_get_ready(tmp_path: Path) -> None:
    build_tiny_llama(tmp_path, build_tokenizer(tmp_path))
    settings = Settings.model_validate(
        {
            "server": {"state_dir": str(tmp_path / "state")},
            "auth": {"mode": "none"},
            "cache": {"semantic": True},
            "router": {"enabled": False},
            "backends": [
                {
                    "name": "local",
                    "type": "local",
                    "models": ["tiny"],
                    "engine": {"model": str(tmp_path), "devices": ["cpu"], "max_model_len": 256, "warmup": False},
                }
            ],
        }
    )
    services = await build_services(settings)
    try:
        engine, embedder = services.components["engine:local"], services.components["embedder"]
        deadline = time.monotonic() + 240
        while not (engine()["ready"] and embedder()["ready"]):
            assert time.monotonic() < deadline, (engine(), embedder())
            if not embedder()["ready"]:
                assert engine()["workers"] == [], "the engine started while the embedder was still loading"
            await asyncio.sleep(0.02)  # sampling both start-ups while they run, bounded by the deadline
        assert services.readiness()[0]
    finally:
        await services.aclose()
