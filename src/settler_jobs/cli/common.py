"""What every `settler-jobs` command shares: running work on the services, exit codes,
the --json and --tenant options, and reading JSON arguments.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import typer

from settler_jobs.config import Settings
from settler_jobs.domain import Tier
from settler_jobs.errors import (
    ConfigError,
    InvalidJob,
    InvalidState,
    NotFound,
    QueueUnavailable,
    QuotaExceeded,
    SettlerError,
)
from settler_jobs.net_guard import Refused

if TYPE_CHECKING:
    from settler_jobs.wiring import Services

T = TypeVar("T")

# Exit codes, one per error family: scripts can tell "fix your input" from "try later".
EXIT_CODES: dict[type[SettlerError], int] = {
    InvalidJob: 4,
    Refused: 4,
    NotFound: 3,
    InvalidState: 6,
    QueueUnavailable: 5,
    ConfigError: 7,
    QuotaExceeded: 8,
}
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
TenantOpt = Annotated[str | None, typer.Option("--tenant", help="Only see this tenant's objects.")]


def fail(message: str, code: int) -> NoReturn:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def run_with_services(work: Callable[[Services], Awaitable[T]], *, migrate: bool = False) -> T:
    from settler_jobs.wiring import open_services

    async def main() -> T:
        async with open_services(Settings(), migrate=migrate) as services:
            return await work(services)

    return call(main())


def call(coro: Coroutine[Any, Any, T]) -> T:
    from settler_jobs.cli import serve

    try:
        return serve.run(coro)
    except SettlerError as exc:
        code = next((c for t, c in EXIT_CODES.items() if isinstance(exc, t)), 1)
        fail(str(exc), code)
    except ValueError as exc:  # validation of arguments deeper down
        fail(str(exc), 4)


async def audit_change(
    services: Services,
    *,
    action: str,
    tenant_id: str | None,
    target: tuple[str, str | None],
    actor: str = "cli",
    details: dict[str, Any] | None = None,
) -> None:
    """Audit a change the command made (already committed); a failure only warns."""
    from settler_jobs.audit import record_audit_now

    try:
        await record_audit_now(
            services.sessions,
            actor=actor,
            tenant_id=tenant_id,
            action=action,
            target=target,
            details=details,
        )
    except Exception as exc:
        typer.secho(f"warning: audit log not written: {exc}", fg=typer.colors.YELLOW, err=True)


def parse_data(raw: str | None) -> dict[str, Any]:
    if raw is None:
        return {}
    try:
        text = Path(raw[1:]).read_text() if raw.startswith("@") else raw
    except (OSError, UnicodeDecodeError) as exc:
        fail(f"cannot read --data file: {exc}", 4)
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        fail(f"--data is not valid JSON: {exc}", 4)
    if not isinstance(data, dict):
        fail("--data must be a JSON object", 4)
    return data


def parse_tier(raw: str) -> Tier:
    """A tier name from the command line; exit 4 naming the choices if unknown."""
    try:
        return Tier.parse(raw)
    except ValueError as exc:
        fail(str(exc), 4)
