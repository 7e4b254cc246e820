"""The PostgreSQL worker lane end to end through WorkerRuntime."""

from __future__ import annotations

import asyncio
import functools
import itertools
import operator
import time
from typing import Any, TypeVar

import pytest

from settler_jobs import envelope
from settler_jobs.config import Settings
from settler_jobs.context import JobContext
from settler_jobs.dlq import store as dlq_store
from settler_jobs.domain import JobState, PriorityClass, RetryPolicy, Tier
from settler_jobs.errors import RetryLater
from settler_jobs.kinds import JobKind, Registry
from settler_jobs.queue.pg import PgLaneWorker
from settler_jobs.records import Submission
from tests.helpers import eventually
from tests.integration.queue_pg.conftest import PgSystem, pg_system

pytestmark = pytest.mark.postgres
T = TypeVar("T")


async def test_jobs_run_end_to_end_and_complete(pg_settings: Settings) -> None:
    seen: list[int] = []

    async def handler(payload: dict[str, int], ctx: JobContext) -> int:
        seen.append(payload["n"])
        await ctx.report_progress({"step": payload["n"]})
        return payload["n"] * 2

    registry = Registry([JobKind("double", handler, concurrency=4)])
    async with pg_system(pg_settings, registry) as s:
        subs = [Submission("double", {"n": i}, "acme", Tier.STARTER) for i in range(50)]
        done = await s.queue.submit_bulk(subs)
        assert all(d.created for d in done)

        async def count() -> int:
            return len(seen)

        await eventually(count, lambda n: n == 50)
        record = await eventually(
            lambda: s.queue.get(done[7].job.id), lambda r: r.state is JobState.COMPLETED
        )
        assert record.result == 14 and record.progress == {"step": 7}
    assert sorted(seen) == list(range(50))


async def _value(v: T) -> T:
    return v


async def _state(s: PgSystem, job_id: str) -> tuple[str, int, str | None]:
    rows = await s.fetch(
        "SELECT state::text, attempts_made, failed_reason FROM job WHERE id = %s", job_id
    )
    if not rows:
        return ("gone", 0, None)
    state, attempts, reason = rows[0]
    return str(state), int(attempts), reason


async def test_retries_wait_their_delay_then_complete(pg_settings: Settings) -> None:
    starts: list[float] = []

    async def flaky(payload: dict[str, int], ctx: JobContext) -> str:
        starts.append(time.monotonic())
        if ctx.attempt < 3:
            raise RetryLater(0.3, "not yet")
        return "done"

    registry = Registry([JobKind("flaky", flaky, retry=RetryPolicy(attempts=3))])
    async with pg_system(pg_settings, registry) as s:
        job = (await s.queue.submit(Submission("flaky", {}, "t1", Tier.FREE))).job
        record = await eventually(
            lambda: s.queue.get(job.id), lambda r: r.state is JobState.COMPLETED
        )
    assert record.result == "done" and record.attempts_made == 3
    assert len(starts) == 3
    assert all(b - a >= 0.29 for a, b in itertools.pairwise(starts))


async def test_exhausted_attempts_fail_for_good_into_the_dlq(pg_settings: Settings) -> None:
    async def broken(payload: dict[str, int], ctx: JobContext) -> None:
        raise ValueError(f"boom {ctx.attempt}")

    policy = RetryPolicy(attempts=2, base_delay_s=0.05, max_delay_s=0.1)
    registry = Registry([JobKind("broken", broken, retry=policy)])
    async with pg_system(pg_settings, registry) as s:
        job = (await s.queue.submit(Submission("broken", {"x": 1}, "t1", Tier.FREE))).job
        state = await eventually(lambda: _state(s, job.id), lambda r: r[0] == "failed")
        assert state[1] == 2 and "boom 2" in (state[2] or "")

        async def dlq() -> list[dlq_store.DlqEntry]:
            async with s.sessions() as session:
                return await dlq_store.list_entries(session)

        entries = await eventually(dlq, lambda e: len(e) == 1)
    entry = entries[0]
    assert (entry.job_id, entry.attempts, entry.payload) == (job.id, 2, {"x": 1})
    assert entry.first_failed_at < entry.last_failed_at


async def test_an_attempt_past_its_timeout_is_cut_short(pg_settings: Settings) -> None:
    async def slow(payload: dict[str, int], ctx: JobContext) -> None:
        await asyncio.Event().wait()

    registry = Registry([JobKind("slow", slow, retry=RetryPolicy(attempts=1))])
    async with pg_system(pg_settings, registry) as s:
        started = time.monotonic()
        sub = Submission("slow", {}, "t1", Tier.FREE, timeout_s=0.3)
        job = (await s.queue.submit(sub)).job
        state = await eventually(lambda: _state(s, job.id), lambda r: r[0] == "failed")
    assert "timed out after 0.3s" in (state[2] or "")
    assert time.monotonic() - started < 5


async def test_a_cancel_notification_stops_the_running_job(pg_settings: Settings) -> None:
    running = asyncio.Event()

    async def long(payload: dict[str, int], ctx: JobContext) -> None:
        running.set()
        await asyncio.Event().wait()

    registry = Registry([JobKind("long", long, timeout_s=60)])
    async with pg_system(pg_settings, registry) as s:
        job = (await s.queue.submit(Submission("long", {}, "t1", Tier.FREE))).job
        await asyncio.wait_for(running.wait(), 10)
        await s.fetch("SELECT pg_notify('settler_cancel', %s)", f"long\t{job.id}")
        state = await eventually(lambda: _state(s, job.id), lambda r: r[0] == "failed")
    assert "cancelled" in (state[2] or "") and state[1] == 1  # no retry after a cancel


async def test_a_capped_tenant_runs_one_at_a_time_while_others_wait(
    pg_settings: Settings,
) -> None:
    capped = pg_settings.model_copy(update={"tenant_concurrency_caps": {"free": 1}})
    running: dict[str, int] = {"free": 0, "pro": 0}
    # (free jobs running, starter jobs not started yet). Caps are work-conserving: once
    # every other job has started, the capped tenant may use the free slots, so the cap is
    # checked only while some starter job has not started.
    seen_free: list[tuple[int, int]] = []
    left = {"pro": 6}

    async def work(payload: dict[str, str], ctx: JobContext) -> None:
        who = payload["who"]
        running[who] += 1
        if who == "pro":
            left["pro"] -= 1
        else:
            seen_free.append((running["free"], left["pro"]))
        await asyncio.sleep(0.05)  # the job's work, not a synchronisation
        running[who] -= 1

    registry = Registry([JobKind("capped", work, concurrency=3)])
    async with pg_system(capped, registry, start=False) as s:
        subs = [Submission("capped", {"who": "free"}, "tfree", Tier.FREE)] * 6
        subs += [Submission("capped", {"who": "pro"}, "tpro", Tier.STARTER)] * 6
        await s.queue.submit_bulk(subs)
        await s.runtime.start()
        await eventually(lambda: _value(len(seen_free)), lambda n: n == 6)
        hits = await s.fetch("SELECT key, n FROM settler_fair_counter WHERE queue = 'capped'")
    while_others_wait = [n for n, pro_left in seen_free if pro_left > 0]
    assert while_others_wait and max(while_others_wait) == 1
    assert dict(hits).get("free", 0) >= 1


async def test_a_delayed_job_starts_when_due(pg_settings: Settings) -> None:
    started: list[float] = []

    async def mark(payload: dict[str, int], ctx: JobContext) -> None:
        started.append(time.monotonic())

    registry = Registry([JobKind("later", mark)])
    async with pg_system(pg_settings, registry) as s:
        submitted = time.monotonic()
        await s.queue.submit(Submission("later", {}, "t1", Tier.FREE, delay_s=0.8))
        await eventually(lambda: _value(len(started)), lambda n: n == 1)
    assert 0.75 <= started[0] - submitted < 3


async def test_lanes_recover_when_their_connections_are_terminated(
    pg_settings: Settings,
) -> None:
    seen: list[int] = []

    async def work(payload: dict[str, int], ctx: JobContext) -> None:
        seen.append(payload["n"])
        await asyncio.sleep(0.002)  # the job's work

    registry = Registry([JobKind("sturdy", work, concurrency=4)])
    async with pg_system(pg_settings, registry) as s:
        await s.queue.submit_bulk(
            [Submission("sturdy", {"n": i}, "t1", Tier.FREE) for i in range(400)]
        )
        await eventually(lambda: _value(len(seen)), lambda n: n >= 50)
        killed = await _terminate_others(s)
        assert killed >= 2  # the lanes' pooled connections and the LISTEN connection
        await eventually(lambda: _value(len(set(seen))), lambda n: n == 400, timeout_s=30)
        # Drained now: a new job must still wake the lane (the LISTEN connection is back).
        await _terminate_others(s)
        await s.queue.submit(Submission("sturdy", {"n": 400}, "t1", Tier.FREE))
        await eventually(lambda: _value(400 in seen), bool, timeout_s=10)
        failed = await s.fetch("SELECT count(*) FROM job WHERE state = 'failed'")
    assert failed == [(0,)]


async def test_a_failed_read_of_the_next_delay_does_not_stop_the_lane(
    pg_settings: Settings,
) -> None:
    seen: list[int] = []

    async def work(payload: dict[str, int], ctx: JobContext) -> None:
        seen.append(payload["n"])

    registry = Registry([JobKind("horizon", work)])
    async with pg_system(pg_settings, registry) as s:
        await _define_next_delay(s, "plpgsql", "BEGIN RAISE EXCEPTION 'horizon unavailable'; END")
        # Each drained claim now reads a failing horizon; the lane must go on regardless.
        for n in range(1, 4):
            await s.queue.submit(Submission("horizon", {"n": n}, "t1", Tier.FREE))
            await eventually(lambda: _value(len(seen)), functools.partial(operator.eq, n))
        await _define_next_delay(  # bullmq's own body again
            s,
            "sql",
            "SELECT MIN(process_at_ms) FROM job WHERE queue = p_queue AND state = 'delayed'",
        )
        await s.queue.submit(Submission("horizon", {"n": 0}, "t1", Tier.FREE, delay_s=0.3))
        await eventually(lambda: _value(0 in seen), bool)


async def _define_next_delay(s: PgSystem, language: str, body: str) -> None:
    """Replace bullmq's `next_delay` in the test's queue schema."""
    statement = (
        "CREATE OR REPLACE FUNCTION next_delay(p_queue text) RETURNS bigint"
        f" LANGUAGE {language} AS $$ {body} $$"
    )
    async with s.queue.pool.connection() as conn:
        await conn.execute(statement.encode())


async def _terminate_others(s: PgSystem) -> int:
    rows = await s.fetch(
        "SELECT pid, pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE datname = current_database() AND pid <> pg_backend_pid() "
        "AND application_name = 'settler'"
    )
    pids = [pid for pid, _ in rows]

    async def alive() -> list[tuple[Any, ...]]:
        return await s.fetch("SELECT pid FROM pg_stat_activity WHERE pid = ANY(%s)", pids)

    await eventually(alive, lambda r: r == [])  # the signal is asynchronous
    return len(pids)


async def test_the_postgres_runtime_opens_no_redis_connection(
    pg_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_redis(*args: object, **kwargs: object) -> None:
        raise AssertionError("a Redis client was made on the PostgreSQL backend")

    monkeypatch.setattr("settler_jobs.worker.runtime.redis_client", no_redis)
    seen: list[int] = []

    async def handler(payload: dict[str, int], ctx: JobContext) -> None:
        seen.append(payload["n"])

    registry = Registry([JobKind("solo", handler)])
    async with pg_system(pg_settings, registry) as s:
        await s.queue.submit(Submission("solo", {"n": 1}, "t1", Tier.FREE))
        await eventually(lambda: _value(seen), lambda v: v == [1])


async def test_stop_lets_held_jobs_finish_and_claims_no_more(pg_settings: Settings) -> None:
    release = asyncio.Event()
    started: list[int] = []

    async def work(payload: dict[str, int], ctx: JobContext) -> None:
        started.append(payload["n"])
        await release.wait()

    registry = Registry([JobKind("graceful", work, concurrency=3, timeout_s=60)])
    async with pg_system(pg_settings, registry) as s:
        await s.queue.submit_bulk(
            [Submission("graceful", {"n": i}, "t1", Tier.FREE) for i in range(10)]
        )
        await eventually(lambda: _value(len(started)), lambda n: n == 3)
        lanes = [lane for lane in s.runtime._lanes if isinstance(lane, PgLaneWorker)]
        stopping = asyncio.ensure_future(s.runtime.stop(10))
        # The jobs are released only once every lane has stopped claiming.
        await eventually(lambda: _value(all(lane.loop.closing for lane in lanes)), bool)
        release.set()
        assert await stopping is True
        states = dict(await s.fetch("SELECT state::text, count(*) FROM job GROUP BY 1"))
    assert states == {"completed": 3, "waiting": 7}
    assert len(started) == 3


async def test_a_job_scheduler_keeps_producing_runs(pg_settings: Settings) -> None:
    runs: list[str] = []

    async def tick(payload: dict[str, str], ctx: JobContext) -> None:
        runs.append(ctx.job_id)

    registry = Registry([JobKind("tick", tick)])
    async with pg_system(pg_settings, registry) as s:
        data = envelope.build(
            {"label": "x"},
            tenant_id="system",
            tier=Tier.ENTERPRISE,
            job_id="sched",
            priority=PriorityClass.NORMAL,
            timeout_s=None,
        )
        queue = s.queue._queue("tick")
        await queue.upsertJobScheduler("every-300", {"every": 300}, "tick", data, {"attempts": 1})
        # Each run materialises the next one when it is claimed (as bullmq's worker does).
        await eventually(lambda: _value(len(set(runs))), lambda n: n >= 3, timeout_s=15)
