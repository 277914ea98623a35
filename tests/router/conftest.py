from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from cache.embedder import SentenceEmbedder


@pytest.fixture(scope="session")
def embedder() -> Iterator[SentenceEmbedder]:
    """The real bundled all-MiniLM-L6-v2, loaded once for all router tests."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    model = SentenceEmbedder()
    model.load()
    yield model
    model.close()
