"""What the system jobs share: their payload, the system-tenant check and the run log.

Schedulers submit these jobs for the reserved system tenant (`schedules.SYSTEM_TENANT`);
each execution is recorded in `schedule_runs` with its report.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from settler_jobs.context import JobContext
from settler_jobs.errors import PermanentFailure
from settler_jobs.scheduling import runs as schedule_runs
from settler_jobs.scheduling.plan import SYSTEM_TENANT


class ScheduledPayload(BaseModel):
    """A system job's payload: the scheduler that produced it, if any."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    scheduleId: str | None = Field(default=None, pattern=r"^[a-z][a-z0-9-]{0,63}$")


def require_system(ctx: JobContext) -> None:
    """Refuse a system job submitted by an ordinary tenant."""
    if ctx.tenant_id != SYSTEM_TENANT:
        raise PermanentFailure(f"{ctx.kind} jobs run for the system tenant only")


async def run_recorded(
    ctx: JobContext,
    payload: ScheduledPayload,
    work: Callable[[], Awaitable[dict[str, Any]]],
) -> dict[str, Any]:
    """Run `work` as one logged run of the payload's schedule (or of the kind)."""
    return await schedule_runs.recorded(
        ctx.resources.sessions,
        work,
        schedule_id=payload.scheduleId or ctx.kind,
        trigger="schedule" if payload.scheduleId else "job",
        job_id=ctx.job_id,
        now=ctx.resources.now,
    )
