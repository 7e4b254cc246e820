"""The PostgreSQL queue engine: bullmq's PostgreSQL backend tables and functions, read
and driven with SQL on our own connections. `PgJobQueue` has `JobQueue`'s methods.
"""

from __future__ import annotations

from settler_jobs.queue.pg.jobs import PgJobQueue
from settler_jobs.queue.pg.pool import PgPool

__all__ = ["PgJobQueue", "PgPool"]
