"""`settler-jobs schedules`: the scheduled system jobs, their last and next runs."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any

import typer

from settler_jobs.cli.common import JsonOpt, run_with_services
from settler_jobs.cli.output import emit, emit_rows

if TYPE_CHECKING:
    from settler_jobs.scheduling.runs import ScheduleRun
    from settler_jobs.wiring import Services

app = typer.Typer(help="Scheduled system jobs: retention, webhook sweep, cache warming.")


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat(timespec="seconds") if moment else None


async def _status(services: Services) -> list[dict[str, Any]]:
    from settler_jobs.scheduling import plan as schedules
    from settler_jobs.scheduling import runs as schedule_runs

    now = datetime.now(UTC)
    grace = timedelta(seconds=services.settings.schedule_missed_grace_s)
    configured = schedules.configured(services.settings)
    ids = [s.id for s in configured]
    infos = {i.id: i for i in await services.queue.list_schedules()}
    async with services.sessions() as session:
        last = await schedule_runs.last_runs(session, ids)
        last_scheduled = await schedule_runs.last_runs(session, ids, trigger="schedule")
    rows = []
    for s in configured:
        info = infos.get(s.id)
        run = last.get(s.id)
        next_ms = info.next_run_ms if info else None
        rows.append(
            {
                "id": s.id,
                "kind": s.kind,
                "pattern": s.pattern or "disabled",
                "tz": schedules.TIMEZONE,
                "registered": info is not None,
                "lastRun": _iso(run.started_at) if run else None,
                "lastStatus": run.status if run else None,
                "lastTrigger": run.trigger if run else None,
                "nextRun": _iso(datetime.fromtimestamp(next_ms / 1000, UTC)) if next_ms else None,
                "missed": schedules.missed_reason(s, info, last_scheduled.get(s.id), now, grace),
            }
        )
    return rows


@app.command("list")
def list_schedules(as_json: JsonOpt = False) -> None:
    """Each schedule: pattern, last run (time, status), next run, and a missed-run flag."""
    rows = run_with_services(_status, migrate=True)
    if as_json:
        emit(rows)
        return
    emit_rows(
        [
            {
                "schedule": r["id"],
                "pattern (UTC)": r["pattern"],
                "last run": f"{r['lastRun']} {r['lastStatus']}" if r["lastRun"] else "-",
                "next run": r["nextRun"] or "-",
                "missed": r["missed"] or "no",
            }
            for r in rows
        ],
        False,
    )


@app.command("runs")
def runs(
    schedule_id: str,
    limit: Annotated[int, typer.Option(min=1, max=500)] = 20,
    as_json: JsonOpt = False,
) -> None:
    """The latest runs of one schedule with their reports."""
    from settler_jobs.scheduling import runs as schedule_runs

    async def work(services: Services) -> list[ScheduleRun]:
        async with services.sessions() as session:
            return await schedule_runs.list_runs(session, schedule_id, limit=limit)

    found = run_with_services(work, migrate=True)
    if as_json:
        emit([dataclasses.asdict(r) for r in found])
        return
    emit_rows(
        [
            {
                "started": _iso(r.started_at),
                "finished": _iso(r.finished_at) or "-",
                "status": r.status,
                "trigger": r.trigger,
                "job": r.job_id or "-",
                "error": r.error or "-",
            }
            for r in found
        ],
        False,
    )
