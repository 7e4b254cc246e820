"""Copy dead jobs from BullMQ's failed sets into the dead-letter table.

Two paths feed it: the worker reports each job it fails for good at once, and a sweep
of every lane's failed set catches the rest (jobs failed by the stalled-job check or
by another process, BullMQ for Node included). Recording is idempotent.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from settler_jobs.dlq import error_log
from settler_jobs.dlq import store as dlq
from settler_jobs.domain import DlqStatus, Tier
from settler_jobs.errors import InvalidState, NotFound
from settler_jobs.queue import AnyJobQueue
from settler_jobs.records import JobRecord, Submission, Submitted
from settler_jobs.redaction import mask_string

log = logging.getLogger(__name__)
CANCELLED_PREFIX = "JobCancelled"


def _utc(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def failure_record(job: JobRecord) -> dlq.FailureRecord:
    """The dead-letter view of a failed job."""
    reason = job.failure_reason or "unknown failure"
    error_type, _, message = reason.partition(": ")
    if not message:
        error_type, message = "Error", reason
    failed_at = job.finished_at_ms or job.processed_at_ms or job.created_at_ms
    return dlq.FailureRecord(
        queue=job.queue,
        kind=job.kind,
        job_id=job.id,
        tenant_id=job.tenant_id,
        tier=job.tier,
        payload=job.payload,
        error_type=error_type[:128],
        # Exception texts can quote URLs or tokens: mask what looks like a credential.
        error_message=mask_string(message),
        stacktrace=mask_string("\n".join(job.stacktrace)),
        attempts=job.attempts_made,
        failed_at_ms=failed_at,
        first_failed_at=_utc(job.first_failed_at_ms or failed_at),
        last_failed_at=_utc(failed_at),
    )


async def record(sessions: async_sessionmaker[AsyncSession], job: JobRecord) -> bool:
    """Store one dead job; True if it was new. Cancelled jobs are not dead letters."""
    if (job.failure_reason or "").startswith(CANCELLED_PREFIX):
        return False
    async with sessions() as session, session.begin():
        entry = await dlq.record_failure(session, failure_record(job), datetime.now(UTC))
    if entry is not None:
        log.warning("job.dead", extra={"job_id": job.id, "queue": job.queue, "kind": job.kind})
        await _log_error(sessions, entry)
    return entry is not None


async def _log_error(sessions: async_sessionmaker[AsyncSession], entry: dlq.DlqEntry) -> None:
    """One error-log row per new dead letter; its failure never reaches the worker."""
    try:
        async with sessions() as session, session.begin():
            await error_log.record_job_failure(
                session,
                queue=entry.queue,
                kind=entry.kind,
                job_id=entry.job_id,
                tenant_id=entry.tenant_id,
                error_type=entry.error_type,
                error_message=entry.error_message,
                attempts=entry.attempts,
                now=entry.last_failed_at,
            )
    except Exception:
        log.exception("error_log.record_failed", extra={"job_id": entry.job_id})


async def sweep(queue: AnyJobQueue, sessions: async_sessionmaker[AsyncSession]) -> int:
    """Copy every lane's failed jobs since the last sweep; returns how many were new."""
    new = 0
    for lane in queue.registry.queues():
        cursor = await queue.dlq_cursor(lane)
        failed = await queue.failed_since(lane, cursor)
        for job in failed:
            new += await record(sessions, job)
        if failed:
            newest = max(j.finished_at_ms or cursor for j in failed)
            # A full page of one millisecond would never advance: step past it.
            await queue.set_dlq_cursor(lane, newest + 1 if newest == cursor else newest)
    return new


async def retry_entry(
    queue: AnyJobQueue,
    sessions: async_sessionmaker[AsyncSession],
    entry_id: str,
    *,
    actor: str,
    data: dict[str, Any] | None = None,
    tenant_id: str | None = None,
) -> tuple[dlq.DlqEntry, Submitted]:
    """Re-enqueue a dead job as a new job (optionally with edited data) and link the two.

    The stored payload is redacted, so without `data` the original job must still be
    in Redis. Retrying the same entry twice yields the same new job.
    """
    async with sessions() as session:
        entry = await dlq.get_entry(session, entry_id, tenant_id=tenant_id)
    if entry.status is not DlqStatus.OPEN:
        raise InvalidState(f"dead letter {entry_id} is {entry.status.value}; only open ones retry")
    if data is None:
        try:
            original = await queue.get(entry.job_id)
        except NotFound:
            raise InvalidState(
                "the original job is no longer in Redis and the stored payload is redacted; "
                "pass the data to use"
            ) from None
        data = original.payload
    kind = queue.registry.get(entry.kind)
    if kind.retry_dead is not None:
        submitted = await kind.retry_dead(data, entry.tenant_id or "", sessions, queue)
    else:
        submitted = await queue.submit(
            Submission(
                kind=entry.kind,
                data=data,
                tenant_id=entry.tenant_id or "",
                tier=Tier.parse(entry.tier or "free"),
                idempotency_key=f"dlq-retry-{entry.id}",
            )
        )
    async with sessions() as session, session.begin():
        entry = await dlq.mark_retried(
            session,
            entry_id,
            new_job_id=submitted.job.id,
            actor=actor,
            now=datetime.now(UTC),
            tenant_id=tenant_id,
        )
    return entry, submitted
