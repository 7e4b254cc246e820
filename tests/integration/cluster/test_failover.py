"""A primary dies: its replica takes over the slot, and lanes and producers reconnect to it.

This module starts a cluster of its own (three primaries with a replica each) because it
kills a node.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from redis.crc import key_slot

from settler_jobs.config import Settings
from settler_jobs.context import JobContext
from settler_jobs.domain import JobState, Tier
from settler_jobs.kinds import JobKind, Registry
from settler_jobs.queue import JobQueue
from settler_jobs.queue.lane_loop import LaneLoop, LaneOptions
from settler_jobs.records import Submission
from settler_jobs.redis_server import redis_client
from tests.helpers import eventually
from tests.integration.cluster.conftest import require_binaries
from tests.redis_cluster import RedisClusterNodes, start_cluster

FAILOVER_S = 30.0


@pytest.fixture(scope="module")
def replicated_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterNodes]:
    """Three primaries with a replica each, for this module only."""
    require_binaries()
    nodes = start_cluster(tmp_path_factory.mktemp("redis-cluster-replicated"), replicas=1)
    try:
        yield nodes
    finally:
        nodes.stop()


async def _never(payload: dict[str, Any], ctx: JobContext) -> None:
    raise AssertionError("the lane under test runs its own processor")


async def test_lanes_and_producers_follow_a_failover(
    replicated_cluster: RedisClusterNodes, tmp_path: Path
) -> None:
    prefix = "{test-" + uuid.uuid4().hex[:12] + "}"
    settings = Settings(
        redis_url=replicated_cluster.url,
        redis_cluster=True,
        queue_prefix=prefix,
        data_dir=tmp_path / "data",
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'settler.db'}",
        metrics_port=0,
    )
    url = replicated_cluster.url
    queue = JobQueue(redis_client(url, settings), Registry([JobKind("fo", _never)]), settings)
    lane_client = redis_client(url, settings, patient=True)
    ran: Counter[str] = Counter()

    async def processor(job: Any, token: str) -> str:
        ran[job.id] += 1
        return "ok"

    async def total() -> int:
        return sum(ran.values())

    lane = LaneLoop(
        "fo",
        processor,
        client=lane_client,
        prefix=prefix,
        options=LaneOptions(concurrency=2, drain_delay_s=0.5, retry_s=0.1),
    )
    lane.start()
    try:
        subs = [Submission("fo", {"n": i}, "acme", Tier.FREE) for i in range(20)]
        await queue.submit_bulk(subs)
        await eventually(total, lambda n: n == 20)
        slot = key_slot(prefix.encode())
        primary = replicated_cluster.owner(slot)
        assert lane.pipe.address.port == primary

        replicated_cluster.kill(primary)
        promoted = await asyncio.to_thread(
            replicated_cluster.wait_for_owner_other_than, slot, primary, FAILOVER_S
        )

        later = await queue.submit_bulk(
            [Submission("fo", {"n": i}, "acme", Tier.FREE) for i in range(20, 40)]
        )
        await eventually(
            lambda: _ran(ran, [s.job.id for s in later]), lambda n: n == 20, timeout_s=FAILOVER_S
        )
        assert all(ran[s.job.id] == 1 for s in later)
        assert lane.pipe.address.port == promoted
        assert {(await queue.get(s.job.id)).state for s in later} == {JobState.COMPLETED}
    finally:
        await lane.close(5)
        await lane_client.aclose()
        await queue.close()


async def _ran(ran: Counter[str], ids: list[str]) -> int:
    return sum(1 for i in ids if ran[i])
