"""What callers hand in and get back: submissions, job records, counts (no I/O)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from settler_jobs.domain import JobState, PriorityClass, Tier


@dataclass(frozen=True, slots=True)
class Submission:
    """A request to run one job of a registered kind for a tenant."""

    kind: str
    data: Mapping[str, Any]
    tenant_id: str
    tier: Tier
    priority: PriorityClass | None = None
    delay_s: float = 0.0
    idempotency_key: str | None = None
    attempts: int | None = None
    backoff_s: float | None = None
    timeout_s: float | None = None


@dataclass(frozen=True, slots=True)
class JobRecord:
    """A job as callers see it."""

    id: str
    queue: str
    kind: str
    state: JobState
    tenant_id: str | None
    tier: str | None
    priority_class: str | None
    bullmq_priority: int
    payload: dict[str, Any]
    progress: Any
    attempts_made: int
    max_attempts: int
    created_at_ms: int
    processed_at_ms: int | None
    finished_at_ms: int | None
    delay_ms: int
    result: Any
    failure_reason: str | None
    stacktrace: tuple[str, ...] = ()
    first_failed_at_ms: int | None = None

    @property
    def express(self) -> bool:
        """True if the job sits in its kind's enterprise express lane."""
        return self.queue != self.kind

    def as_dict(self) -> dict[str, Any]:
        """A JSON-friendly view (state as its name, no stack traces)."""
        return {
            "id": self.id,
            "queue": self.queue,
            "kind": self.kind,
            "state": self.state.value,
            "tenantId": self.tenant_id,
            "tier": self.tier,
            "priorityClass": self.priority_class,
            "priority": self.bullmq_priority,
            "data": self.payload,
            "progress": self.progress,
            "attemptsMade": self.attempts_made,
            "maxAttempts": self.max_attempts,
            "createdAt": self.created_at_ms,
            "processedAt": self.processed_at_ms,
            "finishedAt": self.finished_at_ms,
            "delay": self.delay_ms,
            "result": self.result,
            "failureReason": self.failure_reason,
        }


@dataclass(frozen=True, slots=True)
class Submitted:
    """The job a submission maps to; `created` is False for an idempotent repeat."""

    job: JobRecord
    created: bool


@dataclass(frozen=True, slots=True)
class QueueCounts:
    """Counts per state of one queue, and the age of its oldest waiting job."""

    queue: str
    counts: dict[str, int]
    oldest_waiting_ms: int | None


@dataclass(frozen=True, slots=True)
class ScheduleInfo:
    """A registered job scheduler: which kind it feeds, when, and when it fires next."""

    id: str
    kind: str
    pattern: str | None
    every_ms: int | None
    tz: str | None
    next_run_ms: int | None
    iterations: int
    registered_at_ms: int | None
    data: dict[str, Any]


@dataclass(frozen=True, slots=True)
class TenantBacklog:
    """One tenant's unfinished jobs found by a bounded scan, counted per kind."""

    waiting: dict[str, int]
    delayed: dict[str, int]
    active: dict[str, int]
    oldest_waiting_created_ms: int | None


@dataclass(frozen=True, slots=True)
class LaneUsage:
    """One tenant's share of one lane: waiting (as the quota counts it), running, cap hits."""

    queue: str
    waiting: int
    active: int
    parked: int
    cap_hits: int


@dataclass(frozen=True, slots=True)
class TenantUsage:
    """One tenant's fair-share picture: per-lane usage, its quota and cap (0 = none)."""

    tenant_id: str
    tier: str
    quota: int
    cap: int
    lanes: list[LaneUsage]

    @property
    def waiting(self) -> int:
        """Waiting jobs over all lanes: what the backlog quota is measured against."""
        return sum(lane.waiting for lane in self.lanes)

    @property
    def active(self) -> int:
        """Running jobs over all lanes."""
        return sum(lane.active for lane in self.lanes)

    @property
    def cap_hits(self) -> int:
        """Times a job of the tenant was parked because it was at its cap."""
        return sum(lane.cap_hits for lane in self.lanes)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (CLI --json, API)."""
        return {
            "tenant_id": self.tenant_id,
            "tier": self.tier,
            "quota": self.quota,
            "cap": self.cap,
            "waiting": self.waiting,
            "active": self.active,
            "cap_hits": self.cap_hits,
            "lanes": [
                {
                    "queue": u.queue,
                    "waiting": u.waiting,
                    "active": u.active,
                    "parked": u.parked,
                    "cap_hits": u.cap_hits,
                }
                for u in self.lanes
            ],
        }


@dataclass(frozen=True, slots=True)
class BacklogScan:
    """Unfinished jobs per tenant; `truncated` when a lane held more than the scan read."""

    tenants: dict[str, TenantBacklog]
    scanned: int
    truncated: bool
