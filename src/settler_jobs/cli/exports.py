"""`settler-jobs exports`: request exports, follow them and download their files."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from settler_jobs.cli.common import JsonOpt, fail, parse_data, parse_tier, run_with_services
from settler_jobs.cli.output import emit, emit_rows

if TYPE_CHECKING:
    from settler_jobs.exports.service import Exports
    from settler_jobs.exports.store import Export
    from settler_jobs.wiring import Services

app = typer.Typer(help="Exports: CSV/PDF files of a tenant's data.", no_args_is_help=True)

Tenant = Annotated[str, typer.Option("--tenant", help="The tenant whose exports these are.")]


def _exports(work: Any) -> Any:
    """Run `work(Exports)` on the services (migrating the database first)."""

    async def run(services: Services) -> Any:
        return await work(services.exports)

    return run_with_services(run, migrate=True)


def _row(e: Export) -> dict[str, Any]:
    return {
        "id": e.id,
        "dataset": e.dataset,
        "format": e.format.value,
        "status": e.status.value,
        "rows": e.row_count if e.row_count is not None else "-",
        "bytes": e.size_bytes if e.size_bytes is not None else "-",
        "created": e.created_at.isoformat(timespec="seconds"),
        "expires": e.expires_at.isoformat(timespec="seconds") if e.expires_at else "-",
    }


def _emit(exports: list[Export], as_json: bool, detail: bool = False) -> None:
    if as_json:
        emit(
            [dataclasses.asdict(e) for e in exports]
            if not detail
            else dataclasses.asdict(exports[0])
        )
        return
    emit_rows([_row(e) for e in exports], False)
    if detail:
        e = exports[0]
        typer.echo(f"filters: {e.filters or '{}'}")
        typer.echo(f"sha256: {e.sha256 or '-'}")
        typer.echo(f"storage key: {e.storage_key or '-'}")
        if e.error:
            typer.echo(f"error: {e.error}")


@app.command("datasets")
def datasets(as_json: JsonOpt = False) -> None:
    """What can be exported, with each dataset's columns and filters."""
    from settler_jobs.exports.datasets import dataset_names, get_dataset

    rows = []
    for name in dataset_names():
        ds = get_dataset(name)
        filters = ", ".join(ds.filters_model.model_fields)
        rows.append({"dataset": name, "columns": ", ".join(ds.headers), "filters": filters})
    emit_rows(rows, as_json)


@app.command("create")
def create(
    tenant: Tenant,
    dataset: Annotated[str, typer.Option(help="See `exports datasets`.")],
    fmt: Annotated[str, typer.Option("--format", help="csv or pdf.")] = "csv",
    filters: Annotated[str | None, typer.Option(help="JSON object or @file.")] = None,
    tier: Annotated[str, typer.Option(help="The tenant's tier: sets the job's priority.")] = (
        "starter"
    ),
    actor: Annotated[str, typer.Option(help="Who asks (kept in the audit log).")] = "cli",
    as_json: JsonOpt = False,
) -> None:
    """Request an export; prints its id. A worker generates the file."""
    tier_value = parse_tier(tier)
    parsed = parse_data(filters)
    export = _exports(
        lambda x: x.create_export(tenant, dataset, fmt, parsed, tier_value, actor=actor)
    )
    if as_json:
        emit(dataclasses.asdict(export))
    else:
        typer.echo(export.id)


@app.command("list")
def list_exports(
    tenant: Tenant,
    limit: Annotated[int, typer.Option(min=1, max=500)] = 50,
    as_json: JsonOpt = False,
) -> None:
    """The tenant's exports, newest first."""
    _emit(_exports(lambda x: x.list_exports(tenant, limit=limit)), as_json)


@app.command("show")
def show(export_id: str, tenant: Tenant, as_json: JsonOpt = False) -> None:
    """One export: status, rows, size, sha256, expiry, error."""
    _emit([_exports(lambda x: x.get_export(tenant, export_id))], as_json, detail=True)


@app.command("download")
def download(
    export_id: str,
    tenant: Tenant,
    output: Annotated[str, typer.Option("--output", "-o", help="File path, or - for stdout.")],
) -> None:
    """Write a finished export's file to OUTPUT (replaced only once fully written)."""

    async def work(x: Exports) -> int:
        import asyncio

        handle = await x.open_download(tenant, export_id)
        return await asyncio.to_thread(_copy, handle.chunks(), output)

    size = _exports(work)
    if output != "-":
        typer.echo(f"wrote {size} bytes to {output}", err=True)


def _copy(chunks: Any, output: str) -> int:
    size = 0
    if output == "-":
        for chunk in chunks:
            sys.stdout.buffer.write(chunk)
            size += len(chunk)
        sys.stdout.buffer.flush()
        return size
    target = Path(output)
    partial = target.with_name(target.name + ".part")
    try:
        with partial.open("wb") as out:
            for chunk in chunks:
                out.write(chunk)
                size += len(chunk)
        partial.replace(target)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        fail(f"cannot write {output}: {exc}", 4)
    return size
