"""Worker processes under real signals: kill -9, graceful SIGTERM, and a forced stop.

Each test runs `slow_worker.py` (the production `runner.serve` with one test-only kind
whose jobs take as long as the test says) as separate processes on the test's Redis
prefix or PostgreSQL queue schema, submits jobs from this process and watches them
through the job queue.
Locks last 2 s and the stalled check runs every second, so a crashed worker's jobs
come back within a few seconds.
"""

from __future__ import annotations

import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import psycopg
import pytest
import redis.asyncio

from settler_jobs.config import Settings
from settler_jobs.domain import JobState, Tier
from settler_jobs.errors import NotFound
from settler_jobs.queue import AnyJobQueue
from settler_jobs.records import JobRecord, Submission
from tests.e2e.fleet import RECOVERY_S, Worker, Workers
from tests.e2e.slow_worker import KIND
from tests.helpers import eventually

StartedCounts = Callable[[str], Awaitable[tuple[int, int]]]


@pytest.fixture
async def started_counts(settings: Settings) -> AsyncIterator[StartedCounts]:
    """BullMQ's attemptsStarted and stalledCounter of a job, read where the backend keeps them."""
    if settings.queue_backend == "postgres":
        conn = await psycopg.AsyncConnection.connect(settings.queue_dsn, autocommit=True)
        table = f'"{settings.queue_schema}".job'

        async def from_postgres(job_id: str) -> tuple[int, int]:
            cur = await conn.execute(
                f"SELECT attempts_started, stalled_count FROM {table} WHERE queue = %s AND id = %s",
                (KIND, job_id),
            )
            row = await cur.fetchone()
            assert row is not None, job_id
            return int(row[0]), int(row[1])

        try:
            yield from_postgres
        finally:
            await conn.close()
        return
    assert settings.redis_url is not None
    client = redis.asyncio.Redis.from_url(settings.redis_url, decode_responses=True)

    async def from_redis(job_id: str) -> tuple[int, int]:
        ats, stc = await client.hmget(f"{settings.queue_prefix}:{KIND}:{job_id}", ["ats", "stc"])
        return int(ats or 0), int(stc or 0)

    try:
        yield from_redis
    finally:
        await client.aclose()


async def submit(queue: AnyJobQueue, n: int = 1) -> list[str]:
    subs = [
        Submission(kind=KIND, data={"n": i}, tenant_id="t1", tier=Tier.GROWTH) for i in range(n)
    ]
    return [s.job.id for s in await queue.submit_bulk(subs)]


async def all_completed(queue: AnyJobQueue, job_ids: list[str]) -> list[JobRecord]:
    async def states() -> list[JobRecord | None]:
        out: list[JobRecord | None] = []
        for job_id in job_ids:
            try:
                out.append(await queue.get(job_id))
            except NotFound:
                out.append(None)
        return out

    records = await eventually(
        states,
        lambda rs: all(r is not None and r.state is JobState.COMPLETED for r in rs),
        timeout_s=RECOVERY_S,
    )
    return [r for r in records if r is not None]


async def counts(queue: AnyJobQueue) -> dict[str, int]:
    [shared] = [c for c in await queue.counts() if c.queue == KIND]
    return shared.counts


async def test_jobs_of_a_killed_worker_are_run_by_another(
    workers: Workers, job_queue: AnyJobQueue, started_counts: StartedCounts
) -> None:
    first = workers.start("hang")
    job_ids = await submit(job_queue, 3)
    await workers.started(set(job_ids), first)

    first.proc.send_signal(signal.SIGKILL)
    assert await first.exited(timeout_s=10) == -signal.SIGKILL
    for job_id in job_ids:  # orphaned: still active, nobody renews their locks
        assert (await job_queue.get(job_id)).state is JobState.ACTIVE

    second = workers.start("instant")
    records = await all_completed(job_queue, job_ids)

    for record in records:
        assert record.result["pid"] == second.pid, record
        assert record.attempts_made == 1  # a stall is not a failed attempt
        assert record.failure_reason is None
        # Started twice (A, then B), handed back once by the stalled-job check.
        assert await started_counts(record.id) == (2, 1)
    events = workers.events()
    for job_id in job_ids:
        runs = [(e, pid) for e, j, pid, _ in events if j == job_id]
        assert runs == [("start", first.pid), ("start", second.pid), ("done", second.pid)]
    assert await counts(job_queue) == {
        "waiting": 0,
        "delayed": 0,
        "active": 0,
        "completed": 3,
        "failed": 0,
    }

    second.proc.send_signal(signal.SIGTERM)
    assert await second.exited(timeout_s=15) == 0


async def test_sigterm_lets_the_running_job_finish(
    workers: Workers, job_queue: AnyJobQueue, started_counts: StartedCounts
) -> None:
    grace_s = 10.0
    worker = workers.start("1.5", SETTLER_SHUTDOWN_GRACE_S=str(grace_s))
    [job_id] = await submit(job_queue)
    await workers.started({job_id}, worker)

    worker.proc.send_signal(signal.SIGTERM)
    signalled = time.monotonic()
    code = await worker.exited(timeout_s=grace_s)
    took = time.monotonic() - signalled

    assert code == 0, worker.log_text()
    assert took < grace_s
    record = await job_queue.get(job_id)
    assert record.state is JobState.COMPLETED, record
    assert record.result["pid"] == worker.pid
    assert await started_counts(job_id) == (1, 0)
    assert [(e, pid) for e, j, pid, _ in workers.events() if j == job_id] == [
        ("start", worker.pid),
        ("done", worker.pid),
    ]
    log = worker.log_text()
    assert "settler.stopping" in log
    assert "clean=True" in log
    assert "forced_stop" not in log


async def _forced_stop(workers: Workers, job_queue: AnyJobQueue) -> tuple[Worker, str, int]:
    """Run a job that hangs, SIGTERM its worker, then SIGINT during the grace period.

    Returns the worker, the job id and the worker's exit code.
    """
    worker = workers.start("hang", SETTLER_SHUTDOWN_GRACE_S="60")
    [job_id] = await submit(job_queue)
    await workers.started({job_id}, worker)

    worker.proc.send_signal(signal.SIGTERM)

    async def log() -> str:
        return worker.log_text()

    # The second signal only counts once the first one is being handled.
    await eventually(log, lambda text: "settler.stopping" in text, timeout_s=10)
    worker.proc.send_signal(signal.SIGINT)
    return worker, job_id, await worker.exited(timeout_s=15)


async def test_second_signal_cuts_the_grace_short_and_the_job_is_not_lost(
    workers: Workers, job_queue: AnyJobQueue, started_counts: StartedCounts
) -> None:
    worker, job_id, code = await _forced_stop(workers, job_queue)

    text = worker.log_text()
    assert code == 0, text  # well inside the 60 s grace
    assert "settler.forced_stop" in text
    assert "Traceback" not in text
    record = await job_queue.get(job_id)
    assert record.state is JobState.ACTIVE, "an interrupted job is neither failed nor done"
    assert record.failure_reason is None
    assert [e for e, j, _, _ in workers.events() if j == job_id] == ["start"]

    later = workers.start("instant")
    [record] = await all_completed(job_queue, [job_id])
    assert record.result["pid"] == later.pid
    assert record.attempts_made == 1
    assert await started_counts(job_id) == (2, 1)
    assert [(e, pid) for e, j, pid, _ in workers.events() if j == job_id] == [
        ("start", worker.pid),
        ("start", later.pid),
        ("done", later.pid),
    ]
    later.proc.send_signal(signal.SIGTERM)
    assert await later.exited(timeout_s=15) == 0


async def test_forced_stop_is_reported_as_not_clean(
    workers: Workers, job_queue: AnyJobQueue
) -> None:
    worker, _, code = await _forced_stop(workers, job_queue)
    assert code == 0
    assert "settler.stopped" in worker.log_text()
    assert "clean=False" in worker.log_text()
