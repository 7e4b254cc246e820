"""Workers, schedules, tenants and webhook deliveries."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response

from settler_jobs import heartbeat
from settler_jobs.dashboard.session import Session
from settler_jobs.dashboard.web import (
    PREFIX,
    back,
    checked_form,
    context,
    render,
    require_session,
    state_redis,
)
from settler_jobs.errors import InvalidState, NotFound, SettlerError
from settler_jobs.scheduling import plan as schedules
from settler_jobs.scheduling import runs as schedule_runs
from settler_jobs.tenants import kpi
from settler_jobs.webhooks.values import Delivery

router = APIRouter()
Operator = Annotated[Session, Depends(require_session)]
MAX_TENANTS = 100


@router.get("/workers")
async def workers_page(request: Request, session: Operator) -> Response:
    """Live workers from their heartbeats."""
    ctx = context(request)
    found = await heartbeat.live_workers(state_redis(ctx), ctx.settings.queue_prefix)
    return render(request, "workers.html", session, workers=found, now_ms=heartbeat.now_ms())


@router.get("/schedules")
async def schedules_page(request: Request, session: Operator) -> Response:
    """Configured schedules: last and next run, and whether one looks missed."""
    ctx = context(request)
    now = datetime.now(UTC)
    grace = timedelta(seconds=ctx.settings.schedule_missed_grace_s)
    configured = schedules.configured(ctx.settings)
    infos = {i.id: i for i in await ctx.services.queue.list_schedules()}
    ids = [s.id for s in configured]
    async with ctx.services.sessions() as db:
        last = await schedule_runs.last_runs(db, ids)
        last_scheduled = await schedule_runs.last_runs(db, ids, trigger="schedule")
    rows = [
        {
            "schedule": s,
            "info": infos.get(s.id),
            "last": last.get(s.id),
            "missed": schedules.missed_reason(
                s, infos.get(s.id), last_scheduled.get(s.id), now, grace
            ),
        }
        for s in configured
    ]
    return render(request, "schedules.html", session, rows=rows)


@router.get("/tenants")
async def tenants_page(request: Request, session: Operator) -> Response:
    """Tenants with tier, fair-share usage (live), backlog and failure rate (cached KPIs)."""
    ctx = context(request)
    queue = ctx.services.redis_queue()
    tenants = (await ctx.directory.list_tenants())[:MAX_TENANTS]
    now = datetime.now(UTC)
    keys = [kpi.cache_key(queue.key_prefix, t.id, "kpi-health") for t in tenants]
    raws = list(await state_redis(ctx).mget(keys)) if keys else []
    missing = [t.id for t, raw in zip(tenants, raws, strict=True) if raw is None]
    if missing:
        await kpi.warm(queue, ctx.settings, now, missing)
        raws = list(await state_redis(ctx).mget(keys))
    snapshots: dict[str, dict[str, Any]] = {
        t.id: json.loads(raw) if raw else {} for t, raw in zip(tenants, raws, strict=True)
    }
    usage = {u.tenant_id: u for u in await queue.tenants_usage([(t.id, t.tier) for t in tenants])}
    return render(
        request,
        "tenants.html",
        session,
        tenants=tenants,
        kpis=snapshots,
        usage=usage,
        capped=MAX_TENANTS,
    )


@router.get("/webhooks")
async def webhooks_page(
    request: Request,
    session: Operator,
    tenant: Annotated[str, Query(max_length=64)] = "",
    status: Annotated[str, Query(max_length=16)] = "",
) -> Response:
    """A tenant's recent webhook deliveries."""
    ctx = context(request)
    deliveries: list[Delivery] = []
    error = ""
    if tenant:
        try:
            deliveries = await ctx.webhooks.list_deliveries(tenant, status=status or None, limit=50)
        except (SettlerError, ValueError) as exc:
            error = str(exc)
    return render(
        request,
        "webhooks.html",
        session,
        deliveries=deliveries,
        error=error,
        filters={"tenant": tenant, "status": status},
    )


@router.post("/webhooks/{tenant_id}/{delivery_id}/redeliver")
async def redeliver(
    request: Request, session: Operator, tenant_id: str, delivery_id: str
) -> Response:
    """Send a finished delivery again."""
    await checked_form(request, session)
    ctx = context(request)
    try:
        await ctx.webhooks.redeliver(tenant_id, delivery_id)
        message = "Redelivery queued."
    except (InvalidState, NotFound, SettlerError) as exc:
        message = str(exc)
    return back(f"{PREFIX}/webhooks?tenant={quote(tenant_id, safe='')}", message)
