"""Settler's own Redis users on a real Redis Cluster: cancelling a running job (pub/sub),
the API rate limiter (a Lua script), the alert lease and the depth history."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from settler_jobs.alerts import depth_history
from settler_jobs.alerts.evaluator import lead
from settler_jobs.api.ratelimit import RateLimiter
from settler_jobs.config import Settings
from settler_jobs.context import JobContext
from settler_jobs.domain import JobState, Tier
from settler_jobs.errors import InvalidState
from settler_jobs.kinds import JobKind, Registry
from settler_jobs.records import JobRecord, QueueCounts, Submission
from settler_jobs.redis_server import redis_client
from settler_jobs.shared_state import RedisState
from tests.harness import system
from tests.helpers import eventually


async def test_a_running_job_is_cancelled_through_the_cluster(cluster_settings: Settings) -> None:
    started = asyncio.Event()

    async def wait_forever(payload: dict[str, Any], ctx: JobContext) -> None:
        started.set()
        await asyncio.Event().wait()

    kind = JobKind("cancellable", wait_forever, concurrency=1)
    async with system(cluster_settings, Registry([kind])) as sys_:
        running = (await sys_.queue.submit(Submission("cancellable", {}, "t1", Tier.FREE))).job
        await asyncio.wait_for(started.wait(), 10)
        assert await sys_.queue.cancel(running.id) is JobState.ACTIVE

        async def state() -> JobRecord:
            return await sys_.queue.get(running.id)

        done = await eventually(state, lambda j: j.state is JobState.FAILED)
        assert done.failure_reason is not None and "JobCancelled" in done.failure_reason
        with pytest.raises(InvalidState):
            await sys_.queue.cancel(running.id)


async def test_rate_limit_lease_depth_history_on_the_cluster(cluster_settings: Settings) -> None:
    assert cluster_settings.redis_url is not None
    settings = cluster_settings.model_copy(
        update={"api_rate_limits": {"free": 1.0}, "api_rate_burst_s": 2.0}
    )
    client = redis_client(cluster_settings.redis_url, settings)
    state = RedisState(client)
    try:
        limiter = RateLimiter(state, settings)
        verdicts = [await limiter.check("acme", Tier.FREE) for _ in range(3)]
        assert [v.allowed for v in verdicts] == [True, True, False]
        assert verdicts[2].retry_after_s >= 1

        prefix = settings.queue_prefix
        assert await lead(state, prefix, "worker-a", 5.0)
        assert not await lead(state, prefix, "worker-b", 5.0)
        assert await lead(state, prefix, "worker-a", 5.0)

        counts = [QueueCounts("q1", {"waiting": 3, "active": 1, "delayed": 2}, None)]
        assert await depth_history.record(state, prefix, counts, now_s=600.0)
        assert not await depth_history.record(state, prefix, counts, now_s=601.0)
        history = await depth_history.read(state, prefix, ["q1"])
        assert [(s.waiting, s.active, s.delayed) for s in history["q1"]] == [(3, 1, 2)]
    finally:
        await client.aclose()
