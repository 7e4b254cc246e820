"""`PgJobQueue`: the PostgreSQL queue, built from parts over `PgQueueBase` like the
Redis `JobQueue`, with the same public methods, plus the lanes' factory.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from settler_jobs.queue.lane import FailureHook, Processor
from settler_jobs.queue.pg.control import PgControl
from settler_jobs.queue.pg.lane import PgLaneWorker
from settler_jobs.queue.pg.reads import PgReader
from settler_jobs.queue.pg.schedules import PgSchedules
from settler_jobs.queue.pg.txn import PgTransactionalProducer
from settler_jobs.queue.pg.usage import PgUsage


class PgJobQueue(PgTransactionalProducer, PgReader, PgSchedules, PgControl, PgUsage):
    """Producer, reader and control side of every lane, and the lanes' factory."""

    async def cancellation_requests(self) -> AsyncIterator[tuple[str, str]]:
        """Yield (queue, job id) for every cancel request, over the process's one LISTEN
        connection (NOTIFY settler_cancel) rather than a connection of its own.
        """
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
