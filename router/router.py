"""`ToolRouter`: narrows a request's tools to those matching its intent, and learns from tool calls.

The request path (`narrow`) only reads: cached tool vectors, a prepared catalogue, the installed
feedback model. Everything that writes or trains (`observe` queues, a background task persists,
syncs with other replicas and trains) happens off it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import random
import time
from collections import defaultdict, deque
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from router import metrics
from router.catalogue import Catalogue, CatalogueCache, Identity, build, fingerprint, identify
from router.conformal import assess, load_cold
from router.embedder import Embedder, Vectors
from router.feedback import CatalogueModel, Example, FeedbackBook, TrainingJob, split, train
from router.intent import called_tools, forced_tools
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
        self,
        settings: RouterSettings,
        embedder: Embedder,
        redis: Redis | None = None,
        state_path: Path | None = None,
        redis_prefix: str = "switchyard:router:",
    ):
        self._settings = settings
        self._embedder = embedder
        self._cold_margin = (settings.margin if settings.margin is not None
                             else load_cold(settings.calibration).margin(settings.coverage))
        self._policy = KeepPolicy(
            min_keep=settings.min_keep,
            max_keep=settings.max_keep,
            margin=self._cold_margin,
            widen_below=settings.widen_below,
            widen_keep=settings.widen_keep,
            fallback_below=settings.fallback_below,
            high_from=settings.high_from,
        )
        self._vectors = ToolVectors(embedder, redis, key=f"{redis_prefix}vec")
        self._catalogues = CatalogueCache(settings.catalogue_cache)
        self._state: State = (
            RedisState(redis, redis_prefix, settings.max_examples)
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
        *,
        intent: str,
    ) -> Narrowing:
        """`intent`: the conversation's intent text as the gateway computed it (shared with the
        cache); `query_vector` its embedding when the caller has it, else the router embeds it."""
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
        text = intent
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
        query_words = tuple(words(text))
        scores = catalogue.scores(vector, query_words, self._settings.description_weight, self._settings.lexical_weight)
        model = self._book.model(scope, catalogue.id) if self._settings.feedback else None
        policy = self._policy
        if model is not None:
            if model.blend:
                scores += model.weight * model.boosts(vector, names, self._settings.feedback_similarity)
            if model.margin is not None and self._settings.margin is None:
                policy = dataclasses.replace(policy, margin=model.margin)
        if self._settings.feedback:
            self._book.saw(scope, catalogue.id, names)
        survivors = forced_tools(tool_choice) | called_tools(messages) | set(self._settings.pinned)
        must_keep = [i for i, name in enumerate(names) if name is None or name in survivors]
        decision = decide(scores, must_keep, policy)
        if decision.fallback:
            return self._fallback(tools, catalogue, "low_confidence", started, vector, decision.confidence,
                                  query_words)

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
            words=query_words,
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
            metrics.export_live_recall(sum(self._shadow_window), len(self._shadow_window))
        vector = query_vector if query_vector is not None else narrowing.vector
        if vector is None or not self._settings.feedback:
            return
        vector = np.asarray(vector, dtype=np.float32).reshape(-1)
        scope = self.scope(tenant)
        full = narrowing.shadow or narrowing.fallback  # the model chose from the whole list
        self._pending.extend(
            (scope, Example(name=name, vector=vector, tenant=tenant, words=narrowing.words, full=full))
            for name in called
        )
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
        query_words: tuple[str, ...] = (),
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
            words=query_words,
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
        catalogue = self._catalogues.by_id(job.catalogue)
        if catalogue is not None:
            model = await asyncio.to_thread(self._judged, model, job, catalogue)
        self._book.install(model)
        metrics.TRAININGS.inc()
        await self._state.save_model(model)


    def _judged(self, model: CatalogueModel, job: TrainingJob, catalogue: Catalogue) -> CatalogueModel:
        """The model with what its catalogue's held-back calls say: blend or not, and the margin
        that holds coverage for the scores chosen (router/conformal.py)."""
        s = self._settings
        names = catalogue.identity.names
        index = {name: i for i, name in enumerate(names) if name is not None}
        held = [e for e in split(job)[1] if e.name in index]
        if not held:
            return model
        zero_shot = np.stack([catalogue.scores(e.vector, e.words, s.description_weight, s.lexical_weight)
                              for e in held])
        boosts = np.stack([model.boosts(e.vector, names, s.feedback_similarity) for e in held])
        called = [index[e.name] for e in held]
        # A few strengths of the boost, up to `feedback_weight`; the one keeping fewest tools wins
        # (choosing among three on the held-back calls costs their calibration a little slack).
        verdicts = [(weight, assess(zero_shot, zero_shot + weight * boosts, called, s.coverage, s.calibration_min))
                    for weight in (s.feedback_weight / 4, s.feedback_weight / 2, s.feedback_weight)]
        if verdicts[0][1] is None:
            return dataclasses.replace(model, held_back=len(held))
        weight, verdict = min(verdicts, key=lambda v: (v[1].kept_blended if v[1] and v[1].blend else math.inf))
        assert verdict is not None
        metrics.BLENDS.labels("blended" if verdict.blend else "zero_shot").inc()
        return dataclasses.replace(model, blend=verdict.blend, margin=verdict.margin, held_back=verdict.calls,
                                   weight=weight)


def _never() -> Catalogue:
    raise RuntimeError("catalogue could not be prepared")
