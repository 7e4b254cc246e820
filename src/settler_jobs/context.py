"""The typed context every handler receives next to its payload."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from settler_jobs.domain import PriorityClass, Tier

if TYPE_CHECKING:
    from settler_jobs.resources import Resources

ProgressReporter = Callable[[int | dict[str, Any]], Awaitable[None]]


async def _ignore_progress(_: int | dict[str, Any]) -> None:
    return None


@dataclass(frozen=True, slots=True)
class JobContext:
    """Who asked for the job, which attempt this is, and handles to report back."""

    job_id: str
    kind: str
    queue: str
    tenant_id: str
    tier: Tier
    priority: PriorityClass
    attempt: int
    """1-based number of this attempt."""
    max_attempts: int
    log: logging.LoggerAdapter[logging.Logger]
    resources: Resources
    """Database sessions, job submitter, secret box, guarded HTTP client, settings."""
    report_progress: ProgressReporter = _ignore_progress
    """Store progress (0-100 or a small dict) on the job; visible through `job show`."""

    @property
    def is_last_attempt(self) -> bool:
        """True when a failure now sends the job to the dead-letter queue."""
        return self.attempt >= self.max_attempts
