"""Request dependencies: the API context, tenant authentication with rate limiting, and
operator authentication.

A tenant key decides the tenant and its tier; nothing in a request body can. Operator
routes take the bearer token of SETTLER_OPERATOR_TOKEN (off when unset); tenant keys
never open them and the operator token never acts as a tenant.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from settler_jobs.api.middleware import ApiMetrics
from settler_jobs.api.ratelimit import RateLimiter
from settler_jobs.config import Settings
from settler_jobs.exports.service import Exports
from settler_jobs.reconcile.service import Reconciliations
from settler_jobs.tenants.directory import Principal, TenantDirectory
from settler_jobs.webhooks.service import Webhooks
from settler_jobs.wiring import Services

_tenant_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="TenantKey",
    description="A tenant API key (`settler-jobs keys create`).",
)
_operator_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="OperatorToken",
    description="The operator token (SETTLER_OPERATOR_TOKEN).",
)
_CHALLENGE = {"WWW-Authenticate": "Bearer"}


@dataclass
class ApiContext:
    """What request handlers share: services, tenants, limits, webhooks, metrics."""

    settings: Settings
    services: Services
    redis: Redis | None
    """The API's state store on the Redis backend; None on PostgreSQL (the state-store seam)."""
    directory: TenantDirectory
    limiter: RateLimiter
    webhooks: Webhooks
    metrics_registry: CollectorRegistry
    metrics: ApiMetrics
    exports: Exports
    reconciliations: Reconciliations
    link_key: bytes
    """HMAC key of signed download links (derived from the application key)."""


def context(request: Request) -> ApiContext:
    """The context the app's lifespan opened."""
    ctx: ApiContext = request.app.state.ctx
    return ctx


Context = Annotated[ApiContext, Depends(context)]


async def tenant(
    request: Request,
    ctx: Context,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_tenant_bearer)],
) -> Principal:
    """The tenant of a valid key (401 otherwise), within its tier's rate (429 otherwise)."""
    principal = None
    if credentials is not None and credentials.scheme.lower() == "bearer":
        principal = await ctx.directory.authenticate(credentials.credentials)
    if principal is None:
        raise HTTPException(401, "invalid or revoked API key", headers=_CHALLENGE)
    verdict = await ctx.limiter.check(principal.tenant_id, principal.tier)
    if not verdict.allowed:
        raise HTTPException(
            429,
            f"rate limit of the {principal.tier.value} tier exceeded",
            headers={"Retry-After": str(verdict.retry_after_s)},
        )
    request.state.audit = (f"key:{principal.key_id}", principal.tenant_id)
    return principal


async def operator(
    request: Request,
    ctx: Context,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_operator_bearer)],
) -> str:
    """Admit the operator token (401 otherwise); returns the actor name for audit notes."""
    expected = ctx.settings.operator_token
    if expected is None:
        raise HTTPException(401, "operator access is not configured", headers=_CHALLENGE)
    given = credentials.credentials if credentials is not None else ""
    if not hmac.compare_digest(given.encode(), expected.get_secret_value().encode()):
        raise HTTPException(401, "invalid operator token", headers=_CHALLENGE)
    request.state.audit = ("operator", None)
    return "operator"


Tenant = Annotated[Principal, Depends(tenant)]
Operator = Annotated[str, Depends(operator)]
