"""`settler-jobs alerts`: the alerts the workers' built-in evaluator holds as firing."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import typer

from settler_jobs.cli.common import JsonOpt, run_with_services
from settler_jobs.cli.output import emit_rows

if TYPE_CHECKING:
    from settler_jobs.wiring import Services

app = typer.Typer(help="Operator alerts: queue backlog, failures, stuck jobs, schedules, DLQ.")


async def _active(services: Services) -> list[dict[str, Any]]:
    from settler_jobs.alerts.evaluator import active_alerts

    alerts = await active_alerts(services.redis_queue().client, services.settings)
    return [alert.to_dict() for alert in alerts]


@app.command("list")
def list_alerts(as_json: JsonOpt = False) -> None:
    """Firing alerts: name, labels, value against threshold, since, last seen, notified."""
    rows = run_with_services(_active)
    if as_json:
        emit_rows(rows, True)
        return
    emit_rows(
        [
            {
                "alert": r["alert"],
                "state": r["state"],
                "labels": ",".join(f"{k}={v}" for k, v in sorted(r["labels"].items())) or "-",
                "value": f"{r['value']:g} (> {r['threshold']:g})",
                "since": r["since"],
                "last seen": r["last_seen"],
                "notified": r["notified_at"] or "no",
                "summary": r["summary"],
            }
            for r in rows
        ],
        False,
    )
