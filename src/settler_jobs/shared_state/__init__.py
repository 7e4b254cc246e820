"""Shared state outside the queue: heartbeats, rate-limit buckets, dashboard sessions,
alert leases, depth history, tenant accounting and the KPI cache.

`SharedState` is the port; `RedisState` keeps it in Redis (the default backend) and
`PostgresState` in the Settler database (SETTLER_QUEUE_BACKEND=postgres, no Redis).
`shared_state` picks one from the settings.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from settler_jobs.config import Settings
from settler_jobs.errors import ConfigError
from settler_jobs.shared_state.on_postgres import PostgresState
from settler_jobs.shared_state.on_redis import RedisState
from settler_jobs.shared_state.port import CountBatch, SharedState

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

__all__ = ["CountBatch", "PostgresState", "RedisState", "SharedState", "shared_state"]


def shared_state(
    settings: Settings,
    redis: Redis | None,
    sessions: async_sessionmaker[AsyncSession] | None,
) -> SharedState:
    """The shared state of `settings.queue_backend`: Redis through `redis`, PostgreSQL
    through the database `sessions` (ConfigError when the one it needs is missing)."""
    if settings.queue_backend == "postgres":
        if sessions is None:
            raise ConfigError("the postgres backend keeps shared state in the database")
        engine: AsyncEngine = sessions.kw["bind"]
        return PostgresState(engine)
    if redis is None:
        raise ConfigError("the redis backend keeps shared state in Redis")
    return RedisState(redis)
