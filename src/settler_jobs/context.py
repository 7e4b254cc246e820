"""The typed context every handler receives next to its payload."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, fields
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


_FIELDS = (
    "job_id",
    "kind",
    "queue",
    "tenant_id",
    "tier",
    "priority",
    "attempt",
    "max_attempts",
    "log",
    "resources",
    "report_progress",
)
if tuple(f.name for f in fields(JobContext)) != _FIELDS:  # pragma: no cover
    raise RuntimeError("new_context must set every JobContext field")
_SET = tuple(JobContext.__dict__[name].__set__ for name in _FIELDS)


def new_context(
    job_id: str,
    kind: str,
    queue: str,
    tenant_id: str,
    tier: Tier,
    priority: PriorityClass,
    attempt: int,
    max_attempts: int,
    log: logging.LoggerAdapter[logging.Logger],
    resources: Resources,
    report_progress: ProgressReporter,
) -> JobContext:
    """`JobContext(...)` with every field given in order, built at half the cost (the
    frozen dataclass's `__init__` goes through `object.__setattr__` per field)."""
    ctx: JobContext = object.__new__(JobContext)
    s0, s1, s2, s3, s4, s5, s6, s7, s8, s9, s10 = _SET
    s0(ctx, job_id)
    s1(ctx, kind)
    s2(ctx, queue)
    s3(ctx, tenant_id)
    s4(ctx, tier)
    s5(ctx, priority)
    s6(ctx, attempt)
    s7(ctx, max_attempts)
    s8(ctx, log)
    s9(ctx, resources)
    s10(ctx, report_progress)
    return ctx
