"""Keeping delivery rows and queue jobs together: the outbox and the retry sweep.

On the PostgreSQL queue backend rows and jobs commit in one transaction (`enqueue_in`),
so nothing waits in the outbox. Otherwise rows are committed first; jobs follow
(`enqueue`). A delivery whose job was never added (Redis was down, the process died in
between) stays in the outbox until `flush_outbox` adds it. The sweep catches the rest
(both backends): a delivery that is due, or stuck delivering, while no live job exists
for it gets a new generation (exactly one sweeper wins) and goes back to the outbox.
Job ids derive from the delivery id and generation, so adding the same generation twice
yields one job.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Final

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from settler_jobs import errors
from settler_jobs.domain import JobState, Tier, idempotent_job_id
from settler_jobs.ports import Submitter, TransactionalSubmitter
from settler_jobs.records import Submission, Submitted
from settler_jobs.storage.db import sql_runner
from settler_jobs.webhooks import store
from settler_jobs.webhooks.values import Delivery

log = logging.getLogger(__name__)

WEBHOOK_KIND: Final = "webhook-delivery"
_LIVE: Final = frozenset({JobState.WAITING, JobState.DELAYED, JobState.ACTIVE})
_DUE_GRACE: Final = timedelta(seconds=60)
"""A due retry's job may still be promoting; only later is a missing job a lost one."""

Sessions = async_sessionmaker[AsyncSession]


def submission(delivery: Delivery) -> Submission:
    """The queue job of the delivery's current generation: it carries only the id."""
    return Submission(
        kind=WEBHOOK_KIND,
        data={"deliveryId": delivery.id, "generation": delivery.generation},
        tenant_id=delivery.tenant_id,
        tier=Tier.parse(delivery.tier),
        idempotency_key=delivery.job_id,
    )


def queue_job_id(delivery: Delivery) -> str:
    """The id the queue gives the job of the delivery's current generation."""
    return idempotent_job_id(delivery.tenant_id, WEBHOOK_KIND, delivery.job_id)


async def enqueue(
    sessions: Sessions, submitter: Submitter, deliveries: Sequence[Delivery]
) -> list[Submitted]:
    """Add the deliveries' jobs, then take them out of the outbox.

    Raises QueueUnavailable if Redis is down; the rows then stay in the outbox.
    """
    if not deliveries:
        return []
    submitted = await submitter.submit_bulk([submission(d) for d in deliveries])
    async with sessions() as session, session.begin():
        for delivery in deliveries:
            await store.mark_enqueued(session, delivery.id, delivery.generation)
    return submitted


async def enqueue_in(
    session: AsyncSession, submitter: TransactionalSubmitter, deliveries: Sequence[Delivery]
) -> list[Submitted]:
    """Add the deliveries' jobs inside `session`'s open transaction and mark them
    enqueued there too: rows and jobs commit, or roll back, together."""
    if not deliveries:
        return []
    submitted = await submitter.submit_in(sql_runner(session), [submission(d) for d in deliveries])
    for delivery in deliveries:
        await store.mark_enqueued(session, delivery.id, delivery.generation)
    return submitted


async def flush_outbox(sessions: Sessions, submitter: Submitter, *, limit: int = 500) -> int:
    """Enqueue up to `limit` deliveries that have no job yet; returns how many."""
    async with sessions() as session:
        waiting = await store.unenqueued(session, limit=limit)
    added = len(await enqueue(sessions, submitter, waiting))
    if added:
        log.info("webhook.outbox_flushed", extra={"deliveries": added})
    return added


async def sweep(
    sessions: Sessions,
    submitter: Submitter,
    *,
    now: datetime,
    stale_after: timedelta,
    limit: int = 500,
) -> int:
    """Re-enqueue due (or stuck) deliveries that have no live job; returns how many.

    `stale_after`: how long a delivery may stay `delivering` before its worker is
    presumed dead. Each lost delivery moves to a new generation at most once.
    """
    async with sessions() as session:
        candidates = await store.due_without_job(
            session, now=now - _DUE_GRACE, stale_before=now - stale_after, limit=limit
        )
    moved = 0
    for delivery in candidates:
        if await _has_live_job(submitter, delivery):
            continue
        async with sessions() as session, session.begin():
            requeued = await store.requeue(
                session, delivery.id, generation=delivery.generation, now=now
            )
        if requeued is not None:
            moved += 1
            log.warning(
                "webhook.requeued",
                extra={"delivery_id": delivery.id, "generation": requeued.generation},
            )
    await flush_outbox(sessions, submitter, limit=limit)
    return moved


async def _has_live_job(submitter: Submitter, delivery: Delivery) -> bool:
    try:
        job = await submitter.get(queue_job_id(delivery), tenant_id=delivery.tenant_id)
    except errors.NotFound:
        return False
    return job.state in _LIVE
