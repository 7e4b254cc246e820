"""Settler Jobs: tenant-aware background jobs on BullMQ queues."""

from settler_jobs.config import Settings
from settler_jobs.domain import JobState, PriorityClass, RetryPolicy, Tier
from settler_jobs.errors import PermanentFailure, RetryLater, SettlerError
from settler_jobs.handlers.context import JobContext
from settler_jobs.kinds import Execution, JobKind, Registry
from settler_jobs.queue import JobQueue, JobRecord, Submission, Submitted

__version__ = "0.1.0"
__all__ = [
    "Execution",
    "JobContext",
    "JobKind",
    "JobQueue",
    "JobRecord",
    "JobState",
    "PermanentFailure",
    "PriorityClass",
    "Registry",
    "RetryLater",
    "RetryPolicy",
    "Settings",
    "SettlerError",
    "Submission",
    "Submitted",
    "Tier",
]
