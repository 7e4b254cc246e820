"""Fair-share usage: a tenant's waiting and running jobs, quota use and cap hits.

Tenants read their own (`GET /usage`); the operator reads any tenant's.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path
from pydantic import BaseModel

from settler_jobs.api.deps import Context, Operator, Tenant
from settler_jobs.api.errors import ERROR_RESPONSES
from settler_jobs.records import TenantUsage

router = APIRouter(prefix="/usage", tags=["usage"], responses=ERROR_RESPONSES)
admin_router = APIRouter(
    prefix="/admin/tenants", tags=["usage (operator)"], responses=ERROR_RESPONSES
)
TenantId = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]


class LaneUsageOut(BaseModel):
    """One lane's share of the tenant."""

    queue: str
    waiting: int
    active: int
    parked: int
    cap_hits: int


class UsageOut(BaseModel):
    """Waiting jobs against the backlog quota, running jobs against the cap (0 = none)."""

    tenant_id: str
    tier: str
    quota: int
    cap: int
    waiting: int
    active: int
    cap_hits: int
    lanes: list[LaneUsageOut]


def _out(usage: TenantUsage) -> UsageOut:
    return UsageOut.model_validate(usage.as_dict())


@router.get("", response_model=UsageOut)
async def my_usage(principal: Tenant, ctx: Context) -> UsageOut:
    """The caller's waiting and running jobs, quota and cap, per lane."""
    usage = await ctx.services.queue.tenant_usage(principal.tenant_id, principal.tier)
    return _out(usage)


@admin_router.get("/{tenant_id}/usage", response_model=UsageOut)
async def tenant_usage(tenant_id: TenantId, _: Operator, ctx: Context) -> UsageOut:
    """Any tenant's usage (404 for an unknown tenant)."""
    tenant = await ctx.directory.get_tenant(tenant_id)
    return _out(await ctx.services.queue.tenant_usage(tenant.id, tenant.tier))
