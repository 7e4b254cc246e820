"""Opening the PostgreSQL queue: start-up checks (server version, migrations) and the
`PgJobQueue` over a pool. Unreachable → QueueUnavailable (CLI exit 5, HTTP 503).
"""

from __future__ import annotations

from settler_jobs.config import Settings
from settler_jobs.errors import ConfigError
from settler_jobs.kinds import Registry
from settler_jobs.queue.pg.jobs import PgJobQueue
from settler_jobs.queue.pg.pool import PgPool
from settler_jobs.queue.pg.schema import apply, check_version, pending


def queue_pool(settings: Settings, *, timeout_s: float | None = None) -> PgPool:
    """A pool on the queue database; `timeout_s` bounds connects and statements (API)."""
    connect = settings.redis_connect_timeout_s if timeout_s is None else timeout_s
    return PgPool(
        settings.queue_dsn,
        settings.queue_schema,
        connect_timeout_s=connect,
        statement_timeout_s=timeout_s,
    )


async def preflight(pool: PgPool, *, migrate_schema: bool) -> None:
    """Check the server version and that the queue tables are current.

    With `migrate_schema` missing migrations are applied; without, they are an error
    (ConfigError naming them) so a process never runs against tables it does not know.
    """
    await check_version(pool)
    if migrate_schema:
        await apply(pool)
        return
    missing = await pending(pool)
    if missing:
        raise ConfigError(
            "the queue tables are not migrated (" + ", ".join(missing) + "); start "
            "`settler-jobs up` once to create them"
        )


def pg_job_queue(pool: PgPool, registry: Registry, settings: Settings) -> PgJobQueue:
    """The queue over an opened pool."""
    return PgJobQueue(registry, settings, pool)
