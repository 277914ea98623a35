"""One configured backend: its transport and everything the gateway learns about it at run time."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from gateway import metrics
from gateway.backends.circuit import CircuitBreaker, CircuitState
from gateway.backends.ttft import TTFTModel
from gateway.settings import BackendSettings
from gateway.upstreams.base import UpstreamTransport

if TYPE_CHECKING:
    from gateway.backends.engine_metrics import EngineStats

__all__ = ["Backend", "Lease"]


@dataclass(eq=False)
class Backend:
    settings: BackendSettings
    transport: UpstreamTransport
    circuit: CircuitBreaker
    ttft: TTFTModel = field(default_factory=TTFTModel)
    models: set[str] = field(default_factory=set)  # public names, configured or discovered
    outstanding: int = 0
    healthy: bool = True
    checked: bool = False  # an active health check or discovery has run at least once
    engine: EngineStats | None = None  # the engine's own figures (vllm, sglang), latest scrape
    draining: bool = False  # a discovered replica that left: no new requests, in-flight ones finish

    @property
    def name(self) -> str:
        return self.settings.name

    @property
    def weight(self) -> float:
        return self.settings.weight

    def has_capacity(self) -> bool:
        return self.outstanding < self.settings.max_concurrency

    def usable(self) -> bool:
        return self.healthy and not self.draining and self.has_capacity() and self.circuit.available()

    def upstream_model(self, public: str) -> str:
        return self.settings.upstream_model(public)

    def publish_circuit(self) -> None:
        metrics.CIRCUIT_STATE.labels(self.name).set(int(self.circuit.state))

    def record_success(self) -> None:
        was = self.circuit.state
        self.circuit.record_success()
        if was is not CircuitState.CLOSED:
            self.publish_circuit()

    def record_failure(self) -> None:
        was = self.circuit.state
        self.circuit.record_failure()
        if self.circuit.state is not was:
            self.publish_circuit()


@dataclass(eq=False)
class Lease:
    """Permission to send one request to `backend`; `release` exactly once."""

    backend: Backend
    public_model: str  # the model asked for (after fallback)
    upstream_model: str
    outstanding_at_send: int
    _released: bool = False

    def release(self) -> None:
        if not self._released:
            self._released = True
            self.backend.outstanding -= 1
