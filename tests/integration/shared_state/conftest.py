"""A `SharedState` on the real Redis and one on a real PostgreSQL database, per test.

Every test writes under its own key prefix; the Redis keys under it are deleted after.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from settler_jobs.shared_state import PostgresState, RedisState, SharedState
from settler_jobs.storage.db import create_engine


@pytest.fixture(params=["redis", pytest.param("postgres", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest) -> str | None:
    """None for Redis, else the URL of this module's migrated PostgreSQL database."""
    if request.param == "redis":
        return None
    url: str = request.getfixturevalue("postgres_database")
    return url


@pytest.fixture
async def state(backend: str | None, redis_url: str, prefix: str) -> AsyncIterator[SharedState]:
    """The shared state on each backend."""
    if backend is None:
        client = Redis.from_url(redis_url, decode_responses=True)
        try:
            yield RedisState(client)
        finally:
            keys = [key async for key in client.scan_iter(match=f"{prefix}:*", count=1000)]
            if keys:
                await client.delete(*keys)
            await client.aclose()
        return
    engine = create_engine(backend)
    try:
        yield PostgresState(engine)
    finally:
        await engine.dispose()
