"""Fixtures on a real Redis Cluster: three primaries started for the session, and settings
with the cluster client and a hash-tagged prefix of each test's own (so its own slot).

Without `redis-server`/`redis-cli` the tests are skipped with the reason; under CI
(`CI=true`) they fail instead.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis.cluster import RedisCluster

from settler_jobs.config import Settings
from tests.redis_cluster import RedisClusterNodes, binaries, start_cluster


def require_binaries() -> None:
    """Skip (fail under CI) when the cluster cannot be started here."""
    if binaries() is None:
        reason = "redis-server and redis-cli are needed to start a Redis Cluster"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason} (required under CI)")
        pytest.skip(reason)


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterNodes]:
    """A three-primary Redis Cluster on free loopback ports, stopped after the session."""
    require_binaries()
    nodes = start_cluster(tmp_path_factory.mktemp("redis-cluster"))
    try:
        yield nodes
    finally:
        nodes.stop()


@pytest.fixture
def cluster_prefix() -> str:
    """A hash-tagged key prefix no other test uses: the test's keys get a slot of their own."""
    return "{test-" + uuid.uuid4().hex[:12] + "}"


@pytest.fixture
def cluster_settings(
    redis_cluster: RedisClusterNodes, cluster_prefix: str, tmp_path: Path
) -> Iterator[Settings]:
    """Settings on the cluster with the test's prefix; its keys are deleted afterwards."""
    yield Settings(
        redis_url=redis_cluster.url,
        redis_cluster=True,
        queue_prefix=cluster_prefix,
        data_dir=tmp_path / "data",
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'settler.db'}",
        metrics_port=0,
        dlq_sweep_interval_s=0.2,
    )
    client = RedisCluster.from_url(redis_cluster.url)
    try:
        for key in list(client.scan_iter(match=f"{cluster_prefix}:*", count=1000)):
            client.delete(key)
    finally:
        client.close()
