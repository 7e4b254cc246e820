"""`PgJobQueue`: the PostgreSQL queue with the same public methods as `JobQueue`."""

from __future__ import annotations

from settler_jobs.queue.pg.control import PgControl
from settler_jobs.queue.pg.reads import PgReader
from settler_jobs.queue.pg.schedules import PgSchedules
from settler_jobs.queue.pg.txn import PgTransactionalProducer
from settler_jobs.queue.pg.usage import PgUsage


class PgJobQueue(PgTransactionalProducer, PgReader, PgSchedules, PgControl, PgUsage):
    """Producer and reader side of every lane on PostgreSQL (same methods as JobQueue)."""
