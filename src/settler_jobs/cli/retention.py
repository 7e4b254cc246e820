"""`settler-jobs retention`: run data retention now (or count what it would delete)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer

from settler_jobs.cli.common import JsonOpt, run_with_services
from settler_jobs.cli.output import emit, emit_rows

if TYPE_CHECKING:
    from settler_jobs.wiring import Services

app = typer.Typer(help="Data retention: delete expired data in bounded batches.")


@app.command("run")
def run(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Count only; delete nothing.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Apply every retention target now; the report is stored in the run log."""
    from settler_jobs.retention.targets import retention_run, run_retention
    from settler_jobs.scheduling import plan as schedules
    from settler_jobs.scheduling import runs as schedule_runs

    async def work(services: Services) -> dict[str, Any]:
        now = datetime.now(UTC)
        plan = retention_run(
            services.settings, services.sessions, services.queue, now, dry_run=dry_run
        )
        return await schedule_runs.recorded(
            services.sessions,
            lambda: run_retention(plan),
            schedule_id=schedules.DATA_RETENTION,
            trigger="cli",
            job_id=None,
            now=lambda: datetime.now(UTC),
        )

    report = run_with_services(work, migrate=True)
    if as_json:
        emit(report)
        return
    column = "would delete" if dry_run else "deleted"
    emit_rows(
        [
            {
                "target": t["target"],
                column: t["matched"] if dry_run else t["deleted"],
                "batches": t["batches"],
                "complete": "yes" if t["complete"] else "no (next run continues)",
                "error": t["error"] or "-",
            }
            for t in report["targets"]
        ],
        False,
    )
