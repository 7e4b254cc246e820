"""The `cache-warming` kind: per-tenant KPI snapshots written to the shared state (see `kpi`).

A system job warms the listed tenants, or every tenant active in the last day; a
tenant's own job warms that tenant only.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from settler_jobs.context import JobContext
from settler_jobs.errors import PermanentFailure
from settler_jobs.scheduling import SYSTEM_TENANT, ScheduledPayload, run_recorded
from settler_jobs.tenants import kpi


class CacheWarmPayload(ScheduledPayload):
    """Which tenants to warm (system jobs only; default: the active ones)."""

    tenants: list[str] | None = Field(default=None, max_length=1000)
    cacheKeys: list[Literal["kpi-health", "recent-jobs"]] | None = Field(default=None, max_length=2)
    """The seed's shape (`["kpi-health", "recent-jobs"]`); both are always warmed."""


async def warm_cache(payload: CacheWarmPayload, ctx: JobContext) -> dict[str, Any]:
    """Compute and cache KPI snapshots; returns how many tenants were warmed."""
    res = ctx.resources
    ops = res.require_queue_ops()
    state = res.require_shared_state()
    if ctx.tenant_id != SYSTEM_TENANT:
        if payload.tenants not in (None, [ctx.tenant_id]) or payload.scheduleId:
            raise PermanentFailure("a tenant's cache-warming job warms that tenant only")
        return await kpi.warm(ops, state, res.settings, res.now(), [ctx.tenant_id])
    try:
        return await run_recorded(
            ctx, payload, lambda: kpi.warm(ops, state, res.settings, res.now(), payload.tenants)
        )
    except ValueError as exc:  # an invalid tenant id in the list
        raise PermanentFailure(str(exc)) from exc
