"""What the admin API stores in Redis, and under which names. The key store (gateway/auth.py) reads
the same records.

    key:<sha256>            one key's record (JSON); the key itself is never stored
    keys                    hash: key id → sha256 of its current secret
    budget:<scope>          a team's or tenant's budget (JSON)
    teams:<tenant>          set of the tenant's team names
    spend:<scope>:<period>  spend counters (gateway/budgets.py)

Scopes: `key:<id>`, `team:<tenant>:<team>`, `tenant:<tenant>`.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from gateway.settings import BudgetSettings
from gateway.types import Priority

__all__ = ["NAME_PATTERN", "KeyRecord", "RedisNames", "key_scope", "team_scope", "tenant_scope"]

NAME_PATTERN = r"^[A-Za-z0-9_.:-]+$"


def key_scope(key_id: str) -> str:
    return f"key:{key_id}"


def team_scope(tenant: str, team: str) -> str:
    return f"team:{tenant}:{team}"


def tenant_scope(tenant: str) -> str:
    return f"tenant:{tenant}"


class KeyRecord(BaseModel):
    """A key as stored. Records written by hand before the admin API (only `tenant` and limits)
    are read too, so unknown fields are ignored rather than refused."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    id: str | None = None
    sha256: str | None = None
    tenant: str = Field(min_length=1, max_length=64, pattern=NAME_PATTERN)
    team: str | None = Field(None, min_length=1, max_length=64, pattern=NAME_PATTERN)
    name: str | None = Field(None, max_length=200)
    priority: Priority = "interactive"
    models: list[str] | None = None
    rpm: int | None = Field(None, ge=1)
    tpm: int | None = Field(None, ge=1)
    budget: BudgetSettings | None = None
    expires_at: float | None = None  # unix seconds
    created_at: float | None = None
    rotated_at: float | None = None

    def public(self) -> dict[str, object]:
        """What the admin API shows: everything but the digest."""
        return self.model_dump(exclude={"sha256"}, mode="json")


class RedisNames:
    def __init__(self, prefix: str):
        self.prefix = prefix

    def key(self, digest: str) -> str:
        return f"{self.prefix}key:{digest}"

    @property
    def key_prefix(self) -> str:
        return f"{self.prefix}key:"

    @property
    def index(self) -> str:
        return f"{self.prefix}keys"

    def budget(self, scope: str) -> str:
        return f"{self.prefix}budget:{scope}"

    def teams(self, tenant: str) -> str:
        return f"{self.prefix}teams:{tenant}"
