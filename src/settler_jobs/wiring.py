"""Wiring: from Settings to a connected queue (Redis, or PostgreSQL with no Redis at all),
a migrated database, and the capability APIs over them. The one place that builds
services; capabilities never import it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from functools import cached_property

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from settler_jobs.config import Settings
from settler_jobs.emails import Emails
from settler_jobs.exports import Exports
from settler_jobs.keyring import secret_box
from settler_jobs.kinds import Registry
from settler_jobs.queue import AnyJobQueue, JobQueue
from settler_jobs.queue.pg.open import pg_job_queue, queue_pool
from settler_jobs.queue.pg.open import preflight as pg_preflight
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
    redis_url: str | None
    """None on the PostgreSQL backend: nothing connects to Redis then."""
    queue: AnyJobQueue
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    embedded: EmbeddedRedis | None

    @cached_property
    def state(self) -> SharedState:
        """Heartbeats, alerts, KPI cache and accounting (Redis, or the database on postgres)."""
        redis = self.queue.client if isinstance(self.queue, JobQueue) else None
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
    queue_timeout_s: float | None = None,
) -> AsyncIterator[Services]:
    """Reach the queue (start or reach Redis, or open PostgreSQL), open the database
    (migrating it if asked), and clean up after.

    `check_redis` runs the queue's start-up checks (name kept from the Redis-only days):
    the API passes False so it starts while the queue is down and answers 503 meanwhile.
    `queue_timeout_s` bounds PostgreSQL connects (and queue statements): the API's 2 s.
    """
    for folder in (settings.data_dir, settings.files_dir, settings.outbox_dir):
        folder.mkdir(parents=True, exist_ok=True)
    kinds = registry or default_registry()
    engine = create_engine(settings.effective_database_url, connect_timeout_s=queue_timeout_s)
    async with AsyncExitStack() as stack:
        stack.push_async_callback(engine.dispose)
        redis_url: str | None = None
        embedded: EmbeddedRedis | None = None
        queue: AnyJobQueue
        if settings.queue_backend == "postgres":
            pool = queue_pool(settings, timeout_s=queue_timeout_s)
            queue = pg_job_queue(pool, kinds, settings)
            stack.push_async_callback(queue.close)
            if check_redis or migrate:
                # Version, then bullmq's and settler's queue migrations (applied here, as
                # bullmq itself does on first use); unreachable -> QueueUnavailable.
                await pg_preflight(pool, migrate_schema=True)
        else:
            redis_url, embedded = resolve_redis_url(settings)
            if embedded is not None:
                stack.callback(embedded.stop)
            client = redis_client(redis_url, settings)
            stack.push_async_callback(client.aclose)
            if check_redis:
                async with redis_errors():
                    await preflight(client, allow_eviction=settings.allow_eviction_policy)
            queue = JobQueue(client, kinds, settings)
        if migrate:
            await upgrade_async(settings.effective_database_url)
        yield Services(
            settings=settings,
            registry=kinds,
            redis_url=redis_url,
            queue=queue,
            engine=engine,
            sessions=session_factory(engine),
            embedded=embedded,
        )
