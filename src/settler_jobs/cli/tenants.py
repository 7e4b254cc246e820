"""`settler-jobs tenants` and `settler-jobs keys`: tenants, their tiers and API keys.

A key is printed once, when created; only its hash is stored. Revocation takes effect
on the API's next request.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from settler_jobs.cli.common import JsonOpt, parse_tier, run_with_services
from settler_jobs.cli.output import emit, emit_rows

if TYPE_CHECKING:
    from settler_jobs.tenants.directory import ApiKey, Tenant, TenantDirectory
    from settler_jobs.wiring import Services

tenants_app = typer.Typer(help="Tenants and their tiers.", no_args_is_help=True)
keys_app = typer.Typer(
    help="Tenant API keys: create (shown once), list, revoke.", no_args_is_help=True
)

TenantArg = Annotated[str, typer.Argument(help="Tenant id (1-64 of letters, digits, _ . -).")]
TierOpt = Annotated[str, typer.Option(help="free, starter, growth (pro), scale, enterprise.")]


def _directory(work: Any) -> Any:
    """Run `work(TenantDirectory)` on the services (migrating the database first)."""
    from settler_jobs.tenants.directory import TenantDirectory

    async def run(services: Services) -> Any:
        return await work(TenantDirectory(services.sessions))

    return run_with_services(run, migrate=True)


def _when(moment: Any) -> str:
    return moment.isoformat(timespec="seconds") if moment is not None else "-"


def _tenant_row(t: Tenant) -> dict[str, Any]:
    return {
        "id": t.id,
        "name": t.name,
        "tier": t.tier.value,
        "contact": t.contact_email,
        "created": _when(t.created_at),
    }


def _key_row(k: ApiKey) -> dict[str, Any]:
    return {
        "id": k.id,
        "tenant": k.tenant_id,
        "name": k.name,
        "created": _when(k.created_at),
        "revoked": _when(k.revoked_at),
        "last used": _when(k.last_used_at),
    }


def _emit_tenants(tenants: list[Tenant], as_json: bool) -> None:
    rows = [_tenant_row(t) for t in tenants]
    if not as_json:
        rows = [{**row, "contact": row["contact"] or "-"} for row in rows]
    emit(rows) if as_json else emit_rows(rows, False)


@tenants_app.command("create")
def create_tenant(
    tenant_id: TenantArg,
    tier: TierOpt = "free",
    name: Annotated[str, typer.Option(help="A display name.")] = "",
    contact_email: Annotated[
        str | None, typer.Option(help="Where notices go (e.g. an endpoint disabled).")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Register a tenant with a tier."""
    level = parse_tier(tier)
    tenant: Tenant = _directory(
        lambda d: d.create_tenant(tenant_id, level, name=name, contact_email=contact_email)
    )
    _emit_tenants([tenant], as_json)


@tenants_app.command("list")
def list_tenants(as_json: JsonOpt = False) -> None:
    """Every tenant with its tier."""
    _emit_tenants(_directory(lambda d: d.list_tenants()), as_json)


@tenants_app.command("set-tier")
def set_tier(
    tenant_id: TenantArg, tier: Annotated[str, typer.Argument()], as_json: JsonOpt = False
) -> None:
    """Change a tenant's tier; its keys act with it from the next request."""
    level = parse_tier(tier)
    _emit_tenants([_directory(lambda d: d.set_tier(tenant_id, level))], as_json)


@tenants_app.command("set-contact")
def set_contact(
    tenant_id: TenantArg,
    email: Annotated[str, typer.Argument(help="The address; an empty string clears it.")],
    as_json: JsonOpt = False,
) -> None:
    """Set where the tenant's notices are emailed."""
    _emit_tenants([_directory(lambda d: d.set_contact(tenant_id, email or None))], as_json)


@keys_app.command("create")
def create_key(
    tenant: Annotated[str, typer.Option("--tenant", help="The tenant the key acts for.")],
    name: Annotated[str, typer.Option(help="What the key is for.")] = "",
    as_json: JsonOpt = False,
) -> None:
    """Issue an API key; it is printed this once and cannot be shown again."""

    async def work(d: TenantDirectory) -> tuple[ApiKey, str]:
        return await d.create_key(tenant, name=name)

    key, plain = _directory(work)
    if as_json:
        emit({**_key_row(key), "key": plain})
        return
    emit_rows([_key_row(key)], False)
    typer.echo(f"API key (shown once, store it now): {plain}")


@keys_app.command("list")
def list_keys(
    tenant: Annotated[str | None, typer.Option("--tenant", help="Only this tenant's.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """API keys (never their secrets), revoked ones included."""
    rows = [_key_row(k) for k in _directory(lambda d: d.list_keys(tenant))]
    emit(rows) if as_json else emit_rows(rows, False)


@keys_app.command("revoke")
def revoke_key(
    key_id: Annotated[str, typer.Argument(help="The key id (see keys list).")],
    as_json: JsonOpt = False,
) -> None:
    """Revoke a key: the API refuses it from the next request on."""
    key = _directory(lambda d: d.revoke_key(key_id))
    emit(_key_row(key)) if as_json else typer.echo(f"key {key.id} revoked")
