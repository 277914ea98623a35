"""The cache's own settings; `gateway/settings.py` composes them under `cache:`."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["CacheSettings", "CacheSwitch"]


class CacheSwitch(BaseModel):
    """Per-model or per-tenant switch: off entirely, or exact layer only."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    semantic: bool = True


class CacheSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    semantic: bool = True
    store: Literal["memory", "redis"] = "memory"  # redis: the deployment's Redis (redis.url)
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
    candidates: int = Field(4, ge=1, le=64)  # nearest entries the decision examines, best first
    # The expected share of wrong answers among semantic hits the threshold is chosen to hold
    # (conformal risk control on labelled pairs, then tightened by verified live samples).
    alpha: float = Field(0.01, gt=0.0, lt=1.0)
    calibration: str | None = None  # a calibration file (bench.cache_eval --write-calibration); None: shipped
    floor: float = Field(0.5, ge=-1.0, le=1.0)  # cosine below which a candidate is not examined at all
    common_rank: int = Field(8000, ge=0)  # words ranked beyond this in the vocabulary are anchors (rare)
    hnsw_min_entries: int = Field(4096, ge=16)  # a partition this large moves from flat to HNSW
    max_partitions: int = Field(10_000, ge=1)  # partition indexes this replica keeps in memory
    sync_interval_s: float = Field(0.2, ge=0.0)  # how stale a replica's index of a partition may be

    # Verification: re-ask the backend for a sample of hits and compare the answers.
    verify_sample_rate: float = Field(0.0, ge=0.0, le=1.0)
    verify_window: int = Field(500, ge=1)
    answer_agreement: float = Field(0.80, ge=0.0, le=1.0)  # cosine of two answers that agree
    contradiction_margin: float = Field(0.02, ge=0.0, le=1.0)  # in the decision's score
    max_contradictions: int = Field(2, ge=1)  # then the entry is deleted

    models: dict[str, CacheSwitch] = {}
    tenants: dict[str, CacheSwitch] = {}

    def switch(self, tenant: str, model: str) -> CacheSwitch:
        """The effective switch: off if the cache, the model or the tenant is off."""
        by_model = self.models.get(model, CacheSwitch())
        by_tenant = self.tenants.get(tenant, CacheSwitch())
        return CacheSwitch(
            enabled=self.enabled and by_model.enabled and by_tenant.enabled,
            semantic=self.semantic and by_model.semantic and by_tenant.semantic,
        )
