"""Jobs of the caller's tenant: submit (one or bulk), get, list, cancel, retry.

Every lookup is scoped to the key's tenant: another tenant's job id answers 404,
exactly like an id that does not exist.
"""

from __future__ import annotations

from typing import Annotated, Final

from fastapi import APIRouter, Header, Path, Query, Response, status

from settler_jobs.api.deps import Context, Tenant
from settler_jobs.api.errors import ERROR_RESPONSES
from settler_jobs.api.schemas import (
    BulkIn,
    BulkItemOut,
    BulkOut,
    CancelOut,
    JobIn,
    JobOut,
    JobPage,
    ListState,
    SubmittedOut,
)
from settler_jobs.domain import JobState
from settler_jobs.queue import AnyJobQueue
from settler_jobs.records import JobRecord, Submission
from settler_jobs.tenants.directory import Principal

router = APIRouter(prefix="/jobs", tags=["jobs"], responses=ERROR_RESPONSES)
JobId = Annotated[str, Path(min_length=1, max_length=128)]
_SCAN_PAGE: Final = 500
_MAX_SCAN: Final = 10_000


def _submission(job: JobIn, principal: Principal, key: str | None) -> Submission:
    return Submission(
        kind=job.kind,
        data=job.data,
        tenant_id=principal.tenant_id,
        tier=principal.tier,
        priority=job.priority,
        delay_s=job.delay_s,
        idempotency_key=key,
        attempts=job.attempts,
        backoff_s=job.backoff_s,
        timeout_s=job.timeout_s,
    )


@router.post(
    "",
    response_model=SubmittedOut,
    status_code=status.HTTP_201_CREATED,
    responses={200: {"model": SubmittedOut, "description": "An idempotent repeat."}},
)
async def submit(
    body: JobIn,
    principal: Tenant,
    ctx: Context,
    response: Response,
    idempotency_key: Annotated[
        str | None, Header(alias="Idempotency-Key", min_length=1, max_length=255)
    ] = None,
) -> SubmittedOut:
    """Enqueue one job; with the same Idempotency-Key the same job comes back (200)."""
    result = await ctx.services.queue.submit(_submission(body, principal, idempotency_key))
    if not result.created:
        response.status_code = status.HTTP_200_OK
    return SubmittedOut(created=result.created, job=JobOut.of(result.job))


@router.post("/bulk", response_model=BulkOut, status_code=status.HTTP_201_CREATED)
async def submit_bulk(body: BulkIn, principal: Tenant, ctx: Context) -> BulkOut:
    """Enqueue up to 1000 jobs at once; all are validated before any is enqueued."""
    subs = [_submission(job, principal, job.idempotency_key) for job in body.jobs]
    results = await ctx.services.queue.submit_bulk(subs)
    return BulkOut(
        jobs=[BulkItemOut(id=r.job.id, state=r.job.state, created=r.created) for r in results]
    )


@router.get("/{job_id}", response_model=JobOut)
async def get_job(job_id: JobId, principal: Tenant, ctx: Context) -> JobOut:
    """One job of the tenant."""
    return JobOut.of(await ctx.services.queue.get(job_id, tenant_id=principal.tenant_id))


async def tenant_jobs(
    queue: AnyJobQueue,
    tenant_id: str,
    *,
    kind: str | None,
    state: JobState | None,
    wanted: int,
) -> tuple[list[JobRecord], bool]:
    """The tenant's newest `wanted` jobs, and whether more exist within the scan window.

    Redis keeps no per-tenant index: the newest jobs of every lane are scanned in pages
    (at most the newest 10,000 per lane and state) and filtered by tenant.
    """
    mine: list[JobRecord] = []
    offset = 0
    while offset <= _MAX_SCAN:
        page = await queue.list_jobs(kind=kind, state=state, limit=_SCAN_PAGE, offset=offset)
        mine.extend(job for job in page if job.tenant_id == tenant_id)
        if len(mine) > wanted or len(page) < _SCAN_PAGE:
            break
        offset += _SCAN_PAGE
    return mine[:wanted], len(mine) > wanted


@router.get("", response_model=JobPage)
async def list_jobs(
    principal: Tenant,
    ctx: Context,
    kind: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
    state: ListState | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=_MAX_SCAN)] = 0,
) -> JobPage:
    """The tenant's jobs, newest first, optionally by kind and state."""
    jobs, more = await tenant_jobs(
        ctx.services.queue,
        principal.tenant_id,
        kind=kind,
        state=JobState(state.value) if state else None,
        wanted=offset + limit,
    )
    page = jobs[offset:]
    return JobPage(
        jobs=[JobOut.of(job) for job in page], next_offset=offset + limit if more else None
    )


@router.post("/{job_id}/cancel", response_model=CancelOut)
async def cancel(job_id: JobId, principal: Tenant, ctx: Context) -> CancelOut:
    """Cancel a job: a waiting one is removed, a running one is interrupted (409 if done)."""
    state = await ctx.services.queue.cancel(job_id, tenant_id=principal.tenant_id)
    return CancelOut(id=job_id, state=state)


@router.post("/{job_id}/retry", response_model=JobOut)
async def retry(job_id: JobId, principal: Tenant, ctx: Context) -> JobOut:
    """Run a failed job again with fresh attempts (409 unless it failed)."""
    return JobOut.of(await ctx.services.queue.retry(job_id, tenant_id=principal.tenant_id))
