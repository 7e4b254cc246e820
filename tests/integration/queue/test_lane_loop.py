"""The lane loop against a real Redis: bullmq's worker semantics, one test per point.

Jobs are added with bullmq's own `Queue` (as any producer would); the loop runs a
plain processor. Retries, PermanentFailure, the stalled check into the DLQ, queue
pause and graceful stop through the whole runtime are in worker/test_runtime.py.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import bullmq
import pytest
import redis.asyncio

from settler_jobs.config import Settings
from settler_jobs.queue.lane_loop import LaneLoop, LaneOptions
from tests.helpers import eventually

QUEUE = "lane"
Processor = Callable[[Any, str], Awaitable[Any]]


@asynccontextmanager
async def lane(
    settings: Settings, processor: Processor, **options: Any
) -> AsyncIterator[tuple[LaneLoop, bullmq.Queue, redis.asyncio.Redis]]:
    """A running loop on QUEUE, a bullmq producer and a plain client; closed after."""
    assert settings.redis_url is not None
    client = redis.asyncio.from_url(settings.redis_url, decode_responses=True)
    producer = bullmq.Queue(
        QUEUE, {"connection": settings.redis_url, "prefix": settings.queue_prefix}
    )
    options.setdefault("concurrency", 5)
    loop = LaneLoop(
        QUEUE,
        processor,
        client=client,
        prefix=settings.queue_prefix,
        options=LaneOptions(**options),
    )
    loop.start()
    try:
        yield loop, producer, client
    finally:
        await loop.close(5)
        await producer.close()
        await client.aclose()


def key(settings: Settings, suffix: str) -> str:
    return f"{settings.queue_prefix}:{QUEUE}:{suffix}"


async def add(producer: bullmq.Queue, n: int, **opts: Any) -> list[str]:
    jobs = await producer.addBulk([{"name": "t", "data": {"n": i}, "opts": opts} for i in range(n)])
    return [str(job.id) for job in jobs]


async def test_lock_is_taken_and_renewed_while_a_job_runs(settings: Settings) -> None:
    seen: list[str] = []
    release = asyncio.Event()

    async def hold(job: Any, token: str) -> None:
        seen.append(token)
        await release.wait()

    opts = {"lock_duration_ms": 1000, "stalled_interval_ms": 500, "max_stalled_count": 0}
    async with lane(settings, hold, **opts) as (_, producer, client):
        [job_id] = await add(producer, 1)
        await reach(seen, 1)
        lock = key(settings, f"{job_id}:lock")
        assert await client.get(lock) == seen[0]
        started = time.monotonic()
        # Three lock durations with the stalled check running every 500 ms: only renewal
        # keeps the job; the lock's TTL never runs out.
        ttls = await eventually(
            lambda: client.pttl(lock), lambda _: time.monotonic() - started > 3, interval_s=0.1
        )
        assert ttls > 0
        release.set()
        await eventually(lambda: client.zcard(key(settings, "completed")), lambda n: n == 1)
        assert await client.zcard(key(settings, "failed")) == 0
        assert len(seen) == 1


@pytest.mark.parametrize("steal", ["delete", "replace"])
async def test_a_lost_lock_means_finished_elsewhere_not_failed(
    settings: Settings, steal: str, caplog: pytest.LogCaptureFixture
) -> None:
    failed: list[str] = []
    done: list[str] = []

    async def lose_lock(job: Any, token: str) -> str:
        if job.data["n"] == 0:
            lock = key(settings, f"{job.id}:lock")
            if steal == "delete":
                await client.delete(lock)
            else:
                await client.set(lock, "another-worker", px=30_000)
        done.append(str(job.id))
        return "ok"

    async with lane(settings, lose_lock, concurrency=1) as (loop, producer, client):
        loop._on_failed = lambda job, exc: failed.append(str(job.id))
        ids = await add(producer, 3, removeOnComplete=False)
        await eventually(lambda: client.zcard(key(settings, "completed")), lambda n: n == 2)
        assert sorted(done) == sorted(ids)
        assert failed == [] and await client.zcard(key(settings, "failed")) == 0
        # The first job was not completed by us: it is left to its lock's owner.
        assert await client.zscore(key(settings, "completed"), ids[0]) is None
    codes = [r.__dict__["code"] for r in caplog.records if r.msg == "lane.finished_elsewhere"]
    assert codes == [-2 if steal == "delete" else -6]


async def test_delayed_job_starts_when_due_not_after_the_idle_block(settings: Settings) -> None:
    started: list[float] = []

    async def note(job: Any, token: str) -> None:
        started.append(time.time())

    async with lane(settings, note, drain_delay_s=5) as (_, producer, client):
        await wait_idle(client, settings)
        t0 = time.time()
        await add(producer, 1, delay=600)
        await reach(started, 1)
        assert 0.59 <= started[0] - t0 < 1.5


async def test_an_idle_lane_starts_a_new_job_within_milliseconds(settings: Settings) -> None:
    started: list[float] = []

    async def note(job: Any, token: str) -> None:
        started.append(time.time())

    async with lane(settings, note) as (_, producer, client):
        latencies = []
        for n in range(5):
            await wait_idle(client, settings)
            t0 = time.time()
            await add(producer, 1)
            await reach(started, n + 1)
            latencies.append(started[-1] - t0)
        assert sorted(latencies)[2] < 0.05, latencies


async def test_a_rate_limited_queue_is_honoured(settings: Settings) -> None:
    started: list[float] = []

    async def note(job: Any, token: str) -> None:
        started.append(time.monotonic())

    async with lane(settings, note, concurrency=10) as (_, producer, client):
        await client.hset(key(settings, "meta"), mapping={"max": 2, "duration": 400})
        await add(producer, 6)
        await reach(started, 6)
        # Two per 400 ms window: the sixth starts two windows after the first.
        assert started[5] - started[0] >= 0.75


async def test_job_schedulers_advance(settings: Settings) -> None:
    runs: list[str] = []

    async def note(job: Any, token: str) -> None:
        runs.append(str(job.id))

    async with lane(settings, note) as (_, producer, _client):
        await producer.upsertJobScheduler("tick", {"every": 200}, "tick", {"k": 1})
        await reach(runs, 3)
        assert len(set(runs)) == len(runs)


async def test_pause_finishes_in_flight_jobs_and_resume_fetches_again(settings: Settings) -> None:
    release = asyncio.Event()
    started: list[str] = []

    async def hold(job: Any, token: str) -> None:
        started.append(str(job.id))
        await release.wait()

    async with lane(settings, hold, concurrency=2) as (loop, producer, client):
        await add(producer, 2)
        await reach(started, 2)
        pausing = asyncio.ensure_future(loop.pause())
        await add(producer, 2)
        release.set()
        await asyncio.wait_for(pausing, 5)  # returns once the two in flight finished
        assert await client.zcard(key(settings, "completed")) == 2
        assert await client.llen(key(settings, "wait")) == 2 and len(started) == 2
        loop.resume()
        await eventually(lambda: client.zcard(key(settings, "completed")), lambda n: n == 4)


async def test_close_finishes_in_flight_jobs_and_strands_none(settings: Settings) -> None:
    release = asyncio.Event()
    started: list[str] = []

    async def hold(job: Any, token: str) -> None:
        started.append(str(job.id))
        await release.wait()

    async with lane(settings, hold, concurrency=5) as (loop, producer, client):
        await add(producer, 20, removeOnComplete=False)
        await reach(started, 5)
        closing = asyncio.ensure_future(loop.close(10))
        release.set()
        assert await asyncio.wait_for(closing, 10) is True
        assert await client.zcard(key(settings, "completed")) == len(started) == 5
        assert await client.llen(key(settings, "active")) == 0  # nothing fetched and dropped
        assert await client.llen(key(settings, "wait")) == 15


async def test_dropped_connections_lose_nothing_and_complete_nothing_twice(
    settings: Settings,
) -> None:
    runs: Counter[str] = Counter()
    total = 600

    async def work(job: Any, token: str) -> None:
        runs[str(job.id)] += 1
        await asyncio.sleep(0.001)  # the job's work: keeps commands in flight when killed

    # Locks of 30 s: a job a lost reply fetched comes back only if the loop adopts it
    # (the stalled check would take a minute, past this test's deadline).
    async with lane(settings, work, concurrency=20) as (loop, producer, client):
        ids = await add(producer, total, removeOnComplete=False)
        kills, deadline = 0, time.monotonic() + 30
        # A kill every 25 starts, while commands of the 20 slots are in flight.
        while sum(runs.values()) < total - 25 and time.monotonic() < deadline:
            if sum(runs.values()) > kills * 25:
                killed = await kill_clients(client, loop.pipe.name or "")
                kills += 1 if killed else 0
            await asyncio.sleep(0.005)  # pacing of the kills, not a synchronisation
        assert kills >= 5
        await eventually(
            lambda: client.zcard(key(settings, "completed")), lambda n: n == total, timeout_s=30
        )
        assert loop.pipe.connects > 5
        assert sorted(runs) == sorted(ids)
        assert max(runs.values()) == 1
        assert await client.zcard(key(settings, "failed")) == 0


async def reach(values: list[Any], n: int) -> None:
    """Until `values` holds at least `n` items."""

    async def size() -> int:
        return len(values)

    await eventually(size, lambda have: have >= n)


async def kill_clients(client: redis.asyncio.Redis, name: str) -> int:
    """CLIENT KILL every connection named `name`; how many went."""
    killed = 0
    for entry in await client.client_list():
        if entry.get("name") == name:
            killed += await client.client_kill_filter(_id=entry["id"])
    return killed


async def wait_idle(client: redis.asyncio.Redis, settings: Settings) -> None:
    """Until the lane's blocking connection waits on the marker."""
    marker_wait = f"{settings.queue_prefix}:{QUEUE}"

    async def blocked() -> bool:
        return any(
            e.get("cmd") == "bzpopmin" and e.get("name", "").startswith(marker_wait)
            for e in await client.client_list()
        )

    await eventually(blocked, bool)
