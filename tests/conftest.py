"""Shared fixtures: a real Redis (the local one, else an embedded one) and per-test settings.

Every test gets its own BullMQ key prefix and data folder; keys under that prefix are
deleted afterwards. Nothing here flushes a Redis it did not start.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from settler_jobs.config import Settings
from settler_jobs.redis_server import EmbeddedRedis

LOCAL_REDIS = "redis://127.0.0.1:6379/0"


def _answers(url: str) -> bool:
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=0.5)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except (redis.ConnectionError, redis.TimeoutError, OSError):
        return False


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Redis: SETTLER_TEST_REDIS_URL, the local server, or an embedded one."""
    configured = os.environ.get("SETTLER_TEST_REDIS_URL")
    if configured:
        yield configured
    elif _answers(LOCAL_REDIS):
        yield LOCAL_REDIS
    else:
        server = EmbeddedRedis(tmp_path_factory.mktemp("redis"))
        try:
            yield server.start()
        finally:
            server.stop()


@pytest.fixture
def prefix() -> str:
    """A key prefix no other test uses."""
    return f"test-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def settings(redis_url: str, prefix: str, tmp_path: Path) -> Iterator[Settings]:
    """Settings for one test: own prefix, own data folder and SQLite file, no metrics port."""
    yield Settings(
        redis_url=redis_url,
        queue_prefix=prefix,
        data_dir=tmp_path / "data",
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'settler.db'}",
        metrics_port=0,
        dlq_sweep_interval_s=0.2,
    )
    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        for start in range(0, len(keys), 500):
            client.delete(*keys[start : start + 500])
    finally:
        client.close()
