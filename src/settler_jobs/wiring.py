"""Wiring: from Settings to a connected Redis, a migrated database, a JobQueue and the
capability APIs over them. The one place that builds services; capabilities never import it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import cached_property

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from settler_jobs.config import Settings
from settler_jobs.emails import Emails
from settler_jobs.exports import Exports
from settler_jobs.keyring import secret_box
from settler_jobs.kinds import Registry
from settler_jobs.queue import JobQueue
from settler_jobs.reconcile import Reconciliations
from settler_jobs.redis_server import (
    EmbeddedRedis,
    preflight,
    redis_client,
    redis_errors,
    resolve_redis_url,
)
from settler_jobs.registry import default_registry
from settler_jobs.shared_state import SharedState, shared_state
from settler_jobs.storage.db import create_engine, session_factory
from settler_jobs.storage.files import object_store
from settler_jobs.storage.migrate import upgrade_async
from settler_jobs.webhooks import Webhooks


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

    @cached_property
    def state(self) -> SharedState:
        """Heartbeats, alerts, KPI cache and accounting (Redis, or the database on postgres)."""
        redis = self.queue.client if self.settings.queue_backend == "redis" else None
        return shared_state(self.settings, redis, self.sessions)

    @cached_property
    def webhooks(self) -> Webhooks:
        """Endpoints, publishing and deliveries (application key and SSRF policy from settings)."""
        return Webhooks.from_settings(self.settings, self.sessions, self.queue)

    @cached_property
    def emails(self) -> Emails:
        """Email requests and their per-recipient status."""
        return Emails(self.sessions, self.queue)

    @cached_property
    def exports(self) -> Exports:
        """Export requests, their files and download links."""
        return Exports(self.sessions, self.queue, object_store(self.settings))

    @cached_property
    def reconciliations(self) -> Reconciliations:
        """Reconciliation definitions, source files and runs."""
        return Reconciliations(self.settings, self.sessions, self.queue, secret_box(self.settings))


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
