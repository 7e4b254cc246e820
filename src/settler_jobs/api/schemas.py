"""Request and response bodies of the jobs and queues routes (snake_case JSON).

Request models forbid unknown fields, so a body can never smuggle in a tenant or tier.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Final

from pydantic import BaseModel, ConfigDict, Field

from settler_jobs.domain import JobState, PriorityClass
from settler_jobs.records import JobRecord

MAX_BULK: Final = 1000
MAX_DELAY_S: Final = 366 * 86_400


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class JobIn(_Strict):
    """One job to run for the caller's tenant."""

    kind: str = Field(min_length=1, max_length=64, description="A registered job kind.")
    data: dict[str, Any] = Field(default_factory=dict, description="The kind's payload.")
    priority: PriorityClass | None = Field(default=None, description="Default: the kind's.")
    delay_s: float = Field(default=0.0, ge=0, le=MAX_DELAY_S)
    attempts: int | None = Field(default=None, ge=1, le=100)
    backoff_s: float | None = Field(default=None, ge=0, le=86_400)
    timeout_s: float | None = Field(default=None, gt=0, le=86_400)


class BulkJobIn(JobIn):
    """A job in a bulk submission, with its own optional idempotency key."""

    idempotency_key: str | None = Field(default=None, min_length=1, max_length=255)


class BulkIn(_Strict):
    """Up to 1000 jobs, validated together: if one is invalid, none is enqueued."""

    jobs: list[BulkJobIn] = Field(min_length=1, max_length=MAX_BULK)


class JobOut(BaseModel):
    """A job as its tenant sees it; times are Unix milliseconds."""

    id: str
    kind: str
    queue: str
    state: JobState
    tier: str | None
    priority_class: str | None
    priority: int
    data: dict[str, Any]
    progress: Any
    attempts_made: int
    max_attempts: int
    created_at_ms: int
    processed_at_ms: int | None
    finished_at_ms: int | None
    delay_ms: int
    result: Any
    failure_reason: str | None

    @classmethod
    def of(cls, job: JobRecord) -> JobOut:
        """The view of a record."""
        return cls(
            id=job.id,
            kind=job.kind,
            queue=job.queue,
            state=job.state,
            tier=job.tier,
            priority_class=job.priority_class,
            priority=job.bullmq_priority,
            data=job.payload,
            progress=job.progress,
            attempts_made=job.attempts_made,
            max_attempts=job.max_attempts,
            created_at_ms=job.created_at_ms,
            processed_at_ms=job.processed_at_ms,
            finished_at_ms=job.finished_at_ms,
            delay_ms=job.delay_ms,
            result=job.result,
            failure_reason=job.failure_reason,
        )


class SubmittedOut(BaseModel):
    """The job a submission maps to; `created` is False for an idempotent repeat."""

    created: bool
    job: JobOut


class BulkItemOut(BaseModel):
    """One job of a bulk submission, in the order sent."""

    id: str
    state: JobState
    created: bool


class BulkOut(BaseModel):
    """The jobs of a bulk submission."""

    jobs: list[BulkItemOut]


class JobPage(BaseModel):
    """A page of jobs, newest first; `next_offset` is None on the last page."""

    jobs: list[JobOut]
    next_offset: int | None


class ListState(StrEnum):
    """States a job list can be filtered by."""

    WAITING = JobState.WAITING.value
    DELAYED = JobState.DELAYED.value
    ACTIVE = JobState.ACTIVE.value
    COMPLETED = JobState.COMPLETED.value
    FAILED = JobState.FAILED.value


class CancelOut(BaseModel):
    """`cancelled`: removed before it ran; `active`: running, interruption requested."""

    id: str
    state: JobState


class LaneOut(BaseModel):
    """One lane (queue) of a kind."""

    queue: str
    counts: dict[str, int]
    oldest_waiting_ms: int | None


class QueueOut(BaseModel):
    """A kind's counts by state over both lanes, throughput and oldest waiting age."""

    kind: str
    counts: dict[str, int]
    completed_per_min: int
    failed_per_min: int
    oldest_waiting_ms: int | None
    lanes: list[LaneOut]


class PausedOut(BaseModel):
    """A kind after pause or resume."""

    kind: str
    paused: bool
