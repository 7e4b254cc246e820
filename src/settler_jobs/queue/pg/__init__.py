"""The PostgreSQL queue engine: bullmq's postgres backend tables and SQL functions, with
Settler's submit path, fairness state and worker lane on top (`PgJobQueue`, `PgLaneWorker`).
"""

from __future__ import annotations

from settler_jobs.queue.pg.jobs import PgJobQueue
from settler_jobs.queue.pg.lane import PgLaneWorker
from settler_jobs.queue.pg.pool import PgPool

__all__ = ["PgJobQueue", "PgLaneWorker", "PgPool"]
