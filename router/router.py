"""`ToolRouter`: narrows a request's tools to those matching its intent, and learns from tool calls.

The request path (`narrow`) only reads: cached tool vectors, a prepared catalogue, the installed
feedback model. Everything that writes or trains (`observe` queues, a background task persists,
syncs with other replicas and trains) happens off it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import defaultdict, deque
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from router import metrics
from router.catalogue import Catalogue, CatalogueCache, Identity, build, fingerprint, identify
from router.embedder import Embedder, Vectors
from router.feedback import Example, FeedbackBook, TrainingJob, train
from router.intent import called_tools, forced_tools, intent_text
from router.lexical import words
from router.narrow import KeepPolicy, decide
from router.narrowing import Narrowing, Reason
from router.settings import RouterSettings
from router.state import FileState, RedisState, State
from router.vectors import ToolVectors

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = ["ToolRouter"]

log = logging.getLogger(__name__)

_SHARED_SCOPE = "*"


class ToolRouter:
    def __init__(
        self, settings: RouterSettings, embedder: Embedder, redis: Redis | None = None, state_path: Path | None = None
    ):
        self._settings = settings
        self._embedder = embedder
        self._policy = KeepPolicy(
            min_keep=settings.min_keep,
            max_keep=settings.max_keep,
            margin=settings.margin,
            widen_below=settings.widen_below,
            widen_keep=settings.widen_keep,
            fallback_below=settings.fallback_below,
            high_from=settings.high_from,
        )
        self._vectors = ToolVectors(embedder, redis, key=f"{settings.redis_prefix}vec")
        self._catalogues = CatalogueCache(settings.catalogue_cache)
        self._state: State = (
            RedisState(redis, settings.redis_prefix, settings.max_examples)
            if redis is not None
            else FileState(state_path, settings.max_examples)
        )
        self._book = FeedbackBook(settings.max_examples)
        self._pending: list[tuple[str, Example]] = []
        self._warming: dict[str, tuple[Identity, list[dict[str, Any]]]] = {}
        self._wake = asyncio.Event()
        self._work_lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._random = random.Random()
        self._shadow_window: deque[bool] = deque(maxlen=1000)

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Load persisted examples and models, then start the background task."""
        if not self._settings.feedback:
            self._task = asyncio.create_task(self._background(), name="tool-router")
            return
        try:
            for scope, version in (await self._state.versions()).items():
                examples, version = await self._state.examples(scope)
                self._book.replace(scope, examples, version)
            for model in await self._state.models():
                self._book.install(model)
        except Exception as exc:  # a router without its memory still routes (zero-shot)
            log.warning("router state could not be loaded: %r", exc)
        self._task = asyncio.create_task(self._background(), name="tool-router")

    async def aclose(self) -> None:
        """Persist what is queued, then stop the background task."""
        if self._task is None:
            return
        try:
            await self.flush()
        finally:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def flush(self) -> None:
        """Do the background work now: persist queued feedback, sync, train, embed waiting tools.

        The gateway never needs it (the background task does the same every `train_interval_s`);
        tests, the bench and shutdown use it to wait for learning to be done.
        """
        async with self._work_lock:
            await self._work()

    # -- request path ------------------------------------------------------------------------

    def intent_text(self, messages: Sequence[Mapping[str, Any]]) -> str:
        """The text to embed for this conversation (shared with the semantic cache)."""
        return intent_text(messages)

    def scope(self, tenant: str) -> str:
        return _SHARED_SCOPE if self._settings.share_feedback else tenant

    async def prepare(self, tools: Sequence[dict[str, Any]]) -> str:
        """Embed and index a catalogue ahead of its first request; returns its id."""
        return (await self._catalogue(tools, embed_all=True) or _never()).id

    async def narrow(
        self,
        tenant: str,
        tools: list[dict[str, Any]],
        messages: Sequence[Mapping[str, Any]],
        tool_choice: Any = None,
        query_vector: Vectors | None = None,
    ) -> Narrowing:
        started = time.perf_counter()
        n = len(tools)
        if n:
            metrics.TOOLS_IN.observe(n)
        if not self._settings.enabled or n <= self._settings.threshold:
            metrics.REQUESTS.labels("passthrough").inc()
            if n:
                metrics.TOOLS_OUT.observe(n)
            return Narrowing(
                tools=tools,
                tools_in=n,
                tools_out=n,
                confidence=0.0,
                band=None,
                fallback=False,
                narrowed=False,
                shadow=False,
                catalogue=None,
                reason="few_tools" if self._settings.enabled else "disabled",
            )
        catalogue = await self._catalogue(tools, embed_all=False)
        if catalogue is None:
            return self._fallback(tools, None, "warming", started)
        text = intent_text(messages)
        vector = query_vector
        if vector is None and text:
            vector = await self._embed_intent(text)
        if vector is None:
            return self._fallback(tools, catalogue, "no_intent" if not text else "embedding", started)
        vector = np.asarray(vector, dtype=np.float32).reshape(-1)
        if vector.shape[0] != catalogue.full.shape[1]:
            log.warning("intent vector has %d dimensions, tools have %d", vector.shape[0], catalogue.full.shape[1])
            return self._fallback(tools, catalogue, "embedding", started)

        scope = self.scope(tenant)
        names = catalogue.identity.names
        scores = catalogue.scores(vector, words(text), self._settings.description_weight, self._settings.lexical_weight)
        model = self._book.model(scope, catalogue.id) if self._settings.feedback else None
        if model is not None:
            scores += self._settings.feedback_weight * model.boosts(vector, names, self._settings.feedback_similarity)
        if self._settings.feedback:
            self._book.saw(scope, catalogue.id, names)
        survivors = forced_tools(tool_choice) | called_tools(messages) | set(self._settings.pinned)
        must_keep = [i for i, name in enumerate(names) if name is None or name in survivors]
        decision = decide(scores, must_keep, self._policy)
        if decision.fallback:
            return self._fallback(tools, catalogue, "low_confidence", started, vector, decision.confidence)

        kept_names = frozenset(name for i in decision.keep if (name := names[i]) is not None)
        shadow = self._random.random() < self._settings.shadow_fraction
        sent = tools if shadow else [tools[i] for i in decision.keep]
        metrics.REQUESTS.labels("shadow" if shadow else "narrowed").inc()
        metrics.BANDS.labels(decision.band).inc()
        metrics.TOOLS_OUT.observe(len(sent))
        metrics.CLASSIFIER_SECONDS.observe(time.perf_counter() - started)
        return Narrowing(
            tools=sent,
            tools_in=n,
            tools_out=len(sent),
            confidence=decision.confidence,
            band=decision.band,
            fallback=False,
            narrowed=len(sent) < n,
            shadow=shadow,
            catalogue=catalogue.id,
            reason="shadow" if shadow else "narrowed",
            kept=kept_names,
            names=names,
            vector=vector,
        )

    def observe(
        self, tenant: str, narrowing: Narrowing, called: Sequence[str], query_vector: Vectors | None = None
    ) -> None:
        """Record the tools the model called for a narrowed request. Never blocks: queued for the
        background task. Names the request did not offer are ignored."""
        offered = set(narrowing.names)
        called = [name for name in dict.fromkeys(called) if name in offered]
        if not called or narrowing.catalogue is None:
            return
        if narrowing.shadow:
            for name in called:
                kept = name in narrowing.kept
                self._shadow_window.append(kept)
                metrics.SHADOW.labels("kept" if kept else "missed").inc()
            metrics.LIVE_RECALL.set(sum(self._shadow_window) / len(self._shadow_window))
        vector = query_vector if query_vector is not None else narrowing.vector
        if vector is None or not self._settings.feedback:
            return
        vector = np.asarray(vector, dtype=np.float32).reshape(-1)
        scope = self.scope(tenant)
        self._pending.extend((scope, Example(name=name, vector=vector, tenant=tenant)) for name in called)
        metrics.FEEDBACK_EXAMPLES.inc(len(called))
        self._wake.set()

    @property
    def live_recall(self) -> float | None:
        """Share of shadow-measured calls whose tool was kept (last 1000), None before the first."""
        return sum(self._shadow_window) / len(self._shadow_window) if self._shadow_window else None

    # -- helpers -----------------------------------------------------------------------------

    def _fallback(
        self,
        tools: list[dict[str, Any]],
        catalogue: Catalogue | None,
        reason: Reason,
        started: float,
        vector: Vectors | None = None,
        confidence: float = 0.0,
    ) -> Narrowing:
        metrics.REQUESTS.labels("fallback").inc()
        metrics.FALLBACKS.labels(reason).inc()
        metrics.BANDS.labels("low").inc()
        metrics.TOOLS_OUT.observe(len(tools))
        metrics.CLASSIFIER_SECONDS.observe(time.perf_counter() - started)
        names = catalogue.identity.names if catalogue is not None else ()
        return Narrowing(
            tools=tools,
            tools_in=len(tools),
            tools_out=len(tools),
            confidence=confidence,
            band="low",
            fallback=True,
            narrowed=False,
            shadow=False,
            catalogue=catalogue.id if catalogue is not None else None,
            reason=reason,
            kept=frozenset(n for n in names if n is not None),
            names=names,
            vector=vector,
        )

    async def _embed_intent(self, text: str) -> Vectors | None:
        try:
            rows = await asyncio.wait_for(self._embedder.embed([text]), self._settings.embed_timeout_s)
        except (TimeoutError, RuntimeError, ValueError) as exc:
            log.debug("intent embedding failed: %r", exc)
            return None
        return np.asarray(rows[0], dtype=np.float32)

    async def _catalogue(self, tools: Sequence[dict[str, Any]], embed_all: bool) -> Catalogue | None:
        """The prepared catalogue for this list; None when too many of its tools are still unembedded
        (they are then embedded in the background and a later request finds them)."""
        key = fingerprint(tools)
        found = self._catalogues.by_print(key)
        if found is not None:
            return found
        identity = identify(tools)
        found = self._catalogues.by_id(identity.id)
        if found is None:
            definitions = dict(zip(identity.hashes, tools, strict=True))
            vectors = await self._vectors.fetch(definitions)
            missing = len(definitions) - len(vectors)
            if missing > self._settings.inline_embed_max and not embed_all:
                self._warming[identity.id] = (identity, list(tools))
                self._wake.set()
                return None
            if missing:
                vectors = await self._vectors.ensure(definitions)
            found = build(identity, tools, vectors)
        self._catalogues.put(key, found)
        return found

    # -- background --------------------------------------------------------------------------

    async def _background(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._settings.train_interval_s)
            self._wake.clear()
            try:
                async with self._work_lock:
                    await self._work()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # keep learning after a Redis blip
                log.warning("tool router background work failed: %r", exc)

    async def _work(self) -> None:
        await self._embed_warming()
        if not self._settings.feedback:
            return
        await self._persist_pending()
        if self._state.shared:
            await self._sync()
        for job in self._book.stale():
            await self._train(job)

    async def _embed_warming(self) -> None:
        while self._warming:
            _, (identity, tools) = self._warming.popitem()
            vectors = await self._vectors.ensure(dict(zip(identity.hashes, tools, strict=True)))
            self._catalogues.put(fingerprint(tools), build(identity, tools, vectors))

    async def _persist_pending(self) -> None:
        pending, self._pending = self._pending, []
        by_scope: dict[str, list[Example]] = defaultdict(list)
        for scope, example in pending:
            by_scope[scope].append(example)
        for scope, examples in by_scope.items():
            expected = self._book.version(scope) + len(examples)
            version = await self._state.append(scope, examples)
            if version == expected:
                self._book.add(scope, examples)
            else:  # another replica wrote meanwhile: take the shared list as it now stands
                stored, version = await self._state.examples(scope)
                self._book.replace(scope, stored, version)

    async def _sync(self) -> None:
        for scope, version in (await self._state.versions()).items():
            if version > self._book.version(scope):
                stored, version = await self._state.examples(scope)
                self._book.replace(scope, stored, version)

    async def _train(self, job: TrainingJob) -> None:
        stored = await self._state.model(job.scope, job.catalogue)
        if stored is not None and stored.version >= job.version:
            self._book.install(stored)  # another replica (or this one, before eviction) trained it already
            return
        model = await asyncio.to_thread(train, job, self._settings.classifier_c)
        if model is None:
            return
        self._book.install(model)
        metrics.TRAININGS.inc()
        await self._state.save_model(model)


def _never() -> Catalogue:
    raise RuntimeError("catalogue could not be prepared")
