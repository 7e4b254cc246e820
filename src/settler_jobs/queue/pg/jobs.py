"""`PgJobQueue`: the PostgreSQL queue with the same public methods as `JobQueue`."""

from __future__ import annotations

from settler_jobs.queue.pg.control import PgControl
from settler_jobs.queue.pg.reads import PgReader
from settler_jobs.queue.pg.schedules import PgSchedules
from settler_jobs.queue.pg.usage import PgUsage


class PgJobQueue(PgReader, PgSchedules, PgControl, PgUsage):
    """Reader, schedule, control and usage side of every lane on PostgreSQL.

    The producer part (submit, submit_bulk) comes from the engine's producer module.
    """
