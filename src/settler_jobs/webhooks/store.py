"""Webhook events and deliveries over an `AsyncSession` (never committing): publishing, the
outbox, and reading, redelivering or cancelling deliveries.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from settler_jobs import errors
from settler_jobs.domain import validate_tenant_id
from settler_jobs.envelope import NUL_ESCAPE
from settler_jobs.storage.webhook_tables import (
    WebhookAttemptRow,
    WebhookDeliveryRow,
    WebhookEndpointRow,
    WebhookEventRow,
    new_delivery_id,
    new_event_id,
)
from settler_jobs.webhooks.endpoints import list_endpoints
from settler_jobs.webhooks.values import (
    ACTIVE,
    MAX_PAYLOAD_BYTES,
    Attempt,
    Delivery,
    DeliveryStatus,
    Event,
    check_event_type,
    load,
    page,
    to_delivery,
    to_event,
    to_value,
)

_D = WebhookDeliveryRow
_E = WebhookEndpointRow


# --- events and the outbox -------------------------------------------------------------


async def publish(
    session: AsyncSession,
    *,
    tenant_id: str,
    event_type: str,
    payload: dict[str, Any],
    now: datetime,
    tier: str = "starter",
    only_endpoint: str | None = None,
) -> tuple[Event, list[Delivery]]:
    """Record an event and one pending delivery per enabled endpoint subscribed to it.

    `payload` must be a JSON object of at most 256 KiB (compact UTF-8), without NUL
    characters (PostgreSQL cannot store them); ValueError otherwise. With
    `only_endpoint` (a test event) the event goes to that endpoint alone, subscribed or
    not; NotFound if it is not the tenant's, InvalidState if it is disabled.
    """
    validate_tenant_id(tenant_id)
    check_event_type(event_type)
    if only_endpoint is not None:
        target = await load(session, _E, only_endpoint, tenant_id)
        if not target.enabled:
            raise errors.InvalidState(f"endpoint {only_endpoint!r} is disabled; enable it first")
    event = WebhookEventRow(
        id=new_event_id(),
        tenant_id=tenant_id,
        event_type=event_type,
        payload=_json_copy(payload),
        created_at=now,
    )
    session.add(event)
    endpoints = await list_endpoints(session, tenant_id=tenant_id)
    rows = [
        WebhookDeliveryRow(
            id=new_delivery_id(),
            tenant_id=tenant_id,
            endpoint_id=endpoint.id,
            event_id=event.id,
            status=DeliveryStatus.PENDING.value,
            attempts=0,
            generation=1,
            enqueued_generation=0,
            next_attempt_at=now,
            tier=tier,
            created_at=now,
            updated_at=now,
        )
        for endpoint in endpoints
        if endpoint.enabled
        and (
            endpoint.id == only_endpoint
            if only_endpoint is not None
            else endpoint.subscribes_to(event_type)
        )
    ]
    session.add_all(rows)
    await session.flush()
    return to_event(event), [to_delivery(row) for row in rows]


def _json_copy(payload: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(payload, dict):
        raise ValueError("payload must be a JSON object (a dict)")
    try:
        text = json.dumps(payload, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        size = len(text.encode("utf-8"))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"payload is not JSON-serialisable: {exc}") from None
    if size > MAX_PAYLOAD_BYTES:
        raise ValueError(f"payload is {size} bytes of JSON; the limit is {MAX_PAYLOAD_BYTES}")
    if NUL_ESCAPE.search(text):
        raise ValueError("payload strings must not contain NUL characters")
    copied: dict[str, Any] = json.loads(text)
    return copied


async def unenqueued(session: AsyncSession, *, limit: int = 500) -> list[Delivery]:
    """Pending deliveries whose current generation has no queue job yet, oldest first."""
    stmt = select(_D).where(
        _D.status == DeliveryStatus.PENDING.value, _D.enqueued_generation < _D.generation
    )
    rows = await session.scalars(stmt.order_by(_D.updated_at, _D.id).limit(page(limit)))
    return [to_delivery(row) for row in rows]


async def mark_enqueued(session: AsyncSession, delivery_id: str, generation: int) -> None:
    """Note that the job of `generation` was enqueued (never moves the marker back)."""
    stmt = update(_D).where(
        _D.id == delivery_id, _D.enqueued_generation < generation, _D.generation >= generation
    )
    await session.execute(stmt.values(enqueued_generation=generation))


async def due_without_job(
    session: AsyncSession, *, now: datetime, stale_before: datetime, limit: int = 500
) -> list[Delivery]:
    """Deliveries that should have a live queue job, for the periodic sweep.

    The rule: status pending, already enqueued (`enqueued_generation >= generation`;
    the rest is the outbox's) and due (`next_attempt_at <= now`); or status delivering
    and untouched since before `stale_before` (a worker died mid-attempt). The caller
    re-enqueues those whose job (`Delivery.job_id`) is not live in Redis.
    """
    due = and_(
        _D.status == DeliveryStatus.PENDING.value,
        _D.enqueued_generation >= _D.generation,
        _D.next_attempt_at <= now,
    )
    stuck = and_(_D.status == DeliveryStatus.DELIVERING.value, _D.updated_at < stale_before)
    stmt = select(_D).where(or_(due, stuck)).order_by(_D.updated_at, _D.id)
    return [to_delivery(row) for row in await session.scalars(stmt.limit(page(limit)))]


async def requeue(
    session: AsyncSession, delivery_id: str, *, generation: int, now: datetime
) -> Delivery | None:
    """Give an active delivery whose job was lost a new generation, back in the outbox.

    Only if it is still active at `generation`: of several sweepers at once, exactly
    one moves it (the others get None), so exactly one new job follows.
    """
    stmt = (
        update(_D)
        .where(
            _D.id == delivery_id,
            _D.generation == generation,
            _D.status.in_(sorted(ACTIVE)),
        )
        .values(
            generation=generation + 1,
            status=DeliveryStatus.PENDING.value,
            next_attempt_at=now,
            updated_at=now,
        )
    )
    moved = await session.execute(stmt)
    if getattr(moved, "rowcount", 0) != 1:
        return None
    return to_delivery(await load(session, _D, delivery_id, None))


# --- reading and steering deliveries ---------------------------------------------------


async def list_deliveries(
    session: AsyncSession,
    *,
    tenant_id: str,
    endpoint_id: str | None = None,
    status: DeliveryStatus | str | None = None,
    limit: int = 50,
    before: str | None = None,
) -> list[Delivery]:
    """The tenant's deliveries newest first (created_at, id descending), 1-500 a page.

    `before`: id of the previous page's last delivery (NotFound if not visible).
    """
    stmt = select(_D).where(_D.tenant_id == tenant_id)
    if endpoint_id is not None:
        stmt = stmt.where(_D.endpoint_id == endpoint_id)
    if status is not None:
        stmt = stmt.where(_D.status == DeliveryStatus(status).value)
    if before is not None:
        last = await load(session, _D, before, tenant_id)
        stmt = stmt.where(_older(last))
    stmt = stmt.order_by(_D.created_at.desc(), _D.id.desc()).limit(page(limit))
    return [to_delivery(row) for row in await session.scalars(stmt)]


def _older(last: WebhookDeliveryRow) -> ColumnElement[bool]:
    same_time = and_(_D.created_at == last.created_at, _D.id < last.id)
    return or_(_D.created_at < last.created_at, same_time)


async def get_delivery(session: AsyncSession, delivery_id: str, *, tenant_id: str) -> Delivery:
    """The delivery; NotFound if missing or another tenant's."""
    return to_delivery(await load(session, _D, delivery_id, tenant_id))


async def list_attempts(
    session: AsyncSession, delivery_id: str, *, tenant_id: str
) -> list[Attempt]:
    """The delivery's attempts in order; NotFound if the delivery is not the tenant's."""
    await load(session, _D, delivery_id, tenant_id)
    stmt = select(WebhookAttemptRow).where(WebhookAttemptRow.delivery_id == delivery_id)
    stmt = stmt.order_by(WebhookAttemptRow.attempt_no, WebhookAttemptRow.id)
    return [to_value(Attempt, row) for row in await session.scalars(stmt)]


async def redeliver(
    session: AsyncSession, delivery_id: str, *, tenant_id: str, now: datetime
) -> Delivery:
    """Send a final delivery again under a new generation (so a new job), due now.

    InvalidState if it is still pending or delivering, or its endpoint is disabled.
    """
    row = await load(session, _D, delivery_id, tenant_id, lock=True)
    if row.status in ACTIVE:
        raise errors.InvalidState(f"delivery {delivery_id!r} is still {row.status}")
    endpoint = await load(session, _E, row.endpoint_id, tenant_id)
    if not endpoint.enabled:
        raise errors.InvalidState(f"endpoint {endpoint.id!r} is disabled; enable it first")
    row.generation += 1
    row.status, row.next_attempt_at, row.updated_at = DeliveryStatus.PENDING.value, now, now
    await session.flush()
    return to_delivery(row)


async def cancel_delivery(
    session: AsyncSession, delivery_id: str, *, tenant_id: str, now: datetime
) -> Delivery:
    """Stop a pending or delivering delivery (InvalidState if it is already final)."""
    row = await load(session, _D, delivery_id, tenant_id, lock=True)
    if row.status not in ACTIVE:
        raise errors.InvalidState(f"delivery {delivery_id!r} is already {row.status}")
    row.status, row.next_attempt_at = DeliveryStatus.CANCELLED.value, None
    row.updated_at = now
    await session.flush()
    return to_delivery(row)
