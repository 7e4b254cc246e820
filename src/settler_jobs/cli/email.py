"""`settler-jobs email`: queue emails, see per-recipient status, read the file outbox."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Annotated, Any

import typer

from settler_jobs.cli.common import (
    EXIT_CODES,
    JsonOpt,
    fail,
    parse_data,
    parse_tier,
    run_with_services,
)
from settler_jobs.cli.output import emit, emit_rows
from settler_jobs.config import Settings
from settler_jobs.errors import NotFound

if TYPE_CHECKING:
    from settler_jobs.wiring import Services

app = typer.Typer(
    help="Email: send templates, see statuses, read the outbox.", no_args_is_help=True
)
outbox_app = typer.Typer(help="The file outbox (SETTLER_EMAIL_PROVIDER=outbox).")
app.add_typer(outbox_app, name="outbox")

Tenant = Annotated[str, typer.Option("--tenant", help="The tenant the email is sent for.")]


@app.command("send")
def send(
    tenant: Tenant,
    to: Annotated[list[str], typer.Option("--to", help="Recipient address (repeat).")],
    template: Annotated[str, typer.Option(help="Template name, e.g. welcome.")],
    data: Annotated[str, typer.Option(help="Template data: a JSON object or @file.")] = "{}",
    tier: Annotated[str, typer.Option(help="The tenant's tier: sets the job's priority.")] = (
        "starter"
    ),
    idempotency_key: Annotated[
        str | None, typer.Option(help="Repeats with this key send nothing twice.")
    ] = None,
    reply_to: Annotated[str | None, typer.Option(help="Reply-To address.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Queue one email job for every --to address; prints the job id."""

    payload, tier_value = parse_data(data), parse_tier(tier)

    async def work(services: Services) -> Any:
        return await services.emails.send(
            tenant,
            to,
            template,
            payload,
            tier=tier_value,
            idempotency_key=idempotency_key,
            reply_to=reply_to,
        )

    request = run_with_services(work)
    if as_json:
        emit(dataclasses.asdict(request))
    else:
        typer.echo(request.job_id)


@app.command("status")
def status(
    tenant: Tenant,
    key: Annotated[str | None, typer.Option("--key", help="One request's idempotency key.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 100,
    as_json: JsonOpt = False,
) -> None:
    """Per-recipient sends of the tenant, newest first."""

    async def work(services: Services) -> Any:
        return await services.emails.status(tenant, key, limit=limit)

    entries = run_with_services(work, migrate=True)
    if as_json:
        emit([dataclasses.asdict(e) for e in entries])
        return
    rows = [
        {
            "key": e.idempotency_key,
            "recipient": e.recipient,
            "template": e.template,
            "status": e.status.value,
            "attempts": e.attempts,
            "updated": e.updated_at.isoformat(timespec="seconds"),
            "error": (e.last_error or "")[:60],
        }
        for e in entries
    ]
    emit_rows(rows, False)


@outbox_app.callback(invoke_without_command=True)
def outbox(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="How many, newest first.")] = 20,
    as_json: JsonOpt = False,
) -> None:
    """List the newest emails in the outbox: name, subject, to, date."""
    if ctx.invoked_subcommand is not None:
        return
    from settler_jobs.emails.outbox import list_outbox

    entries = list_outbox(Settings().outbox_dir, limit=limit)
    if as_json:
        emit([dataclasses.asdict(e) for e in entries])
        return
    emit_rows(
        [{"name": e.name, "subject": e.subject, "to": e.to, "date": e.date} for e in entries],
        False,
    )


@outbox_app.command("show")
def show(
    name: Annotated[str, typer.Argument(help="File name, as `email outbox` lists it.")],
) -> None:
    """Print one outbox email as stored (headers and MIME parts)."""
    from settler_jobs.emails.outbox import read_outbox

    try:
        text = read_outbox(Settings().outbox_dir, name)
    except NotFound as exc:
        fail(str(exc), EXIT_CODES[NotFound])
    typer.echo(text, nl=False)
