"""Settler Jobs: tenant-aware background jobs on BullMQ queues.

The public names load on first use, so the CLI starts without importing the engine.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from settler_jobs.config import Settings
    from settler_jobs.context import JobContext
    from settler_jobs.domain import JobState, PriorityClass, RetryPolicy, Tier
    from settler_jobs.errors import PermanentFailure, RetryLater, SettlerError
    from settler_jobs.kinds import Execution, JobKind, Registry
    from settler_jobs.queue import JobQueue
    from settler_jobs.records import JobRecord, Submission, Submitted

__version__ = "0.1.0"
_HOMES = {
    "Settings": "config",
    "JobState": "domain",
    "PriorityClass": "domain",
    "RetryPolicy": "domain",
    "Tier": "domain",
    "PermanentFailure": "errors",
    "RetryLater": "errors",
    "SettlerError": "errors",
    "JobContext": "context",
    "Execution": "kinds",
    "JobKind": "kinds",
    "Registry": "kinds",
    "JobQueue": "queue",
    "JobRecord": "records",
    "Submission": "records",
    "Submitted": "records",
}
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


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'settler_jobs' has no attribute {name!r}")
    return getattr(importlib.import_module(f"settler_jobs.{_HOMES[name]}"), name)
