"""Wiring: from Settings to a connected Redis, a migrated database and a JobQueue."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from settler_jobs.config import Settings
from settler_jobs.kinds import Registry
from settler_jobs.queue import JobQueue
from settler_jobs.redis_server import (
    EmbeddedRedis,
    preflight,
    redis_client,
    redis_errors,
    resolve_redis_url,
)
from settler_jobs.registry import default_registry
from settler_jobs.storage.db import create_engine, session_factory
from settler_jobs.storage.migrate import upgrade_async


@dataclass
class Services:
    """Connections shared by the CLI, workers and (later) the HTTP API."""

    settings: Settings
    registry: Registry
    redis_url: str
    queue: JobQueue
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    embedded: EmbeddedRedis | None


@asynccontextmanager
async def open_services(
    settings: Settings,
    registry: Registry | None = None,
    *,
    migrate: bool = False,
    check_redis: bool = True,
) -> AsyncIterator[Services]:
    """Start or reach Redis, open the database (migrating it if asked), and clean up after."""
    for folder in (settings.data_dir, settings.files_dir, settings.outbox_dir):
        folder.mkdir(parents=True, exist_ok=True)
    redis_url, embedded = resolve_redis_url(settings)
    client = redis_client(redis_url, settings)
    engine = create_engine(settings.effective_database_url)
    try:
        if check_redis:
            async with redis_errors():
                await preflight(client, allow_eviction=settings.allow_eviction_policy)
        if migrate:
            await upgrade_async(settings.effective_database_url)
        yield Services(
            settings=settings,
            registry=registry or default_registry(),
            redis_url=redis_url,
            queue=JobQueue(client, registry or default_registry(), settings),
            engine=engine,
            sessions=session_factory(engine),
            embedded=embedded,
        )
    finally:
        await client.aclose()
        await engine.dispose()
        if embedded is not None:
            embedded.stop()
