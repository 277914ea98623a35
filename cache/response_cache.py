"""ResponseCache: the front door. Exact layer first, then the semantic layer and its calibrated decision.

    cache = ResponseCache(settings, store, embedder)
    await cache.start()
    lookup = await cache.lookup(tenant, request, embed, intent=text)  # the gateway's shared embedding
                                                                      # and intent text
    if lookup.hit: serve lookup.response
    else: ...answer..., then await cache.store(lookup, response)

A store failure never fails a request: the lookup says "bypass" (reason "store_down"), the store is
left alone for `retry_after_s`, then one request probes it and the cache resumes on its own.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np

from cache import metrics
from cache.decision import Calibration, LiveRisk, load_calibration
from cache.eligibility import check_request, check_response, requested_max_tokens, serves_max_tokens
from cache.embedder import Embedder
from cache.entry import CacheEntry, Vector
from cache.index import IndexSet, Partition, PartitionIndex
from cache.keys import request_keys
from cache.lookup import CacheLookup, Status
from cache.pair_features import FEATURES, pair_features
from cache.settings import CacheSettings
from cache.stores.base import Store, StoreUnavailable
from cache.verification import VerificationLog, answers_agree, raised_entry_threshold
from cache.vocabulary import load_vocabulary

__all__ = ["EmbedFn", "ResponseCache"]

log = logging.getLogger(__name__)

EmbedFn = Callable[[str], Awaitable[Vector | None]]


class ResponseCache:
    def __init__(self, settings: CacheSettings, store: Store, embedder: Embedder | None = None, *,
                 vocabulary: dict[str, int] | None = None, clock: Callable[[], float] = time.time,
                 seed: int | None = None, calibration: Calibration | None = None):
        self.settings = settings
        self.store_backend = store
        self.embedder = embedder
        self.calibration = calibration or load_calibration(settings.calibration)
        if self.calibration.alpha != settings.alpha:
            raise ValueError(f"cache.alpha is {settings.alpha} but the calibration holds {self.calibration.alpha}: "
                             "write a calibration for it (python -m bench.cache_eval --write-calibration)")
        self._floor = settings.floor
        self._live = LiveRisk(settings.alpha, settings.verify_window)
        self._vocabulary = vocabulary
        self._clock = clock
        self._indexes: IndexSet | None = None
        self._locks: dict[str, asyncio.Lock] = {}
        self._up = True
        self._retry_at = 0.0
        self._last_error: str | None = None
        self._entries = 0
        self.bypassed = 0
        self._verification = VerificationLog(settings.verify_sample_rate, settings.verify_window, seed)

    # -- life cycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        if self._vocabulary is None:
            self._vocabulary = await asyncio.to_thread(load_vocabulary)
        try:
            await self.store_backend.start()
            self._entries = await self.store_backend.count()
            metrics.ENTRIES.set(self._entries)
            metrics.STORE_UP.set(1)
            self._mark_up()
        except StoreUnavailable as exc:
            # The gateway starts anyway and serves uncached until the store answers.
            self._mark_down("start", exc)

    async def aclose(self) -> None:
        await self.store_backend.aclose()

    # -- lookup --------------------------------------------------------------------------------

    async def lookup(self, tenant: str, request: dict[str, Any], embed: EmbedFn | None = None, *,
                     intent: str, no_cache: bool = False, no_store: bool = False) -> CacheLookup:
        """`intent`: the request's intent text as the gateway computed it (its latest user turn), the
        text the semantic layer embeds and its guards compare; "" when there is none."""
        started = time.perf_counter()
        result = await self._lookup(tenant, request, embed, intent, no_cache, no_store)
        result.elapsed_s = time.perf_counter() - started
        metrics.LOOKUPS.labels(result.status).inc()
        metrics.LOOKUP_SECONDS.labels(result.status).observe(result.elapsed_s)
        if result.status in ("exact", "semantic"):
            metrics.HITS.labels(result.status).inc()
        elif result.status == "miss":
            metrics.MISSES.labels(result.reason or "unknown").inc()
        else:
            metrics.BYPASSES.labels(result.reason or "unknown").inc()
        return result

    async def _lookup(self, tenant: str, request: dict[str, Any], embed: EmbedFn | None, intent: str,
                      no_cache: bool, no_store: bool) -> CacheLookup:
        s = self.settings
        model = request.get("model")
        switch = s.switch(tenant, model if isinstance(model, str) else "")
        if not switch.enabled:
            return CacheLookup("bypass", tenant, reason="disabled")
        if no_store:
            return CacheLookup("bypass", tenant, reason="no_store")
        decision = check_request(request, max_temperature=s.max_temperature,
                                 default_temperature=s.default_temperature)
        if not decision.ok:
            return CacheLookup("miss", tenant, reason="ineligible", detail=decision.cause)
        keys = request_keys(tenant, request, s.default_temperature)
        scope = keys.scope if switch.semantic and intent else None
        lookup = CacheLookup("miss", tenant, exact_key=keys.exact, scope_key=scope, text=intent or None,
                             max_tokens=requested_max_tokens(request), storable=True)
        if no_cache:
            return self._status(lookup, "bypass", "no_cache")
        if not self._available():
            self.bypassed += 1
            lookup.storable = False
            return self._status(lookup, "bypass", "store_down")
        try:
            found = await self._exact(lookup)
            if found is not None:
                return found
            if scope is None or lookup.text is None:
                return self._status(lookup, "miss", "no_candidate" if switch.semantic else "exact_only")
            return await self._semantic(lookup, embed)
        except StoreUnavailable as exc:
            self._mark_down("lookup", exc)
            self.bypassed += 1
            lookup.storable = False
            return self._status(lookup, "bypass", "store_down")

    async def _exact(self, lookup: CacheLookup) -> CacheLookup | None:
        assert lookup.exact_key is not None
        entry = await self.store_backend.get_exact(lookup.exact_key)
        self._mark_up()
        if entry is None or entry.tenant != lookup.tenant or entry.expires_at <= self._clock():
            return None
        if not self._fits(entry, lookup):
            return self._status(lookup, "miss", "max_tokens")
        lookup.response, lookup.entry_id, lookup.similarity = entry.response, entry.id, 1.0
        lookup.storable = False
        return self._status(lookup, "exact")

    async def _semantic(self, lookup: CacheLookup, embed: EmbedFn | None) -> CacheLookup:
        assert lookup.scope_key is not None and lookup.text is not None
        vector, why = await self._embed(lookup.text, embed)
        if vector is None:
            return self._status(lookup, "miss", why)
        lookup.vector = vector
        part = await self._sync(lookup.scope_key, vector.shape[0])
        found = part.index.search(vector, self.settings.candidates, now=self._clock())
        if not found:
            return self._status(lookup, "miss", "no_candidate")
        lookup.similarity = found[0][1]
        metrics.SIMILARITY.observe(found[0][1])
        found = [(entry_id, sim) for entry_id, sim in found if sim >= self._floor]
        if not found:
            return self._status(lookup, "miss", "below_threshold")
        entries = await self.store_backend.get([entry_id for entry_id, _ in found])
        reasons: list[tuple[int, str, str]] = []  # (priority, reason, detail), best candidate first
        for (entry_id, sim), entry in zip(found, entries, strict=True):
            if entry is None:
                part.index.remove(entry_id)  # expired or evicted since this replica last synced
                continue
            if entry.tenant != lookup.tenant or entry.scope_key != lookup.scope_key or entry.text is None:
                continue  # cannot happen with intact keys; checked anyway, tenants must never mix
            if not self._fits(entry, lookup):
                reasons.append((1, "max_tokens", ""))
                continue
            row = pair_features(lookup.text, entry.text, sim, self._vocabulary or {}, self.settings.common_rank)
            score = self.calibration.score(row)
            threshold = self._live.threshold(lookup.scope_key, self.calibration.threshold)
            if score > max(threshold, entry.threshold):
                await self.store_backend.touch(entry.id)
                lookup.response, lookup.entry_id, lookup.similarity = entry.response, entry.id, sim
                lookup.score = score
                lookup.storable = False
                return self._status(lookup, "semantic", detail=f"score {score:.3f} > {threshold:.3f}")
            if score > threshold:
                reasons.append((2, "below_threshold", "entry threshold raised by a contradiction"))
            else:
                reasons.append(_why_not(row, score, threshold))
        if not reasons:
            return self._status(lookup, "miss", "no_candidate")
        top = max(r[0] for r in reasons)
        _, reason, detail = next(r for r in reasons if r[0] == top)
        return self._status(lookup, "miss", reason, detail)

    def _fits(self, entry: CacheEntry, lookup: CacheLookup) -> bool:
        return serves_max_tokens(truncated=entry.truncated, stored_max_tokens=entry.max_tokens,
                                 completion_tokens=entry.completion_tokens, requested=lookup.max_tokens)

    @staticmethod
    def _status(lookup: CacheLookup, status: Status, reason: str | None = None, detail: str = ""
                ) -> CacheLookup:
        lookup.status, lookup.reason, lookup.detail = status, reason, detail or lookup.detail
        return lookup

    async def _embed(self, text: str, embed: EmbedFn | None) -> tuple[Vector | None, str]:
        fn = embed or self._own_embedding
        started = time.perf_counter()
        # Shielded: the gateway shares this embedding with the router, our deadline must not cancel it.
        task = asyncio.ensure_future(fn(text))
        task.add_done_callback(_consume)
        try:
            vector = await asyncio.wait_for(asyncio.shield(task), self.settings.embed_timeout_s)
        except TimeoutError:
            return None, "embedding_timeout"
        except Exception as exc:  # an embedding failure is a miss, never an error
            log.debug("embedding failed: %r", exc)
            return None, "embedding_failed"
        finally:
            metrics.EMBEDDING_SECONDS.observe(time.perf_counter() - started)
        if vector is None:
            return None, "embedding_failed"
        vec = np.asarray(vector, dtype=np.float32).reshape(-1)
        norm = float(np.linalg.norm(vec))
        if not np.isfinite(norm) or norm == 0.0:
            return None, "embedding_failed"
        return vec / norm, ""

    async def _own_embedding(self, text: str) -> Vector | None:
        if self.embedder is None:
            return None
        return np.asarray((await self.embedder.embed([text]))[0], dtype=np.float32)

    async def _sync(self, scope: str, dim: int) -> Partition:
        """Bring this replica's index of a partition up to date with the store's log."""
        indexes = self._index_set(dim)
        part = indexes.get(scope)
        if time.monotonic() - part.synced_at < self.settings.sync_interval_s:
            return part
        lock = self._locks.setdefault(scope, asyncio.Lock())
        async with lock:
            if time.monotonic() - part.synced_at < self.settings.sync_interval_s:
                return part
            changes = await self.store_backend.changes(scope, part.cursor)
            if changes.reset:
                part.index = PartitionIndex(dim, self.settings.hnsw_min_entries)
                part.cursor = None
                changes = await self.store_backend.changes(scope, None)
            for entry_id in changes.removed:
                part.index.remove(entry_id)
            for entry_id, vector, expires_at in changes.added:
                if vector.shape == (dim,):
                    part.index.add(entry_id, vector, expires_at)
            for entry_id in changes.removed:  # a del logged after its add in the same batch
                part.index.remove(entry_id)
            part.index.expire(self._clock())
            part.cursor = changes.cursor if changes.cursor is not None else part.cursor
            part.synced_at = time.monotonic()
        if len(self._locks) > 2 * self.settings.max_partitions:
            self._locks = {k: v for k, v in self._locks.items() if v.locked()}
        return part

    def _index_set(self, dim: int) -> IndexSet:
        if self._indexes is None or self._indexes.dim != dim:
            self._indexes = IndexSet(dim, self.settings.max_partitions, self.settings.hnsw_min_entries)
        return self._indexes

    # -- store ---------------------------------------------------------------------------------

    async def store(self, lookup: CacheLookup, response: dict[str, Any]) -> bool:
        """Store the gateway's complete answer for a lookup that missed. False when refused."""
        if not lookup.storable or lookup.exact_key is None:
            return False
        decision = check_response(response, lookup.max_tokens)
        if not decision.ok:
            metrics.STORES.labels(f"refused:{decision.cause}").inc()
            return False
        if not self._available():
            metrics.STORES.labels("store_down").inc()
            return False
        vector = lookup.vector
        if vector is None and lookup.scope_key is not None and lookup.text is not None:
            vector, _ = await self._embed(lookup.text, None)  # after the answer: off the request path
        now = self._clock()
        usage = response.get("usage")
        entry = CacheEntry(
            id=uuid.uuid4().hex, tenant=lookup.tenant, exact_key=lookup.exact_key,
            scope_key=lookup.scope_key if vector is not None else None, text=lookup.text,
            response=response, created_at=now, expires_at=now + self.settings.ttl_s,
            max_tokens=lookup.max_tokens, truncated=decision.truncated,
            completion_tokens=usage.get("completion_tokens") if isinstance(usage, dict) else None,
            vector=vector,
        )
        try:
            result = await self.store_backend.put(entry)
        except StoreUnavailable as exc:
            self._mark_down("put", exc)
            metrics.STORES.labels("store_down").inc()
            return False
        self._mark_up()
        metrics.STORES.labels("stored").inc()
        metrics.EVICTIONS.labels("lru").inc(result.evicted)
        metrics.EVICTIONS.labels("expired").inc(result.expired)
        self._entries = result.entries
        metrics.ENTRIES.set(result.entries)
        if entry.scope_key is not None and self._indexes is not None:
            self._indexes.get(entry.scope_key).synced_at = float("-inf")  # see our own write at once
        return True

    # -- verification --------------------------------------------------------------------------

    def should_verify(self, lookup: CacheLookup) -> bool:
        """Should the gateway re-ask the backend for this hit (a seeded sample of hits)?"""
        return lookup.hit and self._verification.sample()

    async def verify(self, lookup: CacheLookup, fresh: dict[str, Any]) -> bool | None:
        """Compare the backend's fresh answer with the one served; record and act on the verdict.
        None when the answers cannot be compared."""
        if not lookup.hit or lookup.response is None:
            return None
        similarity = await self._answer_similarity(lookup.response, fresh)
        agreed = answers_agree(lookup.response, fresh, similarity, self.settings.answer_agreement)
        if agreed is not None:
            await self.report(lookup, agreed)
        return agreed

    async def report(self, lookup: CacheLookup, agreed: bool) -> None:
        """Record a verdict on a hit (from `verify` or any outside judge). A contradicted semantic
        hit tightens its entry's threshold, then deletes it; a contradicted exact hit deletes it."""
        if not lookup.hit or lookup.entry_id is None:
            return
        metrics.VERIFICATIONS.labels(lookup.status, "agreed" if agreed else "contradicted").inc()
        self._verification.record(lookup.status, not agreed)
        metrics.export_false_hits(self._verification.window())
        if lookup.status == "semantic" and lookup.scope_key is not None and lookup.score is not None:
            self._live.record(lookup.scope_key, lookup.score, not agreed)
        if agreed:
            return
        try:
            (entry,) = await self.store_backend.get([lookup.entry_id])
            if entry is None:
                return
            contradictions = entry.contradictions + 1
            if lookup.status == "exact" or contradictions >= self.settings.max_contradictions:
                await self.store_backend.delete(entry.id)
                metrics.EVICTIONS.labels("contradicted").inc()
                return
            threshold = raised_entry_threshold(entry.threshold, lookup.score or 1.0,
                                               self.settings.contradiction_margin)
            await self.store_backend.update(entry.id, threshold=threshold, contradictions=contradictions)
        except StoreUnavailable as exc:
            self._mark_down("report", exc)

    @property
    def false_hit_rate(self) -> float | None:
        return self._verification.false_hit_rate

    async def _answer_similarity(self, a: dict[str, Any], b: dict[str, Any]) -> float | None:
        from cache.verification import answer_text

        texts = [answer_text(a), answer_text(b)]
        if self.embedder is None or not all(texts):
            return None
        try:
            vectors = await asyncio.wait_for(self.embedder.embed(texts), 10 * self.settings.embed_timeout_s)
        except Exception:  # a comparison we cannot make is no verdict
            return None
        return float(np.dot(vectors[0], vectors[1]))

    # -- health --------------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        """For /readyz detail: the cache never makes the gateway unready, it reports."""
        return {
            "store": self.store_backend.kind,
            "up": self._up,
            "bypassed": self.bypassed,
            "entries": self._entries,
            "last_error": self._last_error,
            "partitions_indexed": len(self._indexes) if self._indexes is not None else 0,
            "false_hit_rate": self._verification.false_hit_rate,
            "verified": self._verification.verified,
        }

    def _available(self) -> bool:
        if self._up:
            return True
        now = time.monotonic()
        if now >= self._retry_at:
            self._retry_at = now + self.settings.retry_after_s  # this caller probes; others bypass
            return True
        return False

    def _mark_down(self, operation: str, exc: Exception) -> None:
        metrics.STORE_ERRORS.labels(operation).inc()
        metrics.STORE_UP.set(0)
        self._last_error = str(exc)[:200]
        if self._up:
            log.warning("cache store %s unavailable (%s); bypassing the cache", self.store_backend.kind, exc)
        self._up = False
        self._retry_at = time.monotonic() + self.settings.retry_after_s

    def _mark_up(self) -> None:
        if self._up:
            return
        log.info("cache store %s answers again; cache resumed", self.store_backend.kind)
        self._up = True
        self._last_error = None
        metrics.STORE_UP.set(1)
        # The store may have restarted empty while we were away: relearn every partition.
        if self._indexes is not None:
            self._indexes.reset()


_SIGNALS = (  # (feature, reason): the first signal present names why a candidate was not served
    ("numbers_differ", "guard:number"), ("dates_differ", "guard:date"), ("negation_differs", "guard:negation"),
    ("antonym", "guard:negation"), ("entities_missing", "guard:entity"), ("roles_swapped", "guard:order"),
    ("rare_words", "guard:content"),
)
_INDEX = {name: i for i, name in enumerate(FEATURES)}


def _why_not(row: Any, score: float, threshold: float) -> tuple[int, str, str]:
    for feature, reason in _SIGNALS:
        if row[_INDEX[feature]] > 0:
            return 3, reason, f"{feature}; score {score:.3f} <= {threshold:.3f}"
    return 2, "below_threshold", f"score {score:.3f} <= {threshold:.3f}"


def _consume(task: asyncio.Future[Any]) -> None:
    """Retrieve a shielded embedding's outcome so an abandoned one does not warn."""
    if not task.cancelled():
        task.exception()
