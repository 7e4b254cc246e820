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
from pydantic import SecretStr

from settler_jobs.config import Settings
from settler_jobs.redis_server import EmbeddedRedis
from settler_jobs.secrets_box import SecretBox

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
def queue_backend() -> str:
    """The queue backend `settings` selects: Redis here; the integration and e2e suites
    override this to run each test on both backends (ids `redis-queue`, `pg-queue`)."""
    return "redis"


@pytest.fixture
def settings(
    redis_url: str, prefix: str, tmp_path: Path, queue_backend: str, request: pytest.FixtureRequest
) -> Iterator[Settings]:
    """Settings for one test: own prefix, own data folder and SQLite file, no metrics port.

    On the PostgreSQL backend: the module's PostgreSQL database (Settler's tables emptied),
    a queue schema of the test's own, dropped afterwards, and an application key, which a
    database server requires (see keyring.py).
    """
    base = Settings(
        redis_url=redis_url,
        queue_prefix=prefix,
        data_dir=tmp_path / "data",
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'settler.db'}",
        metrics_port=0,
        dlq_sweep_interval_s=0.2,
    )
    if queue_backend != "postgres":
        yield base
    else:
        from tests.postgres import drop_schema, empty_database

        database: str = request.getfixturevalue("postgres_database")
        empty_database(database)
        schema = "q_" + prefix.replace("-", "_")
        try:
            yield base.model_copy(
                update={
                    "queue_backend": "postgres",
                    "database_url": database,
                    "queue_schema": schema,
                    "secret_key": SecretStr(SecretBox.generate_key()),
                }
            )
        finally:
            drop_schema(database, schema)
    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        for start in range(0, len(keys), 500):
            client.delete(*keys[start : start + 500])
    finally:
        client.close()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked `redis_only` (Redis internals: Lua, keys, cluster) run on Redis only."""
    keep: list[pytest.Item] = []
    dropped: list[pytest.Item] = []
    for item in items:
        callspec = getattr(item, "callspec", None)
        on_pg = callspec is not None and callspec.params.get("queue_backend") == "pg-queue"
        (dropped if on_pg and item.get_closest_marker("redis_only") else keep).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep
