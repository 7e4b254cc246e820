"""Control on the PostgreSQL queue: cancel, retry, promote, pause, cancel requests, DLQ
cursor and retention, with tenant isolation."""

from __future__ import annotations

import asyncio
import time

import pytest

from settler_jobs.domain import JobState, Tier
from settler_jobs.errors import InvalidState, NotFound
from settler_jobs.queue.pg import PgJobQueue
from settler_jobs.records import Submission
from tests.helpers import eventually
from tests.integration.queue.pg.sql import sql
from tests.integration.queue.pg.test_reads import _finish


def _sub(tenant: str = "acme", **extra: object) -> Submission:
    return Submission("alpha", {"n": 1}, tenant, Tier.STARTER, **extra)  # type: ignore[arg-type]


async def test_cancel_removes_a_waiting_job_and_refuses_other_tenants(
    pg_queue: PgJobQueue,
) -> None:
    [sub] = await pg_queue.submit_bulk([_sub()])
    with pytest.raises(NotFound):
        await pg_queue.cancel(sub.job.id, tenant_id="globex")
    assert await pg_queue.cancel(sub.job.id, tenant_id="acme") is JobState.CANCELLED
    with pytest.raises(NotFound):
        await pg_queue.get(sub.job.id)


async def test_cancel_of_an_active_job_notifies_listeners(pg_queue: PgJobQueue) -> None:
    [sub] = await pg_queue.submit_bulk([_sub()])
    await sql(
        pg_queue,
        "UPDATE job SET state = 'active', processed_at_ms = 1, lock_token = 't',"
        " locked_until_ms = %s WHERE id = %s",
        (int(time.time() * 1000) + 60_000, sub.job.id),
    )
    requests = pg_queue.cancellation_requests()
    first = asyncio.ensure_future(anext(requests))
    # The listener is subscribed once its LISTEN shows in pg_stat_activity.
    await eventually(
        lambda: sql(
            pg_queue,
            "SELECT 1 FROM pg_stat_activity WHERE query = 'LISTEN settler_cancel'"
            " AND state = 'idle' AND datname = current_database()",
        ),
        bool,
    )
    assert await pg_queue.cancel(sub.job.id) is JobState.ACTIVE
    assert await asyncio.wait_for(first, 5) == ("alpha", sub.job.id)
    await requests.aclose()  # type: ignore[attr-defined]


async def test_retry_promote_and_state_errors(pg_queue: PgJobQueue) -> None:
    failed, delayed = await pg_queue.submit_bulk([_sub(), _sub(delay_s=600)])
    await _finish(pg_queue, failed.job.id, failed=True)
    with pytest.raises(InvalidState):
        await pg_queue.promote(failed.job.id)
    with pytest.raises(NotFound):
        await pg_queue.retry(failed.job.id, tenant_id="globex")
    again = await pg_queue.retry(failed.job.id)
    assert (again.state, again.attempts_made) == (JobState.WAITING, 0)
    with pytest.raises(InvalidState):
        await pg_queue.retry(delayed.job.id)
    promoted = await pg_queue.promote(delayed.job.id, tenant_id="acme")
    assert promoted.state is JobState.WAITING and promoted.delay_ms == 0
    with pytest.raises(InvalidState):
        await pg_queue.promote(promoted.id)


async def test_pause_and_resume_flag_both_lanes(pg_queue: PgJobQueue) -> None:
    await pg_queue.pause("alpha")
    rows = await sql(pg_queue, "SELECT queue FROM meta WHERE field = 'paused' ORDER BY 1")
    assert [r["queue"] for r in rows] == ["alpha", "alpha-express"]
    await pg_queue.resume("alpha")
    assert await sql(pg_queue, "SELECT queue FROM meta WHERE field = 'paused'") == []


async def test_dlq_cursor_and_cleaning_finished_jobs(pg_queue: PgJobQueue) -> None:
    assert await pg_queue.dlq_cursor("alpha") == 0
    await pg_queue.set_dlq_cursor("alpha", 1234)
    await pg_queue.set_dlq_cursor("alpha", 5678)
    assert await pg_queue.dlq_cursor("alpha") == 5678
    assert await pg_queue.dlq_cursor("beta") == 0

    subs = await pg_queue.submit_bulk([_sub() for _ in range(3)])
    for s in subs:
        await _finish(pg_queue, s.job.id)
    await sql(pg_queue, "UPDATE job SET finished_at_ms = finished_at_ms - 3600000")
    assert await pg_queue.finished_before("alpha", JobState.COMPLETED, 60) == 3
    assert await pg_queue.finished_before("alpha", JobState.FAILED, 60) == 0
    assert await pg_queue.clean_finished("alpha", JobState.COMPLETED, 60, 2) == 2
    assert await pg_queue.finished_before("alpha", JobState.COMPLETED, 60) == 1
    with pytest.raises(ValueError):
        await pg_queue.clean_finished("alpha", JobState.WAITING, 60, 2)
