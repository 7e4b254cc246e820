"""The webhook delivery log over an `AsyncSession` (never committing), worker side: begin and
record attempts, and count each outcome towards its endpoint's health.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func, literal, update
from sqlalchemy.ext.asyncio import AsyncSession

from settler_jobs.storage.tables import UTCDateTime
from settler_jobs.storage.webhook_tables import (
    WebhookAttemptRow,
    WebhookDeliveryRow,
    WebhookEndpointRow,
    WebhookEventRow,
)
from settler_jobs.webhook_records import (
    ACTIVE,
    GONE_REASON,
    MAX_ERROR,
    MAX_EXCERPT,
    OUTCOMES,
    Delivery,
    DeliveryStatus,
    Endpoint,
    Event,
    load,
    to_delivery,
    to_endpoint,
    to_event,
)

_D = WebhookDeliveryRow
_E = WebhookEndpointRow


async def start_attempt(
    session: AsyncSession, delivery_id: str, *, now: datetime, generation: int | None = None
) -> tuple[Delivery, Endpoint, Event]:
    """Begin an attempt; send only if the returned delivery is DELIVERING.

    An active delivery (of `generation`, when given) becomes delivering with attempts+1,
    or failed if its endpoint is disabled. A final, cancelled or other-generation one is
    returned unchanged. NotFound if the delivery is gone (its endpoint was deleted).
    """
    row = await load(session, _D, delivery_id, None, lock=True)
    endpoint = await load(session, WebhookEndpointRow, row.endpoint_id, None)
    event = await load(session, WebhookEventRow, row.event_id, None)
    if row.status in ACTIVE and generation in (None, row.generation):
        if endpoint.enabled:
            row.status, row.attempts = DeliveryStatus.DELIVERING.value, row.attempts + 1
        else:
            row.status = DeliveryStatus.FAILED.value
            row.last_error = f"endpoint disabled: {endpoint.disabled_reason}"[:MAX_ERROR]
        row.next_attempt_at, row.updated_at = None, now
        await session.flush()
    return to_delivery(row), to_endpoint(endpoint), to_event(event)


async def record_attempt(
    session: AsyncSession,
    delivery_id: str,
    *,
    attempt_no: int,
    started_at: datetime,
    status_code: int | None,
    latency_ms: int,
    error_class: str | None,
    response_excerpt: str,
    next_retry_at: datetime | None,
    outcome: str,
    now: datetime,
) -> Delivery:
    """Log an attempt and apply its `outcome` (succeeded, retry, gone or failed).

    A delivering delivery becomes succeeded, pending until `next_retry_at` (retry) or
    failed (gone, failed); one cancelled or redelivered meanwhile keeps its status. The
    endpoint's health follows: success resets it, anything else counts a failure, and
    "gone" disables the endpoint (GONE_REASON). The excerpt is cut to 1024 characters.
    """
    kind = "failed" if outcome == "failed_permanent" else str(outcome)
    if kind not in OUTCOMES:
        raise ValueError(f"unknown outcome {outcome!r}; expected one of {sorted(OUTCOMES)}")
    row = await load(session, _D, delivery_id, None, lock=True)
    excerpt = response_excerpt[:MAX_EXCERPT]
    session.add(
        WebhookAttemptRow(
            delivery_id=row.id,
            attempt_no=attempt_no,
            started_at=started_at,
            status_code=status_code,
            latency_ms=max(0, latency_ms),
            error_class=None if error_class is None else error_class[:64],
            response_excerpt=excerpt,
            next_retry_at=next_retry_at,
        )
    )
    if row.status == DeliveryStatus.DELIVERING.value:
        _settle(row, kind, next_retry_at or now)
    row.last_status_code, row.updated_at = status_code, now
    row.last_error = None if kind == "succeeded" else _error_text(error_class, excerpt)
    await _record_health(session, row.endpoint_id, kind, now)
    await session.flush()
    return to_delivery(row)


def _settle(row: WebhookDeliveryRow, kind: str, retry_at: datetime) -> None:
    if kind == "retry":
        row.status, row.next_attempt_at = DeliveryStatus.PENDING.value, retry_at
        return
    ok = kind == "succeeded"
    row.status = (DeliveryStatus.SUCCEEDED if ok else DeliveryStatus.FAILED).value
    row.next_attempt_at = None


def _error_text(error_class: str | None, excerpt: str) -> str:
    text = f"{error_class or 'error'}: {excerpt}" if excerpt else error_class or "error"
    return text[:MAX_ERROR]


async def _record_health(session: AsyncSession, endpoint_id: str, kind: str, now: datetime) -> None:
    at = literal(now, UTCDateTime())
    values: dict[str, Any] = (
        {"consecutive_failures": 0, "last_success_at": at, "failing_since": None}
        if kind == "succeeded"
        else {
            "consecutive_failures": _E.consecutive_failures + 1,
            "failing_since": func.coalesce(_E.failing_since, at),
        }
    )
    fetch = {"synchronize_session": "fetch"}
    stmt = update(_E).where(_E.id == endpoint_id).values(values)
    await session.execute(stmt.execution_options(**fetch))
    if kind == "gone":
        gone = {"enabled": False, "disabled_reason": GONE_REASON, "disabled_at": at}
        stmt = update(_E).where(_E.id == endpoint_id, _E.enabled.is_(True))
        await session.execute(stmt.values(gone | {"updated_at": at}).execution_options(**fetch))
