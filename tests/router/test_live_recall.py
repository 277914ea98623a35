"""The live router recall the gateway exports, against an offline replay of the same traffic."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

import numpy as np
import pytest
from prometheus_client import REGISTRY
from scipy.stats import binomtest

from router import RouterSettings, ToolRouter
from tests.router.toolset import names, narrow, tools, user


class Words:
    """An `Embedder`: each word adds a fixed pseudo-random direction; rows are L2-normalised."""

    dim = 32

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        rows = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            for word in re.findall(r"\w+", text.lower()) or ["_"]:
                seed = int.from_bytes(hashlib.blake2b(word.encode(), digest_size=4).digest(), "little")
                rows[i] += np.random.default_rng(seed).standard_normal(self.dim).astype(np.float32)
            rows[i] /= np.linalg.norm(rows[i]) or 1.0
        return rows


ASKS = ["What's the weather forecast for Paris this weekend?", "send an email to my boss", "resize my photo",
        "check my bank balance", "compress these files", "book a table for two"]


async def test_exported_live_recall_matches_an_offline_replay() -> None:
    router = ToolRouter(RouterSettings(shadow_fraction=1.0, feedback=False), Words())
    catalogue = tools()
    every = names(catalogue)
    rng = np.random.default_rng(11)
    replay: list[bool] = []  # offline: was the called tool in the kept set?
    for i in range(120):
        narrowing = await narrow(router, "t", catalogue, user(ASKS[i % len(ASKS)]))
        assert narrowing.shadow and narrowing.tools is catalogue
        called = every[int(rng.integers(len(every)))]
        replay.append(called in narrowing.kept)
        router.observe("t", narrowing, [called])
    kept, measured = sum(replay), len(replay)
    interval = binomtest(kept, measured).proportion_ci(0.95, method="wilson")
    sample = REGISTRY.get_sample_value
    assert 0 < kept < measured  # both outcomes occur, so the check can fail either way
    assert router.live_recall == pytest.approx(kept / measured)
    assert sample("switchyard_router_live_recall", {}) == pytest.approx(kept / measured)
    assert sample("switchyard_router_live_recall_samples", {}) == measured
    assert sample("switchyard_router_live_recall_low", {}) == pytest.approx(interval.low)
    assert sample("switchyard_router_live_recall_high", {}) == pytest.approx(interval.high)
