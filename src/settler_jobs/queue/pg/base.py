"""The shared base of `PgJobQueue`'s parts on PostgreSQL: settings, registry, the queue
schema and connection pool, bullmq `Queue` handles on the postgres backend, job lookup,
and job rows read back as `JobRecord`s.

Jobs live in bullmq's `<schema>.job` table (shared with BullMQ for Node's Postgres
backend); Settler's own queue-side tables sit next to it (queue/pg/sql/).
"""

from __future__ import annotations

import asyncio
import string
from collections.abc import Mapping, Sequence
from typing import Any, Final

import bullmq

from settler_jobs import envelope
from settler_jobs.config import Settings
from settler_jobs.domain import JobState
from settler_jobs.errors import InvalidState, NotFound
from settler_jobs.kinds import Registry
from settler_jobs.queue.pg import schema
from settler_jobs.queue.pg.listen import Listener
from settler_jobs.queue.pg.pool import PgPool, pg_errors, quote_ident
from settler_jobs.records import JobRecord

_LOOKUP_ID_CHARS: Final = frozenset(string.ascii_letters + string.digits + "_.-")
BULK_CHUNK: Final = 1000
# Our own key in a job's opts (Node ignores it; it goes when the job goes).
FIRST_FAILED: Final = "settlerFirstFailedOn"
# The columns every record is built from, in `record_of`'s order.
JOB_COLUMNS: Final = (
    "queue, id, name, state, data, opts, priority, delay_ms, max_attempts, attempts_made, "
    "progress, return_value, failed_reason, stacktrace, added_at_ms, processed_at_ms, "
    "finished_at_ms"
)


class PgQueueBase:
    """What every part of `PgJobQueue` shares: the pool, the kinds, the settings, lookup."""

    def __init__(self, registry: Registry, settings: Settings, pool: PgPool | None = None) -> None:
        self._registry = registry
        self._settings = settings
        self._pool = pool or PgPool(settings.queue_dsn, settings.queue_schema)
        # The schema, quoted, for statements that may run on a caller's connection.
        self._s = quote_ident(self._pool.schema)
        self._queues: dict[str, bullmq.Queue] = {}
        self._listener: Listener | None = None
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
        """The connection pool (for transactional enqueue next to domain rows)."""
        return self._pool

    @property
    def listener(self) -> Listener:
        """The process's LISTEN connection (job wake-ups, cancel requests), opened on use."""
        if self._listener is None:
            self._listener = Listener(self._pool)
        return self._listener

    @property
    def schema(self) -> str:
        """The PostgreSQL schema the queues live in."""
        return self._pool.schema

    @property
    def key_prefix(self) -> str:
        """The namespace of shared-state entries (KPI cache), as on Redis."""
        return self._settings.queue_prefix

    async def ping(self) -> None:
        """Raise QueueUnavailable if PostgreSQL does not answer."""
        async with pg_errors(), self._pool.connection() as conn:
            await conn.execute("SELECT 1")

    async def ready(self) -> None:
        """Apply the queue schema once (bullmq's migrations, then Settler's)."""
        if self._ready:
            return
        async with self._ready_lock:
            if not self._ready:
                async with pg_errors():
                    await schema.apply(self._pool)
                self._ready = True

    async def close(self) -> None:
        """Close the listener, the bullmq queue handles and the pool."""
        if self._listener is not None:
            await self._listener.close()
        for queue in self._queues.values():
            await queue.close()
        self._queues.clear()
        await self._pool.close()

    def _queue(self, name: str) -> bullmq.Queue:
        """bullmq's `Queue` for `name` on the postgres backend (its own connection)."""
        if name not in self._queues:
            opts = {
                "connection": self._pool.dsn,
                "backend": "postgres",
                "schema": self._pool.schema,
            }
            self._queues[name] = bullmq.Queue(name, opts)
        return self._queues[name]

    async def _fetch(self, query: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Rows of one read on a pooled connection (connection errors: QueueUnavailable)."""
        await self.ready()
        async with pg_errors(), self._pool.connection() as conn:
            cur = await conn.execute(query.encode(), params)
            return await cur.fetchall()

    async def _locate(self, job_id: str) -> str | None:
        if not job_id or len(job_id) > 128 or not set(job_id) <= _LOOKUP_ID_CHARS:
            return None
        rows = await self._fetch(
            "SELECT queue FROM job WHERE id = %s AND queue = ANY(%s)",
            (job_id, self._registry.queues()),
        )
        if len(rows) > 1:
            # Only ids we did not issue can repeat (Node numbers jobs per queue).
            hits = ", ".join(sorted(r[0] for r in rows))
            raise InvalidState(f"job id {job_id!r} exists in {hits}; it is ambiguous")
        return str(rows[0][0]) if rows else None

    async def _get(self, job_id: str, tenant_id: str | None = None) -> JobRecord:
        if not job_id or len(job_id) > 128 or not set(job_id) <= _LOOKUP_ID_CHARS:
            raise NotFound(f"job {job_id!r} not found")
        rows = await self._fetch(
            f"SELECT {JOB_COLUMNS} FROM job WHERE id = %s AND queue = ANY(%s)",
            (job_id, self._registry.queues()),
        )
        if len(rows) > 1:
            hits = ", ".join(sorted(str(r[0]) for r in rows))
            raise InvalidState(f"job id {job_id!r} exists in {hits}; it is ambiguous")
        if not rows:
            raise NotFound(f"job {job_id!r} not found")
        record = self.record_of(rows[0])
        if tenant_id is not None and record.tenant_id != tenant_id:
            raise NotFound(f"job {job_id!r} not found")
        return record

    def record_of(self, row: Sequence[Any]) -> JobRecord:
        """A `JobRecord` from a row of `JOB_COLUMNS`."""
        queue = str(row[0])
        kind = self._registry.for_queue(queue).name
        return record_of(row, kind)


def record_of(row: Sequence[Any], kind: str) -> JobRecord:
    """A `JobRecord` from a row of `JOB_COLUMNS` (the kind given by the caller)."""
    (
        queue,
        job_id,
        _name,
        state,
        data,
        opts,
        priority,
        delay_ms,
        max_attempts,
        attempts_made,
        progress,
        result,
        failed_reason,
        stacktrace,
        added_at,
        processed_at,
        finished_at,
    ) = row
    data = data if isinstance(data, dict) else {}
    try:
        env: envelope.Envelope | None = envelope.parse(data)
    except Exception:
        env = None
    opts = opts if isinstance(opts, Mapping) else {}
    first_failed = opts.get(FIRST_FAILED)
    return JobRecord(
        id=str(job_id),
        queue=str(queue),
        kind=kind,
        state=JobState.from_bullmq(str(state)),
        tenant_id=env.tenant_id if env else envelope.tenant_of(data),
        tier=env.tier.value if env else None,
        priority_class=env.priority.value if env and env.priority else None,
        bullmq_priority=int(priority or 0),
        payload=env.payload if env else data,
        progress=progress if progress is not None else 0,
        attempts_made=int(attempts_made or 0),
        max_attempts=int(opts.get("attempts") or max_attempts or 1),
        created_at_ms=int(added_at),
        processed_at_ms=int(processed_at) if processed_at else None,
        finished_at_ms=int(finished_at) if finished_at else None,
        delay_ms=int(delay_ms or 0),
        result=result,
        failure_reason=failed_reason,
        stacktrace=tuple(str(s) for s in stacktrace) if isinstance(stacktrace, list) else (),
        first_failed_at_ms=int(first_failed) if isinstance(first_failed, int | float) else None,
    )
