"""`settler-jobs cache`: warm and read the per-tenant KPI snapshots."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer

from settler_jobs.cli.common import JsonOpt, run_with_services
from settler_jobs.cli.output import emit

if TYPE_CHECKING:
    from settler_jobs.wiring import Services

app = typer.Typer(help="Per-tenant KPI snapshots cached in Redis.", no_args_is_help=True)


@app.command("warm")
def warm(
    tenant: Annotated[
        str | None, typer.Option(help="Only this tenant (default: active ones).")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Compute and cache KPI snapshots now."""
    from settler_jobs.tenants import kpi

    async def work(services: Services) -> dict[str, Any]:
        targets = [tenant] if tenant is not None else None
        return await kpi.warm(services.redis_queue(), services.settings, datetime.now(UTC), targets)

    report = run_with_services(work)
    if as_json:
        emit(report)
    else:
        typer.echo(f"warmed {report['tenants']} tenant(s); scanned {report['scanned']} jobs")


@app.command("show")
def show(
    tenant: Annotated[str, typer.Option("--tenant", help="The tenant whose snapshot to show.")],
    as_json: JsonOpt = False,
) -> None:
    """A tenant's KPI snapshot and recent jobs (computed and cached on a miss)."""
    from settler_jobs.tenants import kpi

    async def work(services: Services) -> dict[str, Any]:
        now = datetime.now(UTC)
        return {
            "kpi": await kpi.kpi_snapshot(services.redis_queue(), services.settings, tenant, now),
            "recent": await kpi.recent_jobs(services.redis_queue(), services.settings, tenant, now),
        }

    result = run_with_services(work)
    if as_json:
        emit(result)
        return
    snapshot, recent = result["kpi"], result["recent"]
    typer.echo(f"tenant {tenant} at {snapshot['generatedAt']}")
    for state, per_kind in snapshot["jobs"].items():
        total = sum(per_kind.values())
        detail = ", ".join(f"{k} {n}" for k, n in sorted(per_kind.items()))
        typer.echo(f"  {state}: {total}" + (f" ({detail})" if detail else ""))
    for window, rate in snapshot["failureRate"].items():
        shown = "-" if rate["rate"] is None else f"{rate['rate']:.1%}"
        typer.echo(f"  failure rate {window}: {shown} of {rate['completed'] + rate['failed']}")
    age = snapshot["oldestWaitingAgeS"]
    typer.echo(f"  oldest waiting: {'-' if age is None else f'{age:.0f}s'}")
    typer.echo(f"  recent jobs: {len(recent['jobs'])}")
