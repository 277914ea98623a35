"""Gateway configuration: one YAML file plus `SWITCHYARD_…` environment overrides, validated at start-up.

Environment overrides use `__` between levels, e.g. `SWITCHYARD_SERVER__PORT=9000` or
`SWITCHYARD_REDIS__URL=redis://cache:6379/0`; values are parsed as YAML scalars/lists.
Each package owns its own settings model (`cache`, `router`, `engine`); this module composes them.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, ValidationError, field_validator, model_validator

from batching import EngineSettings
from cache import CacheSettings
from gateway.telemetry.config import RequestLogSettings, TracingSettings
from gateway.types import Api, Priority
from router import RouterSettings

__all__ = [
    "AdminSettings",
    "AuthSettings",
    "BackendSettings",
    "ConfigError",
    "EmbedderSettings",
    "KeySettings",
    "LedgerSettings",
    "LimitSettings",
    "PriceSettings",
    "RedisSettings",
    "RelaySettings",
    "ResilienceSettings",
    "ResponsesSettings",
    "ServerSettings",
    "Settings",
    "SettingsSource",
    "SpendSettings",
    "load_settings",
]

ENV_PREFIX = "SWITCHYARD_"
# A first-token deadline: seconds for interactive traffic, or seconds per priority class.
Deadline = PositiveFloat | dict[Priority, PositiveFloat]


class ConfigError(ValueError):
    """Configuration that cannot be used; the message names the bad key."""


class _Section(BaseModel):
    # Defaults pass the validators a given value does (pydantic skips them otherwise: the default
    # state_dir's "~" was once made a folder of that name).
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class ServerSettings(_Section):
    host: str = Field("127.0.0.1", description="address to listen on (0.0.0.0 in containers)")
    port: int = Field(8080, ge=0, le=65535, description="port to listen on")
    workers: int = Field(1, ge=1, description="gateway processes sharing the port (remote backends only)")
    max_body_bytes: int = Field(8 * 1024 * 1024, ge=1024, description="larger request bodies get 413")
    drain_seconds: float = Field(30.0, ge=0, description="how long in-flight streams may run after SIGTERM")
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="log verbosity")
    state_dir: str = Field(
        "~/.local/state/switchyard", description="where state lives without Redis (the tool router's learning)"
    )
    watch_config: bool = Field(True, description="reload when the config file changes (SIGHUP always reloads)")

    @field_validator("state_dir")
    @classmethod
    def _expand(cls, value: str) -> str:
        return os.path.expanduser(value)


BudgetPeriod = Literal["daily", "monthly"]


class BudgetSettings(_Section):
    """A cap on spend in money over a period that resets at UTC midnight (daily) or on the 1st (monthly)."""

    amount_usd: float = Field(gt=0, description="most that may be spent per period, in USD")
    period: BudgetPeriod = Field("monthly", description="daily or monthly (UTC)")


class KeySettings(_Section):
    """One API key, stored as the SHA-256 hex digest of the key, never the key itself."""

    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="hex SHA-256 of the key (`switchyard hash-key`)")
    tenant: str = Field(
        min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$", description="who the key belongs to"
    )
    priority: Priority = Field("interactive", description="SLO class of this key's requests")
    rpm: int | None = Field(None, ge=1, description="requests per minute; default: limits.rpm")
    tpm: int | None = Field(None, ge=1, description="tokens per minute; default: limits.tpm")
    models: list[str] | None = Field(None, description="models this key may use; default: all")
    team: str | None = Field(
        None, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$", description="team within the tenant"
    )
    budget: BudgetSettings | None = Field(None, description="this key's own spend cap (needs spend.enabled)")


class AuthSettings(_Section):
    mode: Literal["keys", "none"] = Field(
        "keys", description="`none` turns authentication off (development only, chosen explicitly)"
    )
    keys: list[KeySettings] = Field(default_factory=list, description="API keys and their tenants")
    redis_keys: bool = Field(False, description="also look keys up in Redis (`switchyard:key:<sha256>`)")
    redis_cache_seconds: float = Field(
        0.5, gt=0, lt=1, description="how long a key read from Redis is trusted: a revoked key stops within this"
    )


class AdminSettings(_Section):
    """The admin API under /admin/: off unless an admin key is configured. Never a tenant key."""

    key_sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$", description="hex SHA-256 of the admin key")
    key_env: str | None = Field(None, description="environment variable holding the admin key itself")

    @property
    def enabled(self) -> bool:
        return bool(self.key_sha256 or self.key_env)

    def digest(self) -> str | None:
        """The admin key's digest, from the file or from the environment variable it names."""
        if self.key_sha256:
            return self.key_sha256
        if not self.key_env:
            return None
        value = os.environ.get(self.key_env)
        if not value:
            raise ConfigError(f"admin.key_env: environment variable {self.key_env} is not set")
        return hashlib.sha256(value.encode()).hexdigest()


class PriceSettings(_Section):
    """What one model's tokens cost, in USD per `spend.price_unit` (a million tokens by default)."""

    input: float = Field(ge=0, description="prompt tokens")
    output: float = Field(ge=0, description="completion tokens")
    cached_input: float | None = Field(None, ge=0, description="prompt tokens served from the upstream's cache")


# Nominal prices so that budgets work out of the box with the bundled model and the sim.
DEFAULT_PRICES: dict[str, dict[str, float]] = {
    "smollm2-135m-instruct": {"input": 0.02, "output": 0.08, "cached_input": 0.01},
    "sim-model": {"input": 0.10, "output": 0.40, "cached_input": 0.05},
}


class LedgerSettings(_Section):
    sink: Literal["none", "redis", "postgres"] = Field("none", description="where each request's spend row goes")
    dsn: str | None = Field(None, description="PostgreSQL connection string (sink postgres)")
    table: str = Field("switchyard_ledger", pattern=r"^[a-z_][a-z0-9_]{0,62}$", description="PostgreSQL table")
    stream: str = Field("ledger", description="Redis stream name after redis.key_prefix (sink redis)")
    stream_maxlen: int | None = Field(None, ge=1, description="trim the Redis stream to about this many rows")
    batch_rows: int = Field(500, ge=1, description="rows written in one batch at most")
    flush_seconds: float = Field(0.5, gt=0, description="longest a row waits before its batch is written")
    buffer_rows: int = Field(100_000, ge=1, description="rows held while the sink is down; past it rows are dropped")

    @model_validator(mode="after")
    def _check(self) -> LedgerSettings:
        if self.sink == "postgres" and not self.dsn:
            raise ValueError("dsn is required for the postgres ledger")
        return self


class SpendSettings(_Section):
    enabled: bool = Field(False, description="price every request and enforce key, team and tenant budgets")
    price_unit: Literal["per_million", "per_token"] = Field("per_million", description="unit of the prices")
    prices: dict[str, PriceSettings] = Field(
        default_factory=dict, description="model → price; the bundled and sim models have defaults"
    )
    prices_file: str | None = Field(None, description="YAML file of more prices (model → input/output/cached_input)")
    fail_open: bool = Field(
        False, description="when Redis is unreachable, let requests with a budget through (unheld) instead of 503"
    )
    metric_label_limit: int = Field(
        200, ge=1, description="distinct tenant/team label pairs in spend metrics; the rest count as 'other'"
    )
    ledger: LedgerSettings = LedgerSettings()

    @model_validator(mode="after")
    def _merge_prices(self) -> SpendSettings:
        """Defaults, then the file, then the prices written here (later wins)."""
        merged = {name: PriceSettings(**price) for name, price in DEFAULT_PRICES.items()}
        if self.prices_file:
            try:
                loaded = yaml.safe_load(Path(os.path.expanduser(self.prices_file)).read_text()) or {}
            except OSError as exc:
                raise ValueError(f"prices_file: cannot read {self.prices_file}: {exc.strerror}") from exc
            except yaml.YAMLError as exc:
                raise ValueError(f"prices_file: {self.prices_file} is not valid YAML: {exc}") from exc
            if not isinstance(loaded, dict):
                raise ValueError("prices_file: the top level must map model names to prices")
            for name, price in loaded.items():
                try:
                    merged[str(name)] = PriceSettings.model_validate(price)
                except ValidationError as exc:
                    raise ValueError(f"prices_file: {name}: {_describe(exc)}") from None
        merged.update(self.prices)
        object.__setattr__(self, "prices", merged)
        return self


class LimitSettings(_Section):
    rpm: int | None = Field(None, ge=1, description="default requests per minute per tenant (none: unlimited)")
    tpm: int | None = Field(None, ge=1, description="default tokens per minute per tenant (none: unlimited)")
    prompt_estimate: Literal["bytes", "chars"] = Field(
        "bytes",
        description="reserve a prompt's UTF-8 bytes (an upper bound: limits hold) or a quarter of its characters",
    )
    default_output_tokens: int = Field(
        256, ge=1, description="tokens reserved for a request without max_tokens, settled after it completes"
    )


class RedisSettings(_Section):
    url: str | None = Field(None, description="redis://host:port/db; none keeps everything in memory")
    socket_timeout: float = Field(0.25, gt=0, description="seconds before a Redis call counts as failed")
    key_prefix: str = Field("switchyard:", description="prefix of every key the gateway writes")

    def key(self, part: str) -> str:
        """The prefix of one component's keys (`cache`, `router:`, `key:`, `ratelimit:`...)."""
        return self.key_prefix + part


_OPENAI_APIS: frozenset[Api] = frozenset({"chat", "completions", "embeddings"})
_LOCAL_APIS: frozenset[Api] = frozenset({"chat", "completions"})
_DISCOVERABLE_APIS: frozenset[Api] = frozenset({"responses", "messages"})
# vLLM serves every client API itself (0.32: /v1/responses and /v1/messages included).
_VLLM_APIS: frozenset[Api] = frozenset({"chat", "completions", "embeddings", "responses", "messages"})
# A Messages-only server: its transport answers chat calls by translating them to Messages.
_ANTHROPIC_APIS: frozenset[Api] = frozenset({"chat", "messages"})


class BackendSettings(_Section):
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$", description="label in metrics")
    type: Literal["openai", "vllm", "sglang", "local", "anthropic"] = Field(
        "openai",
        description="remote OpenAI-compatible server; vllm and sglang also have their /metrics scraped; "
        "the built-in engine; or a server of Anthropic's Messages API",
    )
    base_url: str | None = Field(None, description="base URL ending in /v1 (remote types)")
    api_key_env: str | None = Field(None, description="environment variable holding the upstream key")
    models: list[str] = Field(default_factory=list, description="model names served; empty: discover")
    aliases: dict[str, str] = Field(default_factory=dict, description="public name → upstream model name")
    weight: float = Field(1.0, gt=0, description="share of traffic relative to other backends of a model")
    max_concurrency: int = Field(256, ge=1, description="requests in flight to this backend at most")
    connect_timeout: float = Field(2.0, gt=0, description="seconds to open a connection")
    read_timeout: float = Field(120.0, gt=0, description="seconds without a byte from the upstream")
    keepalive_expiry: float = Field(
        4.0, gt=0, description="seconds an idle upstream connection is kept for reuse (below the upstream's own)"
    )
    engine: EngineSettings | None = Field(None, description="local engine settings (type local)")
    metrics_interval: float = Field(
        2.0, gt=0, description="seconds between scrapes of an engine's /metrics (vllm, sglang)"
    )
    kv_saturation: float = Field(
        0.9, gt=0, le=1, description="KV-cache usage at which an engine counts as saturated and is avoided"
    )
    queue_saturation: int = Field(4, ge=1, description="requests waiting in an engine at which it counts as saturated")
    discovery: Literal["dns"] | None = Field(
        None,
        description="dns: base_url's host names a set of replicas (e.g. a Kubernetes headless Service), "
        "one per A/AAAA record, re-resolved every discovery_interval",
    )
    discovery_interval: float = Field(5.0, gt=0, description="seconds between resolutions of a discovered backend")
    hosts_file: str | None = Field(
        None, description="resolve the discovery name from this hosts-format file (re-read each time) instead of DNS"
    )
    apis: list[Api] | None = Field(
        None,
        description="client APIs the backend serves natively (others are translated to chat); "
        "default: chat, completions, embeddings (type openai), chat, completions (type local)",
    )

    @model_validator(mode="after")
    def _check_type(self) -> BackendSettings:
        if self.type != "local" and not self.base_url:
            raise ValueError(f"base_url is required for a {self.type} backend")
        if self.type == "anthropic" and self.apis is not None:
            raise ValueError("an anthropic backend speaks Messages (chat by translation): no apis")
        if self.discovery is not None and self.type == "local":
            raise ValueError("discovery is for remote backends")
        if self.hosts_file is not None and self.discovery is None:
            raise ValueError("hosts_file needs discovery: dns")
        if self.type == "local" and not self.models:
            raise ValueError("models must name the model a local backend serves")
        if self.type == "local" and self.apis is not None and not set(self.apis) <= _LOCAL_APIS:
            raise ValueError(f"apis: the local engine speaks only {sorted(_LOCAL_APIS)}")
        if self.type == "local" and self.engine is None:
            object.__setattr__(self, "engine", EngineSettings())  # the bundled model
        return self

    @field_validator("base_url")
    @classmethod
    def _strip(cls, v: str | None) -> str | None:
        return v.rstrip("/") if v else v

    def discoverable_apis(self) -> frozenset[Api]:
        """APIs to probe the backend for (a remote server without a declared `apis` list)."""
        return _DISCOVERABLE_APIS if self.apis is None and self.type in ("openai", "sglang") else frozenset()

    def native_apis(self) -> frozenset[Api]:
        """The APIs passed through untouched; requests on others are translated to chat."""
        if self.apis is not None:
            return frozenset(self.apis)
        if self.type == "anthropic":
            return _ANTHROPIC_APIS
        if self.type == "vllm":
            return _VLLM_APIS
        return _LOCAL_APIS if self.type == "local" else _OPENAI_APIS

    def api_key(self) -> str | None:
        if not self.api_key_env:
            return None
        value = os.environ.get(self.api_key_env)
        if value is None:
            raise ConfigError(f"backends.{self.name}.api_key_env: environment variable {self.api_key_env} is not set")
        return value

    def public_models(self) -> list[str]:
        return [*self.models, *self.aliases]

    def upstream_model(self, public: str) -> str:
        return self.aliases.get(public, public)


class ResponsesSettings(_Section):
    """Stored responses (the Responses API's `store` and `previous_response_id`)."""

    ttl: float = Field(30 * 86400.0, gt=0, description="seconds a stored response is kept (OpenAI keeps 30 days)")
    max_memory_entries: int = Field(
        10_000, ge=1, description="stored responses kept without Redis (the oldest go first)"
    )


class ResilienceSettings(_Section):
    retries: int = Field(2, ge=0, le=10, description="extra attempts on connect errors, 429 and 5xx")
    backoff_base: float = Field(0.05, ge=0, description="first retry waits about this long (jittered, doubling)")
    backoff_max: float = Field(1.0, ge=0, description="longest wait between retries")
    circuit_failures: int = Field(5, ge=1, description="consecutive failures that open a backend's circuit")
    circuit_cooldown: float = Field(10.0, gt=0, description="seconds before a half-open probe")
    wait_for_backend: float = Field(
        2.0, ge=0, description="seconds to wait for a cooling backend instead of failing at once"
    )
    health_interval: float = Field(10.0, gt=0, description="seconds between active health checks")
    fallbacks: dict[str, list[str]] = Field(default_factory=dict, description="model → models to try next")


class RelaySettings(_Section):
    balancer: Literal["least_outstanding", "ttft", "round_robin", "prefix"] = Field(
        "ttft",
        description="pick by predicted time to first token, by fewest requests in flight (weighted), in turn, "
        "or by which replica holds the prompt's prefix (bounded by load; cold prefixes by TTFT)",
    )
    prefix_chunk_chars: int = Field(
        256, ge=16, description="prefix balancer: characters of the rendered conversation per hashed chunk"
    )
    prefix_load_factor: float = Field(
        1.25, ge=1.0, description="prefix balancer: spill once a replica's load passes this × the mean load"
    )
    prefix_ttl: float = Field(600.0, gt=0, description="prefix balancer: seconds a prefix → replica entry is kept")
    prefix_entries: int = Field(100_000, ge=1, description="prefix balancer: entries kept in memory at most")
    first_token_deadline: Deadline | None = Field(
        None,
        description="seconds before a hedge: one figure (interactive traffic) or one per class, "
        "e.g. {interactive: 0.5, batch: 5}; none derives interactive's from the recent p95 TTFT",
    )
    model_deadlines: dict[str, Deadline] = Field(
        default_factory=dict, description="model → its own first_token_deadline (figure or per class)"
    )
    deadline_p95_factor: float = Field(1.5, ge=1.0, description="derived deadline = this × recent p95 TTFT")
    deadline_min: float = Field(0.25, gt=0, description="derived deadlines are never shorter")
    hedge: bool = Field(True, description="send a hedge to the next-best backend past the deadline")
    hedge_budget: float = Field(0.1, ge=0, le=1, description="extra upstream requests as a fraction")
    stall_timeout: float = Field(30.0, gt=0, description="longest gap between chunks before a stream is cut")
    keepalive_interval: float | None = Field(
        None, gt=0, description="send SSE comments while waiting for a slow first token"
    )
    ttft_budget: dict[Priority, float] = Field(
        default_factory=lambda: {"interactive": 10.0, "batch": 60.0},  # type: ignore[arg-type]
        description="predicted TTFT (seconds) above which a priority class is shed",
    )
    batch_shed_fraction: float = Field(
        0.5,
        gt=0,
        le=1,
        description="shed batch traffic once predicted TTFT passes this share of the interactive budget",
    )
    max_queue: int = Field(1024, ge=1, description="requests waiting for a backend slot before 503")

    def fixed_deadline(self, model: str, priority: Priority) -> float | None:
        """The configured first-token deadline of this model and class; None: not configured."""
        spec = self.model_deadlines.get(model, self.first_token_deadline)
        if isinstance(spec, dict):
            return spec.get(priority)
        return spec if priority == "interactive" else None


class EmbedderSettings(_Section):
    """The one sentence embedder the cache's semantic layer and the tool router share."""

    enabled: bool | None = Field(None, description="none: load it when the semantic cache or the router needs it")
    model_path: str | None = Field(None, description="a sentence-transformers directory; default: bundled MiniLM")
    max_batch: int = Field(64, ge=1, description="texts embedded in one call at most")
    device: str = Field("cpu", description="torch device for the embedder")


class Settings(_Section):
    server: ServerSettings = ServerSettings()
    auth: AuthSettings = AuthSettings()
    limits: LimitSettings = LimitSettings()
    redis: RedisSettings = RedisSettings()
    backends: list[BackendSettings] = []
    resilience: ResilienceSettings = ResilienceSettings()
    relay: RelaySettings = RelaySettings()
    cache: CacheSettings = CacheSettings()
    router: RouterSettings = RouterSettings()
    embedder: EmbedderSettings = EmbedderSettings()
    admin: AdminSettings = AdminSettings()
    spend: SpendSettings = SpendSettings()
    responses: ResponsesSettings = ResponsesSettings()
    # Where spans go is configured by the OpenTelemetry variables (gateway/telemetry/config.py).
    tracing: TracingSettings = TracingSettings()
    request_log: RequestLogSettings = RequestLogSettings()

    @model_validator(mode="after")
    def _check(self) -> Settings:
        names = [b.name for b in self.backends]
        dupes = {n for n in names if names.count(n) > 1}
        if dupes:
            raise ValueError(f"backend names must be unique: {sorted(dupes)}")
        if self.auth.mode == "keys" and not self.auth.keys and not self.auth.redis_keys and not self.admin.enabled:
            raise ValueError(
                "auth: no keys configured; add auth.keys, enable auth.redis_keys, "
                "or set auth.mode: none for development"
            )
        if self.auth.redis_keys and not self.redis.url:
            raise ValueError("auth.redis_keys needs redis.url")
        if self.admin.enabled and not self.redis.url:
            raise ValueError("admin needs redis.url (keys and budgets live in Redis, shared by every replica)")
        if self.admin.enabled and self.auth.mode == "keys" and not self.auth.redis_keys:
            object.__setattr__(self, "auth", self.auth.model_copy(update={"redis_keys": True}))
        if self.spend.ledger.sink == "redis" and not self.redis.url:
            raise ValueError("spend.ledger.sink 'redis' needs redis.url")
        if self.cache.store == "redis" and not self.redis.url:
            raise ValueError("cache.store 'redis' needs redis.url (the cache shares the deployment's Redis)")
        return self

    @model_validator(mode="before")
    @classmethod
    def _cache_follows_redis(cls, data: Any) -> Any:
        """With `redis.url` set, the cache shares that Redis unless `cache.store` says otherwise."""
        if isinstance(data, dict) and (data.get("redis") or {}).get("url"):
            cache = dict(data.get("cache") or {})
            cache.setdefault("store", "redis")
            data = {**data, "cache": cache}
        return data

    def needs_embedder(self) -> bool:
        if self.embedder.enabled is not None:
            return self.embedder.enabled
        return (self.cache.enabled and self.cache.semantic) or self.router.enabled


def _env_overrides(environ: dict[str, str]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX) or name in (ENV_PREFIX + "CONFIG",):
            continue
        path = [p.lower() for p in name[len(ENV_PREFIX) :].split("__")]
        node = tree
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = yaml.safe_load(raw) if raw else raw
    return tree


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _describe(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
        lines.append(f"{key}: {err['msg']}")
    return "; ".join(lines)


def load_settings(
    path: str | Path | None = None,
    *,
    environ: dict[str, str] | None = None,
    overrides: dict[str, Any] | None = None,
) -> Settings:
    """Read YAML, apply environment then explicit overrides, validate. Raises ConfigError naming the key."""
    data: dict[str, Any] = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(Path(path).read_text())
        except OSError as exc:
            raise ConfigError(f"cannot read config {path}: {exc.strerror}") from exc
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path} is not valid YAML: {exc}") from exc
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path}: the top level must be a mapping")
        data = loaded or {}
    data = _merge(data, _env_overrides(dict(os.environ if environ is None else environ)))
    data = _merge(data, overrides or {})
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from None


class SettingsSource:
    """Where the running settings came from, so a reload reads them the same way (file, then the
    environment, then the command line's overrides). Plain data: worker processes receive a copy."""

    def __init__(self, path: str | Path | None, overrides: dict[str, Any] | None = None):
        self.path = Path(path) if path is not None else None
        self.overrides = overrides or {}

    def load(self) -> Settings:
        return load_settings(self.path, overrides=self.overrides)
