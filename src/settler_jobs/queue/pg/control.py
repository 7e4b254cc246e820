"""Acting on jobs and lanes on PostgreSQL: cancel, retry, promote, pause and resume,
cancel requests (NOTIFY/LISTEN), the DLQ copy cursor and retention of finished jobs.

bullmq's SQL functions do each change atomically (remove, reprocess_job, promote,
pause, clean); we call them on our own connections with the same arguments its
backend passes.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Final

import psycopg

from settler_jobs.domain import JobState, PriorityClass, Tier, fair_step
from settler_jobs.errors import InvalidState, NotFound
from settler_jobs.queue.pg.pool import pg_errors
from settler_jobs.queue.pg.rows import PgSql
from settler_jobs.records import JobRecord

CANCEL_CHANNEL: Final = "settler_cancel"
"""NOTIFY channel of cancel requests; payload `<queue>\\t<job id>`."""


class PgControl(PgSql):
    """Acting on jobs and lanes: cancel, retry, promote, pause, resume, clean up."""

    async def cancel(self, job_id: str, *, tenant_id: str | None = None) -> JobState:
        """Cancel a job: waiting or delayed jobs are removed, an active one is interrupted."""
        async with pg_errors():
            record = await self._get(job_id, tenant_id)
            if record.state in (JobState.WAITING, JobState.DELAYED):
                if await self._remove(record) == 1:
                    await self._refund(record)
                    return JobState.CANCELLED
                record = await self._get(job_id, tenant_id)
            if record.state is JobState.ACTIVE:
                await self._rows(
                    "SELECT pg_notify(%s, %s)", (CANCEL_CHANNEL, f"{record.queue}\t{job_id}")
                )
                return JobState.ACTIVE
            raise InvalidState(f"job {job_id!r} is {record.state.value} and cannot be cancelled")

    async def _remove(self, record: JobRecord) -> int:
        # Only a job not claimed meanwhile is removed: the row lock orders us against
        # a claim, and a job that became active is interrupted instead.
        try:
            rows = await self._rows(
                "SELECT remove(j.queue, j.id, false) AS n FROM job j"
                " WHERE j.queue = %s AND j.id = %s AND j.state IN ('waiting', 'delayed')",
                (record.queue, record.id),
            )
        except psycopg.errors.RaiseException as exc:  # a scheduler's next job
            raise InvalidState(f"job {record.id!r} cannot be cancelled: {exc}") from None
        return int(rows[0]["n"]) if rows else 0

    async def _refund(self, record: JobRecord) -> None:
        """A cancelled waiting job gives its flow's virtual time back (its quota use too)."""
        if not (record.tenant_id and record.tier and record.priority_class):
            return
        priority, tier = PriorityClass(record.priority_class), Tier(record.tier)
        await self._rows(
            "UPDATE settler_fair_flow SET f = f - %s"
            " WHERE queue = %s AND tenant = %s AND class = %s",
            (fair_step(priority, tier), record.queue, record.tenant_id, priority.value),
        )

    async def retry(self, job_id: str, *, tenant_id: str | None = None) -> JobRecord:
        """Run a failed job again from the start, with its attempts reset."""
        async with pg_errors():
            record = await self._get(job_id, tenant_id)
            if record.state is not JobState.FAILED:
                raise InvalidState(
                    f"job {job_id!r} is {record.state.value}; only failed jobs retry"
                )
            rows = await self._rows(
                "SELECT reprocess_job(%s, %s, 'failed', false, true, true) AS code",
                (record.queue, job_id),
            )
            _check_code(int(rows[0]["code"]), job_id, "failed")
            return await self._get(job_id, tenant_id)

    async def promote(self, job_id: str, *, tenant_id: str | None = None) -> JobRecord:
        """Run a delayed job now."""
        async with pg_errors():
            record = await self._get(job_id, tenant_id)
            if record.state is not JobState.DELAYED:
                raise InvalidState(
                    f"job {job_id!r} is {record.state.value}; only delayed jobs are promoted"
                )
            rows = await self._rows("SELECT promote(%s, %s) AS code", (record.queue, job_id))
            _check_code(int(rows[0]["code"]), job_id, "delayed")
            return await self._get(job_id, tenant_id)

    async def pause(self, kind: str) -> None:
        """Stop every worker from starting new jobs of this kind (both lanes)."""
        await self._set_paused(kind, paused=True)

    async def resume(self, kind: str) -> None:
        """Undo `pause`."""
        await self._set_paused(kind, paused=False)

    async def _set_paused(self, kind: str, *, paused: bool) -> None:
        k = self._registry.get(kind)
        async with pg_errors():
            await self._rows(
                "SELECT pause(q, %s) FROM unnest(%s::text[]) AS l(q)",
                (paused, [k.queue, k.express_queue]),
            )

    async def cancellation_requests(self) -> AsyncIterator[tuple[str, str]]:
        """Yield (queue, job id) for every cancel request of an active job."""
        conn = await self._pool.connect()
        try:
            async with pg_errors():
                await conn.execute(f"LISTEN {CANCEL_CHANNEL}")
                async for note in conn.notifies():
                    queue, sep, job_id = note.payload.partition("\t")
                    if sep and queue and job_id:
                        yield queue, job_id
        finally:
            await conn.close()

    async def dlq_cursor(self, queue: str) -> int:
        """Failure time (ms) up to which this lane's failed jobs were copied to the DLQ."""
        async with pg_errors():
            rows = await self._rows(
                "SELECT failed_at_ms FROM settler_dlq_cursor WHERE queue = %s", (queue,)
            )
        return int(rows[0]["failed_at_ms"]) if rows else 0

    async def set_dlq_cursor(self, queue: str, failed_at_ms: int) -> None:
        """Advance the DLQ copy cursor of a lane."""
        async with pg_errors():
            await self._rows(
                "INSERT INTO settler_dlq_cursor (queue, failed_at_ms) VALUES (%s, %s)"
                " ON CONFLICT (queue) DO UPDATE SET failed_at_ms = EXCLUDED.failed_at_ms",
                (queue, int(failed_at_ms)),
            )

    async def finished_before(self, queue: str, state: JobState, older_than_s: int) -> int:
        """How many completed/failed jobs of a lane finished more than `older_than_s` ago."""
        cutoff = int(time.time() * 1000) - older_than_s * 1000
        async with pg_errors():
            rows = await self._rows(
                "SELECT count(*) AS n FROM job WHERE queue = %s AND state = %s::job_state"
                " AND finished_at_ms <= %s",
                (queue, _finished(state), cutoff),
            )
        return int(rows[0]["n"])

    async def clean_finished(
        self, queue: str, state: JobState, older_than_s: int, limit: int
    ) -> int:
        """Delete up to `limit` completed/failed jobs of a lane older than `older_than_s`."""
        cutoff = int(time.time() * 1000) - older_than_s * 1000
        async with pg_errors():
            rows = await self._rows(
                "SELECT count(*) AS n FROM clean(%s, %s, %s, %s) AS t(id)",
                (queue, _finished(state), cutoff, max(1, limit)),
            )
        return int(rows[0]["n"])


def _finished(state: JobState) -> str:
    if state not in (JobState.COMPLETED, JobState.FAILED):
        raise ValueError("only completed or failed jobs are cleaned")
    return state.value


def _check_code(code: int, job_id: str, expected: str) -> None:
    # bullmq's status codes: -1 no such job, -3 not in the expected state.
    if code == -1:
        raise NotFound(f"job {job_id!r} not found")
    if code == -3:
        raise InvalidState(f"job {job_id!r} is no longer {expected}")
