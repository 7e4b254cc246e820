"""The shared base of `PgJobQueue`'s parts: settings, registry, the pool, bullmq queue
handles on the PostgreSQL backend, the schema applied on first use, and job lookup.

Jobs live in bullmq's `<schema>.job` table (shared with BullMQ for Node's PostgreSQL
backend); Settler's own queue-side tables sit next to it (queue/pg/sql/).
"""

from __future__ import annotations

import asyncio
import string
from typing import Final

import bullmq
from psycopg.conninfo import make_conninfo
from psycopg.rows import dict_row

from settler_jobs import envelope
from settler_jobs.config import Settings
from settler_jobs.errors import InvalidState, NotFound
from settler_jobs.kinds import Registry
from settler_jobs.queue.pg import schema
from settler_jobs.queue.pg.pool import PgPool, pg_errors
from settler_jobs.queue.pg.record import COLUMNS, record_from
from settler_jobs.records import JobRecord

_LOOKUP_ID_CHARS: Final = frozenset(string.ascii_letters + string.digits + "_.-")


class PgQueueBase:
    """What every part of `PgJobQueue` shares: the pool, the kinds, the settings, lookup."""

    def __init__(self, registry: Registry, settings: Settings, pool: PgPool | None = None) -> None:
        self._registry = registry
        self._settings = settings
        self._pool = pool or PgPool(settings.queue_dsn, settings.queue_schema)
        self._queues: dict[str, bullmq.Queue] = {}
        self._ready = False
        self._ready_lock = asyncio.Lock()

    @property
    def registry(self) -> Registry:
        """The kinds this queue accepts."""
        return self._registry

    @property
    def settings(self) -> Settings:
        """The settings this queue was built with."""
        return self._settings

    @property
    def pool(self) -> PgPool:
        """The queue database's connections, for settler's own tables next to the queues."""
        return self._pool

    @property
    def schema(self) -> str:
        """The PostgreSQL schema holding the queue tables."""
        return self._pool.schema

    @property
    def key_prefix(self) -> str:
        """The namespace of shared-state entries (KPI cache), as on Redis."""
        return self._settings.queue_prefix

    async def ready(self) -> None:
        """Apply the queue schema once (bullmq's migrations, then Settler's)."""
        if self._ready:
            return
        async with self._ready_lock:
            if not self._ready:
                async with pg_errors():
                    await schema.migrate(self._pool)
                self._ready = True

    async def ping(self) -> None:
        """Raise if PostgreSQL does not answer (QueueUnavailable)."""
        async with pg_errors(), self._pool.connection() as conn:
            await conn.execute("SELECT 1")

    async def close(self) -> None:
        """Close the bullmq queue handles and the pool."""
        for queue in self._queues.values():
            await queue.close()
        self._queues.clear()
        await self._pool.close()

    def _queue(self, name: str) -> bullmq.Queue:
        if name not in self._queues:
            # bullmq opens its own connection per queue: bound its connects like ours.
            dsn = make_conninfo(self._pool.dsn, connect_timeout=self._pool.connect_timeout)
            opts = {"connection": dsn, "backend": "postgres", "schema": self._pool.schema}
            self._queues[name] = bullmq.Queue(name, opts)
        return self._queues[name]

    async def _get(self, job_id: str, tenant_id: str | None = None) -> JobRecord:
        """One job by id across the lanes; NotFound if missing or another tenant's."""
        if not job_id or len(job_id) > 128 or not set(job_id) <= _LOOKUP_ID_CHARS:
            raise NotFound(f"job {job_id!r} not found")
        await self.ready()
        async with self._pool.connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(
                f"SELECT {COLUMNS} FROM job WHERE queue = ANY(%s) AND id = %s",
                (self._registry.queues(), job_id),
            )
            rows = await cur.fetchall()
        if len(rows) > 1:
            lanes = ", ".join(sorted(str(r["queue"]) for r in rows))
            # Only ids we did not issue can repeat (Node numbers jobs per queue).
            raise InvalidState(f"job id {job_id!r} exists in {lanes}; it is ambiguous")
        if not rows or (tenant_id is not None and envelope.tenant_of(rows[0]["data"]) != tenant_id):
            raise NotFound(f"job {job_id!r} not found")
        row = rows[0]
        return record_from(row, self._registry.for_queue(str(row["queue"])).name)
