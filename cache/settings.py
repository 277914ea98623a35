"""The cache's own settings; `gateway/settings.py` composes them under `cache:`."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from cache.guards import GuardPolicy

__all__ = ["CacheSettings", "CacheSwitch", "GuardSettings"]


class CacheSwitch(BaseModel):
    """Per-model or per-tenant switch: off entirely, or exact layer only."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    semantic: bool = True


class GuardSettings(BaseModel):
    """Similarity each kind of wording difference needs (see `guards.GuardPolicy`)."""

    model_config = ConfigDict(extra="forbid")

    same: float = Field(0.60, ge=0.0, le=1.0)
    soft: float = Field(0.85, ge=0.0, le=1.0)
    reworded: float = Field(0.90, ge=0.0, le=1.0)
    reword_min_words: int = Field(3, ge=1)
    reword_min_each_side: int = Field(1, ge=0)
    common_rank: int = Field(8000, ge=0)

    def policy(self) -> GuardPolicy:
        return GuardPolicy(**self.model_dump())

    @property
    def floor(self) -> float:
        """No candidate below this similarity can pass any tier."""
        return min(self.same, self.soft, self.reworded)


class CacheSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    semantic: bool = True
    store: Literal["memory", "redis"] = "memory"
    redis_url: str | None = None
    key_prefix: str = "switchyard:cache"
    redis_timeout_s: float = Field(0.25, gt=0)
    # After a store failure, requests bypass the store this long before one of them tries again.
    retry_after_s: float = Field(1.0, gt=0)

    ttl_s: float = Field(86_400.0, gt=0)  # absolute: a hit does not extend an entry's life
    max_entries: int = Field(100_000, ge=1)  # beyond this the least recently used entries go

    # Eligibility. Sampling at temperature T returns one draw; we share it only when T is low.
    max_temperature: float = Field(0.3, ge=0.0, le=2.0)
    # What the backend uses when a request names no temperature (OpenAI's default is 1.0).
    default_temperature: float = Field(1.0, ge=0.0, le=2.0)

    # Semantic layer.
    embed_timeout_s: float = Field(0.05, gt=0)  # a slower embedding is a miss, never an error
    candidates: int = Field(4, ge=1, le=64)  # nearest entries the guards examine, best first
    guards: GuardSettings = GuardSettings()
    hnsw_min_entries: int = Field(4096, ge=16)  # a partition this large moves from flat to HNSW
    max_partitions: int = Field(10_000, ge=1)  # partition indexes this replica keeps in memory
    sync_interval_s: float = Field(0.2, ge=0.0)  # how stale a replica's index of a partition may be

    # Verification: re-ask the backend for a sample of hits and compare the answers.
    verify_sample_rate: float = Field(0.0, ge=0.0, le=1.0)
    verify_window: int = Field(500, ge=1)
    answer_agreement: float = Field(0.80, ge=0.0, le=1.0)  # cosine of two answers that agree
    contradiction_margin: float = Field(0.02, ge=0.0, le=1.0)
    max_contradictions: int = Field(2, ge=1)  # then the entry is deleted

    models: dict[str, CacheSwitch] = {}
    tenants: dict[str, CacheSwitch] = {}

    @model_validator(mode="after")
    def _redis_needs_url(self) -> CacheSettings:
        if self.store == "redis" and not self.redis_url:
            raise ValueError("cache.redis_url is required when cache.store is 'redis'")
        return self

    def switch(self, tenant: str, model: str) -> CacheSwitch:
        """The effective switch: off if the cache, the model or the tenant is off."""
        by_model = self.models.get(model, CacheSwitch())
        by_tenant = self.tenants.get(tenant, CacheSwitch())
        return CacheSwitch(
            enabled=self.enabled and by_model.enabled and by_tenant.enabled,
            semantic=self.semantic and by_model.semantic and by_tenant.semantic,
        )
