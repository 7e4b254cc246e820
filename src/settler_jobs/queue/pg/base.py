"""The shared base of `PgJobQueue`'s parts: pool, registry and settings, bullmq queue
handles on the PostgreSQL backend, job lookup, and job rows read back as `JobRecord`s.

Reads go to `<schema>.job` directly (one row holds a job and its state); bullmq's
`Queue` is only used where it computes something we would otherwise copy (cron slots
of job schedulers).
"""

from __future__ import annotations

import string
from typing import Any, Final

import bullmq
from psycopg.conninfo import make_conninfo

from settler_jobs import envelope
from settler_jobs.config import Settings
from settler_jobs.domain import JobState
from settler_jobs.errors import InvalidState, NotFound
from settler_jobs.kinds import Registry
from settler_jobs.queue.pg.pool import PgPool
from settler_jobs.records import JobRecord

_LOOKUP_ID_CHARS: Final = frozenset(string.ascii_letters + string.digits + "_.-")
# Every column a JobRecord needs (no locks, no flow bookkeeping).
JOB_COLUMNS: Final = (
    "queue, id, seq, name, state::text AS state, data, opts, priority, delay_ms, max_attempts,"
    " attempts_made, progress, return_value, failed_reason, stacktrace, added_at_ms,"
    " processed_at_ms, finished_at_ms"
)


class PgQueueBase:
    """What every part of `PgJobQueue` shares: the pool, the kinds, the settings, lookup."""

    def __init__(self, pool: PgPool, registry: Registry, settings: Settings) -> None:
        self._pool = pool
        self._registry = registry
        self._settings = settings
        self._schema = pool.schema
        self._queues: dict[str, bullmq.Queue] = {}

    async def close(self) -> None:
        """Close the bullmq queue handles and the pool."""
        for queue in self._queues.values():
            await queue.close()
        self._queues.clear()
        await self._pool.close()

    async def ping(self) -> None:
        """Raise if PostgreSQL does not answer (QueueUnavailable)."""
        await self._pool.fetch("SELECT 1")

    @property
    def registry(self) -> Registry:
        """The kinds this queue accepts."""
        return self._registry

    @property
    def pool(self) -> PgPool:
        """The queue database's connections, for settler's own tables next to the queues."""
        return self._pool

    @property
    def schema(self) -> str:
        """The PostgreSQL schema holding the queue tables."""
        return self._schema

    def _queue(self, name: str) -> bullmq.Queue:
        if name not in self._queues:
            # bullmq opens its own connection per queue: bound its connects like ours.
            dsn = make_conninfo(self._pool.dsn, connect_timeout=self._pool.connect_timeout)
            opts = {"connection": dsn, "backend": "postgres", "schema": self._schema}
            self._queues[name] = bullmq.Queue(name, opts)
        return self._queues[name]

    async def _row(self, job_id: str) -> dict[str, Any] | None:
        if not job_id or len(job_id) > 128 or not set(job_id) <= _LOOKUP_ID_CHARS:
            return None
        rows = await self._pool.fetch(
            f"SELECT {JOB_COLUMNS} FROM job WHERE queue = ANY(%s) AND id = %s",
            (self._registry.queues(), job_id),
        )
        if len(rows) > 1:
            lanes = ", ".join(sorted(str(r["queue"]) for r in rows))
            # Only ids we did not issue can repeat (Node numbers jobs per queue).
            raise InvalidState(f"job id {job_id!r} exists in {lanes}; it is ambiguous")
        return rows[0] if rows else None

    async def _get(self, job_id: str, tenant_id: str | None = None) -> JobRecord:
        """One job by id across the lanes; NotFound if missing or another tenant's."""
        row = await self._row(job_id)
        if row is None or (tenant_id is not None and envelope.tenant_of(row["data"]) != tenant_id):
            raise NotFound(f"job {job_id!r} not found")
        return self.record(row)

    def record(self, row: dict[str, Any]) -> JobRecord:
        """A `job` row (JOB_COLUMNS) as a JobRecord."""
        queue = str(row["queue"])
        return pg_record(row, queue, self._registry.for_queue(queue).name)


def pg_record(row: dict[str, Any], queue: str, kind: str) -> JobRecord:
    """A `job` row as the record the Redis side builds from a BullMQ job hash."""
    data = row["data"] if isinstance(row["data"], dict) else {}
    try:
        env: envelope.Envelope | None = envelope.parse(data)
    except Exception:
        env = None
    stacktrace = row["stacktrace"] if isinstance(row["stacktrace"], list) else []
    opts = row["opts"] if isinstance(row["opts"], dict) else {}
    progress = row["progress"]
    return JobRecord(
        id=str(row["id"]),
        queue=queue,
        kind=kind,
        state=JobState.from_bullmq(str(row["state"])),
        tenant_id=env.tenant_id if env else envelope.tenant_of(data),
        tier=env.tier.value if env else None,
        priority_class=env.priority.value if env and env.priority else None,
        bullmq_priority=int(row["priority"] or 0),
        payload=env.payload if env else data,
        progress=0 if progress is None else progress,
        attempts_made=int(row["attempts_made"] or 0),
        max_attempts=int(opts.get("attempts") or row["max_attempts"] or 1),
        created_at_ms=int(row["added_at_ms"]),
        processed_at_ms=int(row["processed_at_ms"]) if row["processed_at_ms"] else None,
        finished_at_ms=int(row["finished_at_ms"]) if row["finished_at_ms"] else None,
        delay_ms=int(row["delay_ms"] or 0),
        result=row["return_value"],
        failure_reason=row["failed_reason"],
        stacktrace=tuple(str(s) for s in stacktrace),
    )
