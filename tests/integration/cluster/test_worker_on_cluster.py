"""Workers on a real Redis Cluster: the runtime runs jobs, and a lane follows its slot
when the slot moves to another primary (MOVED), running every job exactly once."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from typing import Any

import pytest
from redis.crc import key_slot

from settler_jobs import heartbeat
from settler_jobs.config import Settings
from settler_jobs.context import JobContext
from settler_jobs.domain import JobState, RetryPolicy, Tier
from settler_jobs.kinds import JobKind, Registry
from settler_jobs.queue import JobQueue
from settler_jobs.queue.lane_loop import LaneLoop, LaneOptions
from settler_jobs.records import JobRecord, Submission
from settler_jobs.redis_server import redis_client
from settler_jobs.shared_state import RedisState
from tests.harness import system
from tests.helpers import eventually
from tests.redis_cluster import RedisClusterNodes


async def test_the_worker_runtime_runs_jobs_retries_and_heartbeats(
    cluster_settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    runs: Counter[str] = Counter()

    async def flaky(payload: dict[str, Any], ctx: JobContext) -> str:
        runs[ctx.job_id] += 1
        if payload.get("fail_once") and ctx.attempt == 1:
            raise RuntimeError("first attempt fails")
        return f"done {payload['n']}"

    kind = JobKind(
        "on-cluster", flaky, concurrency=4, retry=RetryPolicy(attempts=2, base_delay_s=0)
    )
    async with system(cluster_settings, Registry([kind])) as sys_:
        subs = [Submission("on-cluster", {"n": i}, "acme", Tier.GROWTH) for i in range(40)]
        subs.append(Submission("on-cluster", {"n": 99, "fail_once": True}, "acme", Tier.ENTERPRISE))
        ids = [s.job.id for s in await sys_.queue.submit_bulk(subs)]

        async def states() -> list[JobRecord]:
            return [await sys_.queue.get(i) for i in ids]

        done = await eventually(
            states, lambda js: all(j.state is JobState.COMPLETED for j in js), timeout_s=30
        )
        assert [j.result for j in done] == [f"done {i}" for i in range(40)] + ["done 99"]
        assert done[-1].attempts_made == 2 and done[-1].queue == "on-cluster-express"
        assert runs == Counter({**{i: 1 for i in ids[:-1]}, ids[-1]: 2})
        workers = await heartbeat.live_workers(
            RedisState(sys_.redis_queue.client), cluster_settings.queue_prefix
        )
        assert [w.id for w in workers] == [sys_.runtime.worker_id]
        await sys_.runtime.stop(5)
    # Background loops (stats, depth, alerts, DLQ sweep, cancel listener) ran without errors.
    problems = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert problems == []
    assert "job.attempt_failed" in caplog.messages  # the log is captured: the check is real


async def test_a_lane_follows_its_slot_to_another_primary(
    cluster_settings: Settings, redis_cluster: RedisClusterNodes
) -> None:
    url = cluster_settings.redis_url
    assert url is not None
    registry = Registry([JobKind("moving", _unused)])
    queue = JobQueue(redis_client(url, cluster_settings), registry, cluster_settings)
    lane_client = redis_client(url, cluster_settings, patient=True)
    ran: Counter[str] = Counter()

    async def processor(job: Any, token: str) -> str:
        ran[job.id] += 1
        return "ok"

    lane = LaneLoop(
        "moving",
        processor,
        client=lane_client,
        prefix=cluster_settings.queue_prefix,
        options=LaneOptions(concurrency=3, drain_delay_s=0.5, retry_s=0.05),
    )
    lane.start()
    try:
        first = await queue.submit_bulk(
            [Submission("moving", {"n": i}, "acme", Tier.FREE) for i in range(30)]
        )
        await eventually(lambda: _value(sum(ran.values())), lambda n: n == 30)
        connects = lane.pipe.connects

        slot = key_slot(cluster_settings.queue_prefix.encode())
        before = redis_cluster.owner(slot)
        target = next(p for p in redis_cluster.ports if p != before)
        await asyncio.to_thread(redis_cluster.migrate_slot, slot, target)
        assert lane.pipe.address.port == before

        second = await queue.submit_bulk(
            [Submission("moving", {"n": i}, "acme", Tier.FREE) for i in range(30, 60)]
        )
        await eventually(lambda: _value(sum(ran.values())), lambda n: n == 60, timeout_s=30)
        ids = [s.job.id for s in first + second]
        assert ran == Counter(dict.fromkeys(ids, 1))
        assert lane.pipe.address.port == target and lane.pipe.connects > connects
        records = [await queue.get(i) for i in ids]
        assert {r.state for r in records} == {JobState.COMPLETED}
    finally:
        await lane.close(5)
        await lane_client.aclose()
        await queue.close()


async def _unused(payload: dict[str, Any], ctx: JobContext) -> None:
    raise AssertionError("the lane under test runs its own processor")


async def _value(value: int) -> int:
    return value


async def test_failed_jobs_retry_and_schedules_pause_browse_on_the_cluster(
    cluster_settings: Settings,
) -> None:
    attempts: Counter[str] = Counter()

    async def fails_first(payload: dict[str, Any], ctx: JobContext) -> str:
        attempts[ctx.job_id] += 1
        if attempts[ctx.job_id] == 1:
            raise RuntimeError("first run fails")
        return "second run"

    kind = JobKind("retried", fails_first, retry=RetryPolicy(attempts=1))
    async with system(cluster_settings, Registry([kind])) as sys_:
        queue = sys_.queue
        job = (await queue.submit(Submission("retried", {}, "acme", Tier.FREE))).job

        async def state() -> JobRecord:
            return await queue.get(job.id)

        await eventually(state, lambda j: j.state is JobState.FAILED)
        await queue.retry(job.id, tenant_id="acme")
        done = await eventually(state, lambda j: j.state is JobState.COMPLETED)
        assert done.result == "second run" and attempts[job.id] == 2

        page = await queue.browse(kind="retried", tenant_id="acme")
        assert [r.id for r in page.jobs] == [job.id]

        info = await queue.upsert_schedule("retried", "hourly", data={}, pattern="0 * * * *")
        assert [s.id for s in await queue.list_schedules()] == [info.id]
        assert await queue.remove_schedule("retried", info.id)
        assert await queue.list_schedules() == []

        await queue.pause("retried")
        paused = (await queue.submit(Submission("retried", {}, "acme", Tier.FREE))).job
        assert (await queue.get(paused.id)).state is JobState.WAITING
        await queue.resume("retried")
        await eventually(
            lambda: queue.get(paused.id), lambda j: j.state in (JobState.FAILED, JobState.COMPLETED)
        )
