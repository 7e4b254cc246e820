"""`PgJobQueue`: the PostgreSQL queue, built from parts over `PgQueueBase` like the
Redis `JobQueue` (producer here; reads, control, schedules and usage slot in as
further mixins with the same public methods).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from settler_jobs.queue.lane import FailureHook, Processor
from settler_jobs.queue.pg.lane import PgLaneWorker
from settler_jobs.queue.pg.pool import pg_errors
from settler_jobs.queue.pg.producer import PgProducer
from settler_jobs.records import JobRecord


class PgJobQueue(PgProducer):
    """Producer side of every lane of the registered kinds, and the lanes' factory."""

    async def get(self, job_id: str, *, tenant_id: str | None = None) -> JobRecord:
        """One job; NotFound if missing or owned by another tenant than `tenant_id`."""
        async with pg_errors():
            return await self._get(job_id, tenant_id)

    async def cancellation_requests(self) -> AsyncIterator[tuple[str, str]]:
        """Yield (queue, job id) for every cancel request (NOTIFY settler_cancel)."""
        async for request in self.listener.cancellation_requests():
            yield request

    def lane(
        self,
        queue: str,
        kind: str,
        processor: Processor,
        *,
        concurrency: int,
        on_dead: FailureHook,
    ) -> PgLaneWorker:
        """A worker lane for `queue` on this queue's pool and listener (start it)."""
        return PgLaneWorker(
            queue,
            kind,
            processor,
            concurrency=concurrency,
            pool=self._pool,
            listener=self.listener,
            settings=self._settings,
            on_dead=on_dead,
            queue_handle=self._queue,
        )
