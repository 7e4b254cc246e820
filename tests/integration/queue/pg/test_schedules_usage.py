"""Schedules and fair-share usage on the PostgreSQL queue."""

from __future__ import annotations

import asyncio

import pytest

from settler_jobs.config import Settings
from settler_jobs.domain import JobState, PriorityClass, Tier, fair_step
from settler_jobs.errors import InvalidJob
from settler_jobs.kinds import Registry
from settler_jobs.queue.fair import REFUSALS_KEY
from settler_jobs.queue.pg import PgJobQueue
from settler_jobs.queue.pg.open import queue_pool
from settler_jobs.records import Submission
from tests.integration.queue.pg.sql import sql


async def test_upsert_is_idempotent_and_one_job_per_slot_across_processes(
    pg_queue: PgJobQueue, pg_settings: Settings, pg_registry: Registry
) -> None:
    # A second queue object stands for another process with its own connections.
    other = PgJobQueue(pg_registry, pg_settings, queue_pool(pg_settings))
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
    rows = await sql(
        pg_queue, "SELECT id, state::text AS state FROM job WHERE scheduler_id = 'nightly'"
    )
    assert len(rows) == 1 and rows[0]["state"] == "delayed"

    every = await pg_queue.upsert_schedule("beta", "tick", data={}, every_ms=60_000)
    listed = await pg_queue.list_schedules()
    assert [(s.kind, s.id) for s in listed] == [("alpha", "nightly"), ("beta", "tick")]
    assert every.every_ms == 60_000

    assert await pg_queue.remove_schedule("alpha", "nightly")
    assert not await pg_queue.remove_schedule("alpha", "nightly")
    assert [s.id for s in await pg_queue.list_schedules()] == ["tick"]
    assert await sql(pg_queue, "SELECT 1 FROM job WHERE scheduler_id = 'nightly'") == []


async def test_bad_schedules_are_refused(pg_queue: PgJobQueue) -> None:
    with pytest.raises(InvalidJob):
        await pg_queue.upsert_schedule("alpha", "x", data={}, every_ms=10)
    with pytest.raises(InvalidJob):
        await pg_queue.upsert_schedule("alpha", "Bad Id", data={}, every_ms=1000)
    with pytest.raises(InvalidJob):
        await pg_queue.upsert_schedule("alpha", "cron", data={}, pattern="not a cron")


async def test_usage_counts_as_the_quota_does_and_only_the_tenants_jobs(
    pg_queue: PgJobQueue,
) -> None:
    step = fair_step(PriorityClass.NORMAL, Tier.GROWTH)
    running = await pg_queue.submit_bulk(
        [Submission("alpha", {}, "acme", Tier.GROWTH, delay_s=60) for _ in range(2)]
        + [Submission("alpha", {}, "globex", Tier.GROWTH, delay_s=60)]
    )
    await sql(
        pg_queue,
        "UPDATE job SET state = 'active', processed_at_ms = 1 WHERE id = ANY(%s)",
        ([running[0].job.id, running[2].job.id],),
    )
    # Then the fair state, set outright: the lane's clock at 100 with nothing waiting,
    # acme's normal flow three steps ahead of it, its high flow behind it, globex one
    # step ahead.
    await sql(
        pg_queue,
        "INSERT INTO settler_fair_lane (queue, v, fmaxw) VALUES ('alpha', 100, 100)"
        " ON CONFLICT (queue) DO UPDATE SET v = 100, fmaxw = 100",
    )
    await sql(
        pg_queue,
        "INSERT INTO settler_fair_flow (queue, tenant, class, f, w) VALUES"
        " ('alpha', 'acme', 'NORMAL', %s, %s), ('alpha', 'acme', 'HIGH', 90, 10),"
        " ('alpha', 'globex', 'NORMAL', %s, %s)"
        " ON CONFLICT (queue, tenant, class) DO UPDATE SET f = EXCLUDED.f, w = EXCLUDED.w",
        (100 + 3 * step, step, 100 + step, step),
    )
    await sql(
        pg_queue,
        "INSERT INTO settler_fair_counter (queue, key, n) VALUES ('alpha', 't:acme', 2),"
        " ('alpha', 'growth', 2), ('beta', 'growth', 1), (%s, 'growth', 5)",
        (REFUSALS_KEY,),
    )
    assert await pg_queue.fair_usage("acme") == {
        "alpha": 3,
        "alpha-express": 0,
        "beta": 0,
        "beta-express": 0,
    }
    usage = await pg_queue.tenant_usage("acme", Tier.GROWTH)
    alpha = next(lane for lane in usage.lanes if lane.queue == "alpha")
    assert (alpha.waiting, alpha.active, alpha.parked, alpha.cap_hits) == (3, 1, 0, 2)
    assert (usage.tier, usage.quota, usage.cap) == (
        "growth",
        pg_queue.settings.tenant_backlog_quotas.get("growth", 0),
        pg_queue.settings.tenant_concurrency_caps.get("growth", 0),
    )
    totals = await pg_queue.tier_totals()
    assert totals["growth"] == {"cap_hits": 3, "quota_refusals": 5, "active": 2}

    # Cancelling acme's waiting (delayed) job gives its step back to the flow.
    assert await pg_queue.cancel(running[1].job.id, tenant_id="acme") is JobState.CANCELLED
    assert (await pg_queue.fair_usage("acme"))["alpha"] == 2
    assert (await pg_queue.fair_usage("globex"))["alpha"] == 1
