"""The BullMQ adapter: the only package that imports `bullmq`.

Above this border everything is snake_case and typed: `JobQueue` submits and reads
jobs, `LaneWorker` runs one queue's jobs through a processor. BullMQ's camelCase
options, id rules and `UnrecoverableError` stop here.

`JobQueue` (jobs.py) is built from producer.py, reads.py, schedules.py and control.py
over base.py; `LaneWorker` (lane.py) runs on the lane loop (lane_loop.py).
"""

from __future__ import annotations

from typing import TypeAlias

from settler_jobs.queue.jobs import JobQueue
from settler_jobs.queue.lane import ActiveJob, AttemptFailed, LaneWorker, where
from settler_jobs.queue.pg import PgJobQueue
from settler_jobs.queue.reads import JobPage

AnyJobQueue: TypeAlias = JobQueue | PgJobQueue
"""The queue of either backend: both have the same public methods and records."""

__all__ = [
    "ActiveJob",
    "AnyJobQueue",
    "AttemptFailed",
    "JobPage",
    "JobQueue",
    "LaneWorker",
    "PgJobQueue",
    "where",
]
