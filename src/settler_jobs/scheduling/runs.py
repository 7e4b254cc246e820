"""The run log of system jobs: one `schedule_runs` row per execution, with its report.

`recorded` wraps a run: a `running` row is committed first (so a crash leaves a
visible trace), then the outcome and report replace it. Readers get frozen
`ScheduleRun` values.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from settler_jobs.domain import failure_reason
from settler_jobs.storage.schedule_tables import ScheduleRunRow, new_run_id

MAX_REPORT_BYTES: Final = 64_000
MAX_ERROR: Final = 2000

Sessions = async_sessionmaker[AsyncSession]
Report = dict[str, Any]


@dataclass(frozen=True, slots=True)
class ScheduleRun:
    """One execution of a scheduled (or on-demand) system job."""

    id: str
    schedule_id: str
    trigger: str
    job_id: str | None
    started_at: datetime
    finished_at: datetime | None
    status: str
    report: Report | None
    error: str | None


def _run(row: ScheduleRunRow) -> ScheduleRun:
    return ScheduleRun(
        id=row.id,
        schedule_id=row.schedule_id,
        trigger=row.trigger,
        job_id=row.job_id,
        started_at=row.started_at,
        finished_at=row.finished_at,
        status=row.status,
        report=row.report,
        error=row.error,
    )


def _bounded(report: Report) -> Report:
    """The report as stored: JSON-safe, and cut to a summary if it is too large."""
    text = json.dumps(report, default=str)
    if len(text) <= MAX_REPORT_BYTES:
        loaded: Report = json.loads(text)
        return loaded
    return {"truncated": True, "size": len(text)}


async def recorded(
    sessions: Sessions,
    work: Callable[[], Awaitable[Report]],
    *,
    schedule_id: str,
    trigger: str,
    job_id: str | None,
    now: Callable[[], datetime],
) -> Report:
    """Run `work`, logging it as a run of `schedule_id`; its report is returned and stored.

    A failure is stored with its reason and re-raised.
    """
    run_id = new_run_id()
    async with sessions() as session, session.begin():
        session.add(
            ScheduleRunRow(
                id=run_id,
                schedule_id=schedule_id,
                trigger=trigger,
                job_id=job_id,
                started_at=now(),
                status="running",
            )
        )
    try:
        report = await work()
    except BaseException as exc:
        await _finish(sessions, run_id, "failed", None, failure_reason(exc)[:MAX_ERROR], now())
        raise
    await _finish(sessions, run_id, "succeeded", _bounded(report), None, now())
    return report


async def _finish(
    sessions: Sessions,
    run_id: str,
    status: str,
    report: Report | None,
    error: str | None,
    finished_at: datetime,
) -> None:
    async with sessions() as session, session.begin():
        await session.execute(
            update(ScheduleRunRow)
            .where(ScheduleRunRow.id == run_id)
            .values(status=status, report=report, error=error, finished_at=finished_at)
        )


async def last_runs(
    session: AsyncSession, schedule_ids: Iterable[str], *, trigger: str | None = None
) -> dict[str, ScheduleRun]:
    """The latest run of each schedule (optionally of one trigger), by schedule id."""
    out: dict[str, ScheduleRun] = {}
    for schedule_id in schedule_ids:
        query = select(ScheduleRunRow).where(ScheduleRunRow.schedule_id == schedule_id)
        if trigger is not None:
            query = query.where(ScheduleRunRow.trigger == trigger)
        row = await session.scalar(query.order_by(ScheduleRunRow.started_at.desc()).limit(1))
        if row is not None:
            out[schedule_id] = _run(row)
    return out


async def list_runs(
    session: AsyncSession, schedule_id: str, *, limit: int = 50
) -> list[ScheduleRun]:
    """A schedule's runs, newest first."""
    rows = await session.scalars(
        select(ScheduleRunRow)
        .where(ScheduleRunRow.schedule_id == schedule_id)
        .order_by(ScheduleRunRow.started_at.desc())
        .limit(max(1, min(limit, 500)))
    )
    return [_run(row) for row in rows]
