"""The admin API under /admin/: keys, team and tenant budgets, spend. It answers only to the admin
key (`admin.key_sha256` or `admin.key_env`), never to a tenant key, and is not there at all (404)
unless one is configured. Errors have the OpenAI shape, like the rest of the gateway.

    POST   /admin/keys                               create a key (its secret is in this answer only)
    GET    /admin/keys?tenant=&team=                 list keys
    GET    /admin/keys/{id}                          one key and its spend
    POST   /admin/keys/{id}/rotate                   a new secret; the old one stops at once
    DELETE /admin/keys/{id}                          revoke
    GET    /admin/tenants/{tenant}                   budget and spend of a tenant and its teams
    PUT    /admin/tenants/{tenant}/budget            {amount_usd, period}; DELETE removes it
    GET    /admin/tenants/{tenant}/teams/{team}      a team's budget and spend
    PUT    /admin/tenants/{tenant}/teams/{team}/budget
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Awaitable
from typing import Any, TypeVar

import orjson
from fastapi import APIRouter, Depends, FastAPI, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from starlette.responses import JSONResponse, Response

from gateway.admin.records import NAME_PATTERN, team_scope, tenant_scope
from gateway.admin.store import AdminStore, KeyConflict
from gateway.auth import hash_key
from gateway.errors import AuthenticationFailed, BadRequest, NotFound
from gateway.routes import services
from gateway.settings import BudgetSettings
from gateway.types import Priority

__all__ = ["attach_admin"]

_Name = Field(min_length=1, max_length=64, pattern=NAME_PATTERN)


_T = TypeVar("_T")


class Conflict(BadRequest):
    status = 409
    code = "conflict"


class CreateKey(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tenant: str = _Name
    team: str | None = Field(None, min_length=1, max_length=64, pattern=NAME_PATTERN)
    name: str | None = Field(None, max_length=200)
    priority: Priority = "interactive"
    models: list[str] | None = Field(None, min_length=1)
    rpm: int | None = Field(None, ge=1)
    tpm: int | None = Field(None, ge=1)
    budget: BudgetSettings | None = None
    expires_at: float | None = Field(None, description="unix seconds")
    expires_in_seconds: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _check(self) -> CreateKey:
        if self.expires_at is not None and self.expires_in_seconds is not None:
            raise ValueError("give expires_at or expires_in_seconds, not both")
        if self.expires_at is not None and self.expires_at <= time.time():
            raise ValueError("expires_at is in the past")
        if self.models is not None and not all(m.strip() for m in self.models):
            raise ValueError("models: names must not be empty")
        return self

    def record_fields(self) -> dict[str, Any]:
        fields = self.model_dump(exclude={"expires_in_seconds"})
        if self.expires_in_seconds is not None:
            fields["expires_at"] = time.time() + self.expires_in_seconds
        return fields


def _describe(exc: ValidationError) -> tuple[str, str | None]:
    parts, first = [], None
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"])
        first = first or key or None
        parts.append(f"{key}: {err['msg']}" if key else err["msg"])
    return "; ".join(parts), first


async def _body(request: Request, model: type[BaseModel]) -> Any:
    raw = await request.body()
    try:
        data = orjson.loads(raw) if raw else None
    except orjson.JSONDecodeError:
        raise BadRequest("The request body is not valid JSON.") from None
    if not isinstance(data, dict):
        raise BadRequest("The request body must be a JSON object.")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        message, param = _describe(exc)
        raise BadRequest(f"Invalid request: {message}", param=param) from None


def _check_name(value: str, what: str) -> str:
    try:
        _NameCheck(value=value)
    except ValidationError:
        raise BadRequest(f"'{value}' is not a valid {what} name.", param=what) from None
    return value


class _NameCheck(BaseModel):
    value: str = _Name


def _store(request: Request) -> AdminStore:
    admin = services(request).admin
    if admin is None:
        raise NotFound(f"Unknown path {request.url.path}")
    return admin


async def _authorize(request: Request) -> None:
    svc = services(request)
    if svc.admin is None or svc.admin_digest is None:
        raise NotFound(f"Unknown path {request.url.path}")
    scheme, _, key = (request.headers.get("authorization") or "").partition(" ")
    key = key.strip()
    if scheme.lower() != "bearer" or not key:
        raise AuthenticationFailed("The admin API needs the admin key as 'Authorization: Bearer <key>'.")
    if not hmac.compare_digest(hash_key(key), svc.admin_digest):
        raise AuthenticationFailed("This is not the admin key.")


def _no_key(key_id: str) -> NotFound:
    return NotFound(f"No key with id '{key_id}'.", param="key_id")


async def _key_change(key_id: str, change: Awaitable[_T | None]) -> _T:
    """What the store's change of key `key_id` returned: 409 when another change won, 404 when no such key."""
    try:
        result = await change
    except KeyConflict:
        raise Conflict(f"Key '{key_id}' changed meanwhile; try again.", param="key_id") from None
    if result is None:
        raise _no_key(key_id)
    return result


def _json(content: Any, status: int = 200) -> Response:
    return JSONResponse(content, status_code=status)


def attach_admin(app: FastAPI) -> None:
    router = APIRouter(prefix="/admin", dependencies=[Depends(_authorize)], include_in_schema=False)

    @router.post("/keys")
    async def create_key(request: Request) -> Response:
        spec = await _body(request, CreateKey)
        store = _store(request)
        secret, record = await store.create_key(spec.record_fields())
        return _json({**record.public(), "key": secret}, 201)

    @router.get("/keys")
    async def list_keys(request: Request, tenant: str | None = None, team: str | None = None) -> Response:
        records = await _store(request).list_keys(tenant, team)
        return _json({"object": "list", "data": [r.public() for r in records]})

    @router.get("/keys/{key_id}")
    async def get_key(request: Request, key_id: str) -> Response:
        store = _store(request)
        record = await store.get_key(key_id)
        if record is None:
            raise _no_key(key_id)
        return _json({**record.public(), "spend": await store.key_spend(record)})

    @router.post("/keys/{key_id}/rotate")
    async def rotate_key(request: Request, key_id: str) -> Response:
        secret, record = await _key_change(key_id, _store(request).rotate_key(key_id))
        return _json({**record.public(), "key": secret})

    @router.delete("/keys/{key_id}")
    async def revoke_key(request: Request, key_id: str) -> Response:
        record = await _key_change(key_id, _store(request).revoke_key(key_id))
        return _json({**record.public(), "revoked": True})

    @router.get("/tenants/{tenant}")
    async def tenant(request: Request, tenant: str) -> Response:
        return _json(await _store(request).tenant_spend(_check_name(tenant, "tenant")))

    @router.get("/tenants/{tenant}/teams/{team}")
    async def team(request: Request, tenant: str, team: str) -> Response:
        return _json(await _store(request).team_spend(_check_name(tenant, "tenant"), _check_name(team, "team")))

    @router.put("/tenants/{tenant}/budget")
    async def set_tenant_budget(request: Request, tenant: str) -> Response:
        budget = await _body(request, BudgetSettings)
        store = _store(request)
        await store.set_budget(tenant_scope(_check_name(tenant, "tenant")), budget)
        return _json(await store.tenant_spend(tenant))

    @router.delete("/tenants/{tenant}/budget")
    async def clear_tenant_budget(request: Request, tenant: str) -> Response:
        store = _store(request)
        await store.set_budget(tenant_scope(_check_name(tenant, "tenant")), None)
        return _json(await store.tenant_spend(tenant))

    @router.put("/tenants/{tenant}/teams/{team}/budget")
    async def set_team_budget(request: Request, tenant: str, team: str) -> Response:
        budget = await _body(request, BudgetSettings)
        store = _store(request)
        await store.set_budget(team_scope(_check_name(tenant, "tenant"), _check_name(team, "team")), budget)
        await store.add_team(tenant, team)
        return _json(await store.team_spend(tenant, team))

    @router.delete("/tenants/{tenant}/teams/{team}/budget")
    async def clear_team_budget(request: Request, tenant: str, team: str) -> Response:
        store = _store(request)
        await store.set_budget(team_scope(_check_name(tenant, "tenant"), _check_name(team, "team")), None)
        return _json(await store.team_spend(tenant, team))

    app.include_router(router)
