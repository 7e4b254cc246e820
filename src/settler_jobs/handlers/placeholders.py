"""Minimal handlers for the seed's kinds until their own modules replace them.

Each validates its payload (so bad input fails fast and permanently) and reports
what it was asked to do; none has side effects yet.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from settler_jobs.handlers.context import JobContext


class _Payload(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)


class ReconciliationPayload(_Payload):
    """A reconciliation request: which run, and how to read its sources."""

    adapterConfig: dict[str, Any] = Field(default_factory=dict)


class EmailPayload(_Payload):
    """An email request."""

    to: str = Field(min_length=3, max_length=320)
    template: str = Field(min_length=1, max_length=64)
    data: dict[str, Any] = Field(default_factory=dict)


class CacheWarmPayload(_Payload):
    """Cache keys to warm for a tenant."""

    cacheKeys: list[str] = Field(default_factory=list, max_length=100)


def _summary(ctx: JobContext, **extra: Any) -> dict[str, Any]:
    return {"kind": ctx.kind, "tenantId": ctx.tenant_id, "attempt": ctx.attempt, **extra}


async def reconcile(payload: ReconciliationPayload, ctx: JobContext) -> dict[str, Any]:
    """Accept a reconciliation request (matching arrives with the reconciliation issue)."""
    await ctx.report_progress(100)
    return _summary(ctx, sources=sorted(payload.adapterConfig))


async def send_email(payload: EmailPayload, ctx: JobContext) -> dict[str, Any]:
    """Accept an email request (providers arrive with email)."""
    return _summary(ctx, template=payload.template)


async def warm_cache(payload: CacheWarmPayload, ctx: JobContext) -> dict[str, Any]:
    """Accept a cache warm request (KPI snapshots arrive with cache warming)."""
    return _summary(ctx, keys=len(payload.cacheKeys))
