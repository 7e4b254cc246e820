"""`settler-jobs reconciliations`: upload sources, define, run, and page through results."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from settler_jobs.cli.common import JsonOpt, fail, parse_data, parse_tier, run_with_services
from settler_jobs.cli.output import emit, emit_rows
from settler_jobs.errors import NotFound

if TYPE_CHECKING:
    from settler_jobs.reconcile.service import Reconciliations
    from settler_jobs.reconcile.store import Definition, Run
    from settler_jobs.wiring import Services

app = typer.Typer(
    help="Reconciliations: match two datasets of money movements.", no_args_is_help=True
)
Tenant = Annotated[str, typer.Option("--tenant", help="The tenant whose objects these are.")]
RESULT_SETS = ("matches", "discrepancies", "unmatched-source", "unmatched-target")


def _recs(work: Any) -> Any:

    async def run(services: Services) -> Any:
        return await work(services.reconciliations)

    return run_with_services(run, migrate=True)


def _definition_row(d: Definition) -> dict[str, Any]:
    return {
        "id": d.id,
        "name": d.name,
        "source": d.source.get("kind", "?"),
        "target": d.target.get("kind", "?"),
        "created": d.created_at.isoformat(timespec="seconds"),
    }


def _run_row(r: Run) -> dict[str, Any]:
    return {
        "run": r.id,
        "definition": r.definition_id,
        "status": r.status,
        "progress": f"{r.progress:.0%}",
        "matched": r.matched,
        "discrepancies": r.discrepancies,
        "unmatched": f"{r.unmatched_source}/{r.unmatched_target}",
        "duration ms": r.duration_ms if r.duration_ms is not None else "-",
    }


@app.command("upload")
def upload(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True)],
    tenant: Tenant,
    name: Annotated[str | None, typer.Option(help="Stored name (default: the file's).")] = None,
) -> None:
    """Store a CSV, JSONL or Parquet file for the tenant's file sources."""
    stored = _recs(lambda r: r.upload(tenant, name or file.name, file))
    typer.echo(stored)


@app.command("create")
def create(
    tenant: Tenant,
    spec: Annotated[
        str, typer.Option(help='JSON object or @file: {"name", "source", "target", "rules"}.')
    ],
    as_json: JsonOpt = False,
) -> None:
    """Define a reconciliation: a source, a target and the matching rules."""
    body = parse_data(spec)
    name = body.get("name")
    if not isinstance(name, str) or not isinstance(body.get("source"), dict):
        fail('the spec needs "name", "source" and "target" objects (and optional "rules")', 4)
    if not isinstance(body.get("target"), dict):
        fail('the spec needs a "target" object', 4)
    rules = body.get("rules") or {}
    definition = _recs(
        lambda r: r.create(tenant, name, source=body["source"], target=body["target"], rules=rules)
    )
    if as_json:
        emit(dataclasses.asdict(definition))
    else:
        emit_rows([_definition_row(definition)], False)


@app.command("run")
def run(
    definition_id: str,
    tenant: Tenant,
    tier: Annotated[str, typer.Option(help="The tenant's tier: sets the job's priority.")] = (
        "starter"
    ),
    idempotency_key: Annotated[str | None, typer.Option()] = None,
    as_json: JsonOpt = False,
) -> None:
    """Run a definition (as a job); prints the job id."""
    tier_value = parse_tier(tier)
    submitted = _recs(
        lambda r: r.run(tenant, definition_id, tier=tier_value, idempotency_key=idempotency_key)
    )
    if as_json:
        emit({"jobId": submitted.job.id, "queue": submitted.job.queue})
    else:
        typer.echo(submitted.job.id)


@app.command("list")
def list_all(
    tenant: Tenant,
    definition: Annotated[str | None, typer.Option(help="Only this definition's runs.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=500)] = 20,
    as_json: JsonOpt = False,
) -> None:
    """The tenant's definitions and their latest runs."""

    async def work(r: Reconciliations) -> tuple[list[Definition], list[Run]]:
        runs = await r.list_runs(tenant, definition_id=definition, limit=limit)
        return await r.list_definitions(tenant), runs

    definitions, runs = _recs(work)
    if as_json:
        emit(
            {
                "definitions": [dataclasses.asdict(d) for d in definitions],
                "runs": [dataclasses.asdict(x) for x in runs],
            }
        )
        return
    emit_rows([_definition_row(d) for d in definitions], False)
    emit_rows([_run_row(x) for x in runs], False)


@app.command("show")
def show(run_or_definition_id: str, tenant: Tenant, as_json: JsonOpt = False) -> None:
    """A run (status, progress, counts, totals per currency), or a definition."""

    async def work(r: Reconciliations) -> Any:
        try:
            return await r.get_run(tenant, run_or_definition_id)
        except NotFound:
            return await r.get_definition(tenant, run_or_definition_id)

    found = _recs(work)
    if as_json:
        emit(dataclasses.asdict(found))
        return
    emit_rows([{"field": k, "value": v} for k, v in dataclasses.asdict(found).items()], False)


@app.command("results")
def show_results(
    run_id: str,
    tenant: Tenant,
    set_: Annotated[str, typer.Option("--set", help=", ".join(RESULT_SETS))] = "matches",
    after: Annotated[int, typer.Option(help="Position to page after (from the last page).")] = -1,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 100,
    as_json: JsonOpt = False,
) -> None:
    """One page of a run's matches, discrepancies or unmatched items."""
    if set_ not in RESULT_SETS:
        fail(f"--set must be one of {', '.join(RESULT_SETS)}", 4)
    page = _recs(lambda r: r.results(tenant, run_id, set_, after=after, limit=limit))
    rows = [dataclasses.asdict(item) for item in page.items]
    if as_json:
        emit({"items": rows, "nextAfter": page.next_after})
        return
    emit_rows(rows, False)
    if page.next_after is not None:
        typer.echo(f"more: --after {page.next_after}")
