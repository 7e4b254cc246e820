"""`settler-jobs`: run the system, submit and inspect jobs, triage dead letters."""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer

from settler_jobs import logs
from settler_jobs.cli import alerts as cli_alerts
from settler_jobs.cli import cache as cli_cache
from settler_jobs.cli import email as cli_email
from settler_jobs.cli import exports as cli_exports
from settler_jobs.cli import reconciliations as cli_reconciliations
from settler_jobs.cli import retention as cli_retention
from settler_jobs.cli import schedules as cli_schedules
from settler_jobs.cli import tenants as cli_tenants
from settler_jobs.cli import webhooks as cli_webhooks
from settler_jobs.cli.common import (
    JsonOpt,
    TenantOpt,
    audit_change,
    call,
    fail,
    parse_data,
    run_with_services,
)
from settler_jobs.cli.output import (
    emit,
    emit_counts,
    emit_dlq,
    emit_job,
    emit_jobs,
    emit_rows,
    emit_usage,
)
from settler_jobs.config import Settings
from settler_jobs.domain import DlqStatus, JobState, PriorityClass, Tier

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from settler_jobs.dlq.store import DlqEntry
    from settler_jobs.records import Submitted, TenantUsage
    from settler_jobs.wiring import Services

# Heavy modules (SQLAlchemy, Alembic, bullmq) load inside the commands that need them,
# so `--help` and argument errors answer at once.

T = TypeVar("T")
app = typer.Typer(help=__doc__, no_args_is_help=True, pretty_exceptions_enable=False)
job_app = typer.Typer(help="Inspect and steer single jobs.", no_args_is_help=True)
dlq_app = typer.Typer(help="Dead-letter queue: review, retry, resolve.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
app.add_typer(job_app, name="job")
app.add_typer(dlq_app, name="dlq")
app.add_typer(db_app, name="db")
app.add_typer(cli_webhooks.app, name="webhooks")
app.add_typer(cli_reconciliations.app, name="reconciliations")
app.add_typer(cli_schedules.app, name="schedules")
app.add_typer(cli_cache.app, name="cache")
app.add_typer(cli_retention.app, name="retention")
app.add_typer(cli_email.app, name="email")
app.add_typer(cli_tenants.tenants_app, name="tenants")
app.add_typer(cli_tenants.keys_app, name="keys")
app.add_typer(cli_exports.app, name="exports")
app.add_typer(cli_alerts.app, name="alerts")


def _kinds(raw: str | None) -> list[str] | None:
    return [k.strip() for k in raw.split(",") if k.strip()] if raw else None


@app.command()
def up(
    kinds: Annotated[str | None, typer.Option(help="Comma-separated kinds (default all).")] = None,
    api: Annotated[bool, typer.Option(help="Serve the HTTP API (SETTLER_API_PORT).")] = True,
) -> None:
    """Start everything on this machine: Redis (embedded unless REDIS_URL), database, workers,
    and the HTTP API."""
    from settler_jobs.cli import serve

    logs.setup()
    call(serve.serve(Settings(), _kinds(kinds), migrate=True, api=api))


@app.command("api")
def api_command() -> None:
    """Serve only the HTTP API (uvicorn) on SETTLER_API_HOST:SETTLER_API_PORT."""
    from settler_jobs.api.server import serve_api

    logs.setup()
    call(serve_api(Settings()))


@app.command()
def worker(
    kinds: Annotated[str | None, typer.Option(help="Comma-separated kinds (default all).")] = None,
) -> None:
    """Run workers for the given kinds until SIGTERM/SIGINT (then finish in-flight jobs)."""
    from settler_jobs.cli import serve

    logs.setup()
    call(serve.serve(Settings(), _kinds(kinds), migrate=False))


@app.command()
def submit(
    kind: str,
    tenant: Annotated[str, typer.Option(help="Tenant id.")],
    tier: Annotated[str, typer.Option(help="free, starter, growth (pro), scale, enterprise.")],
    priority: Annotated[str | None, typer.Option(help="LOW, NORMAL, HIGH, CRITICAL.")] = None,
    data: Annotated[str | None, typer.Option(help="JSON object, or @file.")] = None,
    idempotency_key: Annotated[str | None, typer.Option(help="Same key, same job.")] = None,
    delay: Annotated[float, typer.Option(help="Seconds before the job may start.")] = 0.0,
    attempts: Annotated[int | None, typer.Option(help="Override the kind's attempts.")] = None,
    backoff: Annotated[float | None, typer.Option(help="First retry delay in seconds.")] = None,
    timeout: Annotated[float | None, typer.Option(help="Seconds per attempt.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Submit one job; prints its id (with --json: id, queue, state, created)."""
    from settler_jobs.records import Submission

    try:
        sub = Submission(
            kind=kind,
            data=parse_data(data),
            tenant_id=tenant,
            tier=Tier.parse(tier),
            priority=PriorityClass.parse(priority) if priority else None,
            delay_s=delay,
            idempotency_key=idempotency_key,
            attempts=attempts,
            timeout_s=timeout,
        )
    except ValueError as exc:
        fail(str(exc), 4)
    result = run_with_services(lambda s: s.queue.submit(sub))
    if as_json:
        emit({**result.job.as_dict(), "created": result.created})
    else:
        typer.echo(result.job.id)


@job_app.command("show")
def job_show(job_id: str, tenant: TenantOpt = None, as_json: JsonOpt = False) -> None:
    """Show one job: state, progress, attempts, result or failure."""
    record = run_with_services(lambda s: s.queue.get(job_id, tenant_id=tenant))
    emit_job(record, as_json)


@job_app.command("list")
def job_list(
    kind: Annotated[str | None, typer.Option()] = None,
    state: Annotated[JobState | None, typer.Option()] = None,
    tenant: TenantOpt = None,
    limit: Annotated[int, typer.Option(min=1, max=500)] = 50,
    as_json: JsonOpt = False,
) -> None:
    """List the newest jobs, optionally by kind, state and tenant."""
    records = run_with_services(
        lambda s: s.queue.list_jobs(kind=kind, state=state, tenant_id=tenant, limit=limit)
    )
    emit_jobs(records, as_json)


@job_app.command("cancel")
def job_cancel(job_id: str, tenant: TenantOpt = None, as_json: JsonOpt = False) -> None:
    """Cancel a job: waiting ones are removed, a running one is interrupted."""
    state = run_with_services(lambda s: s.queue.cancel(job_id, tenant_id=tenant))
    message = "cancelled" if state is JobState.CANCELLED else "cancel requested (running)"
    emit({"id": job_id, "result": message}) if as_json else typer.echo(message)


@job_app.command("retry")
def job_retry(job_id: str, tenant: TenantOpt = None, as_json: JsonOpt = False) -> None:
    """Run a failed job again with fresh attempts."""
    emit_job(run_with_services(lambda s: s.queue.retry(job_id, tenant_id=tenant)), as_json)


@app.command()
def status(
    tenant: Annotated[
        str | None,
        typer.Option("--tenant", help="One tenant's fair share: waiting/quota, running/cap."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Counts per queue and state, and the oldest waiting job's age (or one tenant's usage)."""
    if tenant is None:
        emit_counts(run_with_services(lambda s: s.queue.counts()), as_json)
        return
    tenant_id = tenant

    async def usage(services: Services) -> TenantUsage:
        from settler_jobs.tenants.directory import TenantDirectory

        known = await TenantDirectory(services.sessions).get_tenant(tenant_id)
        return await services.queue.tenant_usage(known.id, known.tier)

    emit_usage(run_with_services(usage, migrate=True), as_json)


@app.command()
def pause(kind: str) -> None:
    """Stop every worker from starting new jobs of KIND (both lanes); running ones finish."""
    run_with_services(lambda s: s.queue.pause(kind))
    typer.echo(f"{kind} paused")


@app.command()
def resume(kind: str) -> None:
    """Let workers start jobs of KIND again."""
    run_with_services(lambda s: s.queue.resume(kind))
    typer.echo(f"{kind} resumed")


@app.command("secret-key")
def secret_key() -> None:
    """Print a fresh application key for SETTLER_SECRET_KEY (nothing is stored)."""
    from settler_jobs.secrets_box import SecretBox

    typer.echo(SecretBox.generate_key())


@app.command()
def kinds(as_json: JsonOpt = False) -> None:
    """The registered job kinds with their lanes and defaults."""
    from settler_jobs.registry import default_registry

    rows = [
        {
            "kind": k.name,
            "queue": k.queue,
            "expressQueue": k.express_queue,
            "priority": k.priority.value,
            "concurrency": k.concurrency,
            "attempts": k.retry.attempts,
            "backoffS": float(k.retry.base_delay_s),
            "timeoutS": float(k.timeout_s),
            "execution": k.execution.value,
        }
        for k in default_registry()
    ]
    emit_rows(rows, as_json)


@dlq_app.command("list")
def dlq_list(
    tenant: TenantOpt = None,
    kind: Annotated[str | None, typer.Option()] = None,
    state: Annotated[DlqStatus | None, typer.Option("--status")] = None,
    limit: Annotated[int, typer.Option(min=1, max=500)] = 50,
    before: Annotated[str | None, typer.Option(help="Entry id to page after.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """List dead letters, newest first."""
    from settler_jobs.dlq import store as dlq

    async def work(s: Services) -> list[DlqEntry]:
        async with s.sessions() as session:
            return await dlq.list_entries(
                session, tenant_id=tenant, kind=kind, status=state, limit=limit, before=before
            )

    emit_dlq(run_with_services(work, migrate=True), as_json)


@dlq_app.command("show")
def dlq_show(entry_id: str, tenant: TenantOpt = None, as_json: JsonOpt = False) -> None:
    """Show one dead letter with its error and stack."""
    from settler_jobs.dlq import store as dlq

    async def work(s: Services) -> DlqEntry:
        async with s.sessions() as session:
            return await dlq.get_entry(session, entry_id, tenant_id=tenant)

    emit_dlq([run_with_services(work, migrate=True)], as_json, detail=True)


@dlq_app.command("retry")
def dlq_retry(
    entry_id: str,
    data: Annotated[str | None, typer.Option(help="Edited data: JSON object or @file.")] = None,
    actor: Annotated[str, typer.Option(help="Who is acting (kept in the notes).")] = "cli",
    tenant: TenantOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Re-enqueue a dead letter as a new job, linked to it."""
    from settler_jobs.dlq import capture as dead_letters

    edited = parse_data(data) if data is not None else None

    async def work(s: Services) -> tuple[DlqEntry, Submitted]:
        entry, submitted = await dead_letters.retry_entry(
            s.queue, s.sessions, entry_id, actor=actor, data=edited, tenant_id=tenant
        )
        await audit_change(
            s,
            action="dlq.retry",
            tenant_id=entry.tenant_id,
            target=("dlq_entry", entry.id),
            actor=actor,
            details={"newJobId": submitted.job.id, "edited": edited is not None},
        )
        return entry, submitted

    entry, submitted = run_with_services(work, migrate=True)
    if as_json:
        emit({"entry": entry.id, "status": entry.status.value, "jobId": submitted.job.id})
    else:
        typer.echo(submitted.job.id)


def _change_entry(
    change: Callable[[AsyncSession, datetime], Awaitable[DlqEntry]],
    as_json: bool,
    action: str,
    actor: str,
) -> None:
    from settler_jobs.audit import record_audit

    async def work(s: Services) -> DlqEntry:
        async with s.sessions() as session, session.begin():
            entry = await change(session, datetime.now(UTC))
            target = ("dlq_entry", entry.id)
            await record_audit(
                session, actor=actor, tenant_id=entry.tenant_id, action=action, target=target
            )
        return entry

    try:
        emit_dlq([run_with_services(work, migrate=True)], as_json, detail=True)
    except ValueError as exc:
        fail(str(exc), 4)


@dlq_app.command("resolve")
def dlq_resolve(
    entry_id: str,
    note: Annotated[str, typer.Option(help="Why it is resolved.")],
    actor: Annotated[str, typer.Option()] = "cli",
    tenant: TenantOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Mark a dead letter resolved with a note."""
    from settler_jobs.dlq import store as dlq

    _change_entry(
        lambda session, now: dlq.resolve(
            session, entry_id, note=note, actor=actor, now=now, tenant_id=tenant
        ),
        as_json,
        "dlq.resolve",
        actor,
    )


@dlq_app.command("note")
def dlq_note(
    entry_id: str,
    note: Annotated[str, typer.Option(help="The note to add.")],
    actor: Annotated[str, typer.Option()] = "cli",
    tenant: TenantOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Add a note to a dead letter without changing its status."""
    from settler_jobs.dlq import store as dlq

    _change_entry(
        lambda session, now: dlq.add_note(
            session, entry_id, note=note, actor=actor, now=now, tenant_id=tenant
        ),
        as_json,
        "dlq.note",
        actor,
    )


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply all database migrations."""
    settings = Settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    from settler_jobs.storage.migrate import upgrade_async

    call(upgrade_async(settings.effective_database_url))
    typer.echo("database is up to date")


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
