"""`settler-jobs webhooks`: endpoints, events and the delivery log, one tenant at a time."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from typing import TYPE_CHECKING, Annotated, Any

import typer

from settler_jobs.cli.common import (
    JsonOpt,
    audit_change,
    fail,
    parse_data,
    parse_tier,
    run_with_services,
)
from settler_jobs.cli.output import emit, emit_rows

if TYPE_CHECKING:
    from settler_jobs.webhooks.service import Webhooks
    from settler_jobs.webhooks.values import Delivery, Endpoint
    from settler_jobs.wiring import Services

app = typer.Typer(help="Webhooks: endpoints, events and deliveries.", no_args_is_help=True)
endpoints_app = typer.Typer(help="Receivers of a tenant's events.", no_args_is_help=True)
deliveries_app = typer.Typer(help="The delivery log: inspect, redeliver.", no_args_is_help=True)
app.add_typer(endpoints_app, name="endpoints")
app.add_typer(deliveries_app, name="deliveries")

Tenant = Annotated[str, typer.Option("--tenant", help="The tenant whose objects these are.")]
EventTypes = Annotated[
    list[str] | None,
    typer.Option("--event", help="Event type to subscribe to (repeat; default all)."),
]
TierOpt = Annotated[str, typer.Option(help="The tenant's tier: sets the jobs' priority.")]


def _hooks(work: Any, audit: tuple[str, str, str, Any] | None = None) -> Any:
    """Run `work(Webhooks)` on the services (migrating the database first).

    `audit`: (action, tenant, target type, target id or a function of the result).
    """

    async def run(services: Services) -> Any:
        result = await work(services.webhooks)
        if audit is not None:
            action, tenant, target_type, target_id = audit
            target = target_id(result) if callable(target_id) else target_id
            await audit_change(
                services, action=action, tenant_id=tenant, target=(target_type, target)
            )
        return result

    return run_with_services(run, migrate=True)


def _endpoint_row(e: Endpoint) -> dict[str, Any]:
    return {
        "id": e.id,
        "url": e.url,
        "events": ",".join(e.event_types) if e.event_types is not None else "*",
        "enabled": "yes" if e.enabled else f"no ({e.disabled_reason})",
        "secret": e.secret_hint,
        "failures": e.consecutive_failures,
        "description": e.description,
    }


def _emit_endpoints(endpoints: list[Endpoint], as_json: bool) -> None:
    if as_json:
        emit([dataclasses.asdict(e) for e in endpoints])
    else:
        emit_rows([_endpoint_row(e) for e in endpoints], as_json)


def _emit_one(endpoint: Endpoint, as_json: bool, secret: str | None = None) -> None:
    if as_json:
        extra = {"secret": secret} if secret is not None else {}
        emit({**dataclasses.asdict(endpoint), **extra})
        return
    emit_rows([_endpoint_row(endpoint)], False)
    if secret is not None:
        typer.echo(f"signing secret (shown once, store it now): {secret}")


def _delivery_row(d: Delivery) -> dict[str, Any]:
    return {
        "id": d.id,
        "endpoint": d.endpoint_id,
        "status": d.status.value,
        "attempts": d.attempts,
        "last status": d.last_status_code if d.last_status_code is not None else "-",
        "next attempt": d.next_attempt_at.isoformat(timespec="seconds")
        if d.next_attempt_at
        else "-",
        "created": d.created_at.isoformat(timespec="seconds"),
    }


@endpoints_app.command("create")
def create(
    tenant: Tenant,
    url: Annotated[str, typer.Option(help="https:// URL of the receiver.")],
    event: EventTypes = None,
    description: Annotated[str, typer.Option()] = "",
    as_json: JsonOpt = False,
) -> None:
    """Register a receiver; prints its signing secret once."""
    endpoint, secret = _hooks(
        lambda h: h.create_endpoint(tenant, url, event_types=event, description=description),
        ("webhook_endpoint.create", tenant, "webhook_endpoint", lambda r: r[0].id),
    )
    _emit_one(endpoint, as_json, secret)


@endpoints_app.command("list")
def list_endpoints(tenant: Tenant, as_json: JsonOpt = False) -> None:
    """The tenant's endpoints."""
    _emit_endpoints(_hooks(lambda h: h.list_endpoints(tenant)), as_json)


@endpoints_app.command("show")
def show(endpoint_id: str, tenant: Tenant, as_json: JsonOpt = False) -> None:
    """One endpoint (its secret is never shown again; only a hint)."""
    _emit_one(_hooks(lambda h: h.get_endpoint(tenant, endpoint_id)), as_json)


@endpoints_app.command("update")
def update(
    endpoint_id: str,
    tenant: Tenant,
    url: Annotated[str | None, typer.Option()] = None,
    event: EventTypes = None,
    all_events: Annotated[bool, typer.Option(help="Subscribe to every event.")] = False,
    description: Annotated[str | None, typer.Option()] = None,
    as_json: JsonOpt = False,
) -> None:
    """Change the URL, the subscribed events or the description."""
    from settler_jobs.webhooks.values import UNCHANGED

    if all_events and event:
        fail("give --event or --all-events, not both", 4)
    types: Any = None if all_events else (event or UNCHANGED)
    endpoint = _hooks(
        lambda h: h.update_endpoint(
            tenant, endpoint_id, url=url, event_types=types, description=description
        ),
        ("webhook_endpoint.update", tenant, "webhook_endpoint", endpoint_id),
    )
    _emit_one(endpoint, as_json)


@endpoints_app.command("enable")
def enable(endpoint_id: str, tenant: Tenant, as_json: JsonOpt = False) -> None:
    """Enable an endpoint (its failure count starts from zero)."""
    audit = ("webhook_endpoint.enable", tenant, "webhook_endpoint", endpoint_id)
    _emit_one(_hooks(lambda h: h.enable(tenant, endpoint_id), audit), as_json)


@endpoints_app.command("disable")
def disable(
    endpoint_id: str,
    tenant: Tenant,
    reason: Annotated[str | None, typer.Option()] = None,
    as_json: JsonOpt = False,
) -> None:
    """Disable an endpoint; nothing is sent to it until enabled."""
    audit = ("webhook_endpoint.disable", tenant, "webhook_endpoint", endpoint_id)
    _emit_one(_hooks(lambda h: h.disable(tenant, endpoint_id, reason), audit), as_json)


@endpoints_app.command("rotate-secret")
def rotate_secret(
    endpoint_id: str,
    tenant: Tenant,
    grace_hours: Annotated[
        float, typer.Option(min=0, max=720, help="Hours the old secret keeps signing too.")
    ] = 24,
    as_json: JsonOpt = False,
) -> None:
    """A new signing secret, printed once; both sign until the grace period ends."""
    grace = timedelta(hours=grace_hours)
    endpoint, secret = _hooks(
        lambda h: h.rotate_secret(tenant, endpoint_id, grace=grace),
        ("webhook_endpoint.rotate_secret", tenant, "webhook_endpoint", endpoint_id),
    )
    _emit_one(endpoint, as_json, secret)


@endpoints_app.command("delete")
def delete(
    endpoint_id: str,
    tenant: Tenant,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask.")] = False,
) -> None:
    """Delete an endpoint and its delivery log."""
    if not yes:
        typer.confirm(f"Delete endpoint {endpoint_id} and its delivery log?", abort=True)
    _hooks(
        lambda h: h.delete_endpoint(tenant, endpoint_id),
        ("webhook_endpoint.delete", tenant, "webhook_endpoint", endpoint_id),
    )
    typer.echo(f"deleted {endpoint_id}")


@endpoints_app.command("test")
def send_test(
    endpoint_id: str, tenant: Tenant, tier: TierOpt = "starter", as_json: JsonOpt = False
) -> None:
    """Send a `webhook.test` event to one endpoint; prints the delivery id."""
    tier_value = parse_tier(tier)
    delivery = _hooks(lambda h: h.send_test(tenant, endpoint_id, tier=tier_value))
    if as_json:
        emit(dataclasses.asdict(delivery))
    else:
        typer.echo(delivery.id)


@app.command("publish")
def publish(
    tenant: Tenant,
    event_type: Annotated[str, typer.Option("--type", help="Event type, e.g. invoice.paid.")],
    data: Annotated[str, typer.Option(help="Payload: a JSON object or @file.")] = "{}",
    tier: TierOpt = "starter",
    as_json: JsonOpt = False,
) -> None:
    """Publish an event to every subscribed endpoint; prints the delivery ids."""
    payload, tier_value = parse_data(data), parse_tier(tier)

    async def work(h: Webhooks) -> Any:
        return await h.publish(tenant, event_type, payload, tier=tier_value)

    published = _hooks(work)
    if as_json:
        emit(
            {
                "eventId": published.event.id,
                "enqueued": published.enqueued,
                "deliveries": [d.id for d in published.deliveries],
            }
        )
        return
    typer.echo(f"event {published.event.id}: {len(published.deliveries)} deliveries")
    for delivery in published.deliveries:
        typer.echo(delivery.id)


@app.command("notifications")
def notifications(tenant: Tenant, as_json: JsonOpt = False) -> None:
    """Messages recorded for the tenant, such as an endpoint disabled."""
    found = _hooks(lambda h: h.notifications(tenant))
    rows = [
        {
            "created": n.created_at.isoformat(timespec="seconds"),
            "kind": n.kind,
            "subject": n.subject,
        }
        for n in found
    ]
    if as_json:
        emit([dataclasses.asdict(n) for n in found])
    else:
        emit_rows(rows, False)


@deliveries_app.command("list")
def list_deliveries(
    tenant: Tenant,
    endpoint: Annotated[str | None, typer.Option(help="Only this endpoint's.")] = None,
    status: Annotated[
        str | None, typer.Option(help="pending, delivering, succeeded, failed, cancelled.")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=500)] = 50,
    before: Annotated[str | None, typer.Option(help="Delivery id to page after.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """The tenant's deliveries, newest first."""
    found = _hooks(
        lambda h: h.list_deliveries(
            tenant, endpoint_id=endpoint, status=status, limit=limit, before=before
        )
    )
    if as_json:
        emit([dataclasses.asdict(d) for d in found])
    else:
        emit_rows([_delivery_row(d) for d in found], False)


@deliveries_app.command("show")
def show_delivery(delivery_id: str, tenant: Tenant, as_json: JsonOpt = False) -> None:
    """One delivery and every attempt: time, status code, latency, error, excerpt."""
    detail = _hooks(lambda h: h.get_delivery(tenant, delivery_id))
    if as_json:
        emit(dataclasses.asdict(detail))
        return
    emit_rows([_delivery_row(detail.delivery)], False)
    emit_rows(
        [
            {
                "#": a.attempt_no,
                "started": a.started_at.isoformat(timespec="seconds"),
                "status": a.status_code if a.status_code is not None else "-",
                "latency ms": a.latency_ms,
                "error": a.error_class or "-",
                "next retry": a.next_retry_at.isoformat(timespec="seconds")
                if a.next_retry_at
                else "-",
                "response": a.response_excerpt[:80],
            }
            for a in detail.attempts
        ],
        False,
    )


@deliveries_app.command("redeliver")
def redeliver(delivery_id: str, tenant: Tenant, as_json: JsonOpt = False) -> None:
    """Send a finished delivery again, with the same webhook-id."""
    delivery = _hooks(
        lambda h: h.redeliver(tenant, delivery_id),
        ("webhook_delivery.redeliver", tenant, "webhook_delivery", delivery_id),
    )
    if as_json:
        emit(dataclasses.asdict(delivery))
    else:
        typer.echo(f"{delivery.id} queued again (generation {delivery.generation})")


@deliveries_app.command("cancel")
def cancel(delivery_id: str, tenant: Tenant, as_json: JsonOpt = False) -> None:
    """Stop a pending delivery."""
    delivery = _hooks(
        lambda h: h.cancel_delivery(tenant, delivery_id),
        ("webhook_delivery.cancel", tenant, "webhook_delivery", delivery_id),
    )
    if as_json:
        emit(dataclasses.asdict(delivery))
    else:
        typer.echo(f"{delivery.id} {delivery.status.value}")
