"""Dead letters: operators list, show, retry and resolve; a tenant reads its own entries."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, ConfigDict, Field

from settler_jobs.api.deps import ApiContext, Context, Operator, Tenant
from settler_jobs.api.errors import ERROR_RESPONSES
from settler_jobs.dlq import capture as dead_letters
from settler_jobs.dlq import store as dlq
from settler_jobs.dlq.store import DlqEntry
from settler_jobs.domain import DlqStatus

router = APIRouter(prefix="/dlq", tags=["dead letters"], responses=ERROR_RESPONSES)
admin_router = APIRouter(
    prefix="/admin/dlq", tags=["dead letters (operator)"], responses=ERROR_RESPONSES
)
EntryId = Annotated[str, Path(min_length=1, max_length=64)]
Limit = Annotated[int, Query(ge=1, le=dlq.MAX_PAGE)]
Before = Annotated[str | None, Query(min_length=1, max_length=64, description="Last id seen.")]
KindFilter = Annotated[str | None, Query(min_length=1, max_length=64)]
TenantFilter = Annotated[str | None, Query(min_length=1, max_length=64)]
Actor = Annotated[str, Field(min_length=1, max_length=dlq.MAX_NAME)]


class RetryIn(BaseModel):
    """Retry a dead letter, optionally with edited data (the stored payload is redacted)."""

    model_config = ConfigDict(extra="forbid")
    data: dict[str, Any] | None = None
    actor: Actor = "operator"


class ResolveIn(BaseModel):
    """Close a dead letter as dealt with."""

    model_config = ConfigDict(extra="forbid")
    note: str = Field(default="", max_length=dlq.MAX_NOTE)
    actor: Actor = "operator"


class RetriedOut(BaseModel):
    """The entry after the retry, and the new job."""

    entry: DlqEntry
    job_id: str


async def _list(
    ctx: ApiContext,
    tenant_id: str | None,
    kind: str | None,
    status: DlqStatus | None,
    limit: int,
    before: str | None,
) -> list[DlqEntry]:
    async with ctx.services.sessions() as session:
        return await dlq.list_entries(
            session, tenant_id=tenant_id, kind=kind, status=status, limit=limit, before=before
        )


async def _get(ctx: ApiContext, entry_id: str, tenant_id: str | None) -> DlqEntry:
    async with ctx.services.sessions() as session:
        return await dlq.get_entry(session, entry_id, tenant_id=tenant_id)


@router.get("", response_model=list[DlqEntry])
async def list_own(
    principal: Tenant,
    ctx: Context,
    kind: KindFilter = None,
    status: DlqStatus | None = None,
    limit: Limit = 50,
    before: Before = None,
) -> list[DlqEntry]:
    """The tenant's dead letters, newest first."""
    return await _list(ctx, principal.tenant_id, kind, status, limit, before)


@router.get("/{entry_id}", response_model=DlqEntry)
async def show_own(entry_id: EntryId, principal: Tenant, ctx: Context) -> DlqEntry:
    """One of the tenant's dead letters."""
    return await _get(ctx, entry_id, principal.tenant_id)


@admin_router.get("", response_model=list[DlqEntry])
async def list_all(
    _: Operator,
    ctx: Context,
    tenant: TenantFilter = None,
    kind: KindFilter = None,
    status: DlqStatus | None = None,
    limit: Limit = 50,
    before: Before = None,
) -> list[DlqEntry]:
    """Every dead letter (or one tenant's), newest first."""
    return await _list(ctx, tenant, kind, status, limit, before)


@admin_router.get("/{entry_id}", response_model=DlqEntry)
async def show(entry_id: EntryId, _: Operator, ctx: Context) -> DlqEntry:
    """One dead letter with its error and stack."""
    return await _get(ctx, entry_id, None)


@admin_router.post("/{entry_id}/retry", response_model=RetriedOut)
async def retry(entry_id: EntryId, body: RetryIn, _: Operator, ctx: Context) -> RetriedOut:
    """Re-enqueue a dead letter as a new job, linked to it (409 unless open)."""
    entry, submitted = await dead_letters.retry_entry(
        ctx.services.queue, ctx.services.sessions, entry_id, actor=body.actor, data=body.data
    )
    return RetriedOut(entry=entry, job_id=submitted.job.id)


@admin_router.post("/{entry_id}/resolve", response_model=DlqEntry)
async def resolve(entry_id: EntryId, body: ResolveIn, _: Operator, ctx: Context) -> DlqEntry:
    """Mark a dead letter resolved with a note (409 unless open)."""
    async with ctx.services.sessions() as session, session.begin():
        return await dlq.resolve(
            session, entry_id, note=body.note, actor=body.actor, now=datetime.now(UTC)
        )
