"""The producer side and the start-up checks on a real three-primary Redis Cluster."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio.cluster
from redis.cluster import RedisCluster
from redis.crc import key_slot

from settler_jobs.config import Settings
from settler_jobs.context import JobContext
from settler_jobs.domain import JobState, PriorityClass, Tier
from settler_jobs.errors import NotFound, QueueUnavailable, RedisConfigError
from settler_jobs.kinds import JobKind, Registry
from settler_jobs.queue import JobQueue
from settler_jobs.records import Submission
from settler_jobs.redis_server import preflight, redis_client
from tests.redis_cluster import RedisClusterNodes


async def _noop(payload: dict[str, str], ctx: JobContext) -> str:
    return "ok"


REGISTRY = Registry([JobKind("cluster-kind", _noop), JobKind("other-kind", _noop)])


async def test_submit_get_list_counts_and_cancel_on_the_cluster(
    cluster_settings: Settings, redis_cluster: RedisClusterNodes
) -> None:
    url = cluster_settings.redis_url
    assert url is not None
    queue = JobQueue(redis_client(url, cluster_settings), REGISTRY, cluster_settings)
    try:
        subs = [
            Submission("cluster-kind", {"n": str(i)}, "acme", Tier.GROWTH, PriorityClass.HIGH)
            for i in range(5)
        ]
        subs.append(Submission("other-kind", {"n": "x"}, "acme", Tier.ENTERPRISE))
        subs.append(Submission("other-kind", {"n": "y"}, "globex", Tier.FREE, delay_s=60))
        done = await queue.submit_bulk(subs)
        again = await queue.submit(
            Submission("cluster-kind", {"n": "k"}, "acme", Tier.GROWTH, idempotency_key="k1")
        )
        same = await queue.submit(
            Submission("cluster-kind", {"n": "k"}, "acme", Tier.GROWTH, idempotency_key="k1")
        )
        assert same.job.id == again.job.id and not same.created

        first = await queue.get(done[0].job.id, tenant_id="acme")
        assert (first.kind, first.state, first.payload) == (
            "cluster-kind",
            JobState.WAITING,
            {"n": "0"},
        )
        with pytest.raises(NotFound):
            await queue.get(done[0].job.id, tenant_id="globex")
        express = await queue.get(done[5].job.id)
        assert express.queue == "other-kind-express"

        listed = await queue.list_jobs(tenant_id="acme", limit=50)
        assert {j.id for j in listed} == {s.job.id for s in done[:6]} | {again.job.id}
        counts = {c.queue: c.counts for c in await queue.counts()}
        ready = {q: n["waiting"] for q, n in counts.items()}
        assert [ready[q] for q in ("cluster-kind", "other-kind-express", "other-kind")] == [6, 1, 0]
        assert counts["other-kind"]["delayed"] == 1

        assert await queue.cancel(done[1].job.id, tenant_id="acme") is JobState.CANCELLED
        with pytest.raises(NotFound):
            await queue.get(done[1].job.id)
    finally:
        await queue.close()

    # Every key of the deployment sits in the prefix's slot, on the node that serves it.
    slot = key_slot(cluster_settings.queue_prefix.encode())
    plain = RedisCluster.from_url(redis_cluster.url, decode_responses=True)
    owner = redis_cluster.node(redis_cluster.owner(slot))
    try:
        keys = list(plain.scan_iter(match=f"{cluster_settings.queue_prefix}:*"))
        assert len(keys) > 10
        assert {key_slot(k.encode()) for k in keys} == {slot}
        assert owner.cluster("COUNTKEYSINSLOT", slot) == len(keys)
    finally:
        plain.close()
        owner.close()


async def test_preflight_checks_every_primary(
    cluster_settings: Settings, redis_cluster: RedisClusterNodes
) -> None:
    url = cluster_settings.redis_url
    assert url is not None
    client = redis_client(url, cluster_settings)
    last = redis_cluster.node(redis_cluster.ports[-1])
    try:
        version = last.info("server")["redis_version"]
        assert await preflight(client, allow_eviction=False) == version
        last.config_set("maxmemory-policy", "allkeys-lru")  # only the last primary may evict
        with pytest.raises(RedisConfigError, match="allkeys-lru"):
            await preflight(client, allow_eviction=False)
        assert await preflight(client, allow_eviction=True) == version
    finally:
        last.config_set("maxmemory-policy", "noeviction")
        last.close()
        await client.aclose()


async def test_bulk_submits_load_scripts_a_primary_has_lost(
    cluster_settings: Settings, redis_cluster: RedisClusterNodes
) -> None:
    url = cluster_settings.redis_url
    assert url is not None
    queue = JobQueue(redis_client(url, cluster_settings), REGISTRY, cluster_settings)
    try:
        await queue.submit(Submission("cluster-kind", {"n": "a"}, "acme", Tier.FREE))
        for port in redis_cluster.ports:  # as after a restart or a failover to a cold replica
            node = redis_cluster.node(port)
            try:
                node.script_flush()
            finally:
                node.close()
        subs = [
            Submission("cluster-kind", {"n": str(i)}, "acme", Tier.FREE, delay_s=i % 2 * 60)
            for i in range(10)
        ]
        done = await queue.submit_bulk(subs)
        assert all(s.created for s in done)
        counts = {c.queue: c.counts for c in await queue.counts()}["cluster-kind"]
        assert (counts["waiting"], counts["delayed"]) == (6, 5)
    finally:
        await queue.close()


async def test_bulk_adds_are_one_transaction_without_blocking_threads(
    cluster_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(coro: Any) -> None:
        coro.close()
        raise AssertionError("a command ran on redis-py's blocking thread bridge")

    # redis-py's cluster transactions queue each command on a thread, blocking the loop.
    monkeypatch.setattr(redis.asyncio.cluster, "_run_coroutine_in_thread", refuse)
    url = cluster_settings.redis_url
    assert url is not None
    queue = JobQueue(redis_client(url, cluster_settings), REGISTRY, cluster_settings)
    try:
        subs = [Submission("cluster-kind", {"n": str(i)}, "acme", Tier.GROWTH) for i in range(1500)]
        done = await queue.submit_bulk(subs)
        assert len({s.job.id for s in done}) == 1500 and all(s.created for s in done)
        [lane] = [c for c in await queue.counts() if c.queue == "cluster-kind"]
        assert lane.counts["waiting"] == 1500
    finally:
        await queue.close()


async def test_an_unreachable_cluster_is_queue_unavailable_fast(tmp_path: Path) -> None:
    settings = Settings(
        redis_url="redis://127.0.0.1:1",  # nothing listens on port 1
        redis_cluster=True,
        queue_prefix="{unreachable}",
        data_dir=tmp_path,
    )
    assert settings.redis_url is not None
    queue = JobQueue(redis_client(settings.redis_url, settings), REGISTRY, settings)
    try:
        started = time.monotonic()
        with pytest.raises(QueueUnavailable, match="nothing was changed"):
            await queue.submit(Submission("cluster-kind", {}, "acme", Tier.FREE))
        with pytest.raises(QueueUnavailable):
            await queue.get("job-1")
        assert time.monotonic() - started < 10
    finally:
        await queue.close()
