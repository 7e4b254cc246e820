"""Schedules and fair-share usage on the PostgreSQL queue."""

from __future__ import annotations

import asyncio

import pytest

from settler_jobs.config import Settings
from settler_jobs.domain import Tier
from settler_jobs.errors import InvalidJob
from settler_jobs.kinds import Registry
from settler_jobs.queue.pg import PgJobQueue
from settler_jobs.queue.pg.open import queue_pool
from settler_jobs.records import Submission
from tests.integration.queue.pg.test_reads import _finish


async def test_upsert_is_idempotent_and_one_job_per_slot_across_processes(
    pg_queue: PgJobQueue, pg_settings: Settings, pg_registry: Registry
) -> None:
    # A second queue object stands for another process with its own connections.
    other = PgJobQueue(queue_pool(pg_settings), pg_registry, pg_settings)
    try:
        first, second = await asyncio.gather(
            pg_queue.upsert_schedule("alpha", "nightly", data={"x": 1}, pattern="0 3 * * *"),
            other.upsert_schedule("alpha", "nightly", data={"x": 1}, pattern="0 3 * * *"),
        )
        again = await pg_queue.upsert_schedule(
            "alpha", "nightly", data={"x": 1}, pattern="0 3 * * *"
        )
    finally:
        await other.close()
    assert first.next_run_ms == second.next_run_ms == again.next_run_ms
    assert again.registered_at_ms is not None
    assert (again.kind, again.pattern, again.tz, again.data) == (
        "alpha",
        "0 3 * * *",
        "UTC",
        {"x": 1},
    )
    rows = await pg_queue.pool.fetch(
        "SELECT id, state::text AS state FROM job WHERE scheduler_id = 'nightly'"
    )
    assert len(rows) == 1 and rows[0]["state"] == "delayed"

    every = await pg_queue.upsert_schedule("beta", "tick", data={}, every_ms=60_000)
    listed = await pg_queue.list_schedules()
    assert [(s.kind, s.id) for s in listed] == [("alpha", "nightly"), ("beta", "tick")]
    assert every.every_ms == 60_000

    assert await pg_queue.remove_schedule("alpha", "nightly")
    assert not await pg_queue.remove_schedule("alpha", "nightly")
    assert [s.id for s in await pg_queue.list_schedules()] == ["tick"]
    assert await pg_queue.pool.fetch("SELECT 1 FROM job WHERE scheduler_id = 'nightly'") == []


async def test_bad_schedules_are_refused(pg_queue: PgJobQueue) -> None:
    with pytest.raises(InvalidJob):
        await pg_queue.upsert_schedule("alpha", "x", data={}, every_ms=10)
    with pytest.raises(InvalidJob):
        await pg_queue.upsert_schedule("alpha", "Bad Id", data={}, every_ms=1000)
    with pytest.raises(InvalidJob):
        await pg_queue.upsert_schedule("alpha", "cron", data={}, pattern="not a cron")


async def test_usage_counts_a_tenants_own_jobs_only(pg_queue: PgJobQueue) -> None:
    subs = await pg_queue.submit_bulk(
        [Submission("alpha", {}, "acme", Tier.GROWTH) for _ in range(3)]
        + [Submission("alpha", {}, "globex", Tier.GROWTH)]
    )
    await pg_queue.pool.fetch(
        "UPDATE job SET state = 'active', processed_at_ms = 1 WHERE id = %s", (subs[0].job.id,)
    )
    await pg_queue.pool.fetch(
        "INSERT INTO settler_fair_counter (queue, kind, field, n) VALUES"
        " ('alpha', 'cap_hit', 't:acme', 2), ('alpha', 'cap_hit', 'growth', 2),"
        " ('', 'refusal', 'growth', 5)"
    )
    assert (await pg_queue.fair_usage("acme"))["alpha"] == 2
    usage = await pg_queue.tenant_usage("acme", Tier.GROWTH)
    alpha = next(lane for lane in usage.lanes if lane.queue == "alpha")
    assert (alpha.waiting, alpha.active, alpha.parked, alpha.cap_hits) == (2, 1, 0, 2)
    assert usage.tier == "growth"
    totals = await pg_queue.tier_totals()
    assert totals["growth"] == {"cap_hits": 2, "quota_refusals": 5, "active": 1}
    await _finish(pg_queue, subs[3].job.id)
    assert (await pg_queue.fair_usage("globex"))["alpha"] == 0
