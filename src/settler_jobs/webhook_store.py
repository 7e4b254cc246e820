"""Webhook endpoints, events, deliveries and the delivery log over an `AsyncSession`.

Functions only use the session they are given and never commit. Results are frozen
values, never rows; `Endpoint` carries no secret (only `secret_hint`), and plaintext
secrets leave only from `create_endpoint` / `rotate_secret` (once) and `reveal_secrets`
(for signing). Tenant-scoped calls answer another tenant's id with `errors.NotFound`,
exactly like a missing one. Worker-side calls (`start_attempt`, `record_attempt`,
`reveal_secrets`, `disable_if_unhealthy`, the outbox) take no tenant.

A delivery is pending -> delivering -> succeeded | failed, back to pending while it
retries, or cancelled; `redeliver` re-opens a final one under a new generation, and
`Delivery.job_id` names the queue job of that generation.
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum, StrEnum
from typing import Any, Final, TypeVar

import httpx
from sqlalchemy import ColumnElement, and_, func, literal, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from settler_jobs import errors
from settler_jobs.domain import validate_tenant_id
from settler_jobs.net_guard import GuardPolicy, Resolver, display_url, resolve_and_check
from settler_jobs.secrets_box import SecretBox, mask, new_webhook_secret
from settler_jobs.storage.tables import UTCDateTime
from settler_jobs.storage.webhook_tables import (
    TenantNotificationRow,
    WebhookAttemptRow,
    WebhookDeliveryRow,
    WebhookEndpointRow,
    WebhookEventRow,
    new_delivery_id,
    new_event_id,
    new_hex_id,
)

MAX_URL: Final = 2048
MAX_DESCRIPTION: Final = 500
MAX_EVENT_TYPES: Final = 100
MAX_PAYLOAD_BYTES: Final = 256 * 1024
MAX_EXCERPT: Final = 1024
MAX_ERROR: Final = 2000
MAX_PAGE: Final = 500
ALL_EVENTS: Final = "*"
GONE_REASON: Final = "receiver answered 410 Gone"
DISABLED_KIND: Final = "webhook_endpoint_disabled"
_EVENT_TYPE_RE: Final = re.compile(r"^[a-z0-9_.-]{1,128}$")
_NUL_RE: Final = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")  # an escaped NUL in JSON text


class DeliveryStatus(StrEnum):
    """Where a delivery stands."""

    PENDING = "pending"
    DELIVERING = "delivering"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


ACTIVE: Final = frozenset({DeliveryStatus.PENDING.value, DeliveryStatus.DELIVERING.value})
OUTCOMES: Final = frozenset({"succeeded", "retry", "gone", "failed"})


class _Unchanged(Enum):
    UNCHANGED = "unchanged"


UNCHANGED: Final = _Unchanged.UNCHANGED
"""`update_endpoint(event_types=...)` default: keep the subscriptions."""

_V = TypeVar("_V")
_D = WebhookDeliveryRow
_E = WebhookEndpointRow
_R = TypeVar("_R", WebhookEndpointRow, WebhookDeliveryRow, WebhookEventRow)
_WHAT: Final[dict[type[Any], str]] = {
    WebhookEndpointRow: "webhook endpoint",
    WebhookDeliveryRow: "webhook delivery",
    WebhookEventRow: "webhook event",
}


def _value(cls: type[_V], row: Any, **overrides: Any) -> _V:
    """A frozen value from a row: same-named fields, `overrides` replacing some."""
    names = cls.__dataclass_fields__  # type: ignore[attr-defined]
    return cls(**{name: getattr(row, name) for name in names if name not in overrides}, **overrides)


@dataclass(frozen=True)
class Endpoint:
    """A receiver; `event_types` None means every event. No secret, only its hint."""

    id: str
    tenant_id: str
    url: str
    description: str
    event_types: tuple[str, ...] | None
    enabled: bool
    disabled_reason: str | None
    disabled_at: datetime | None
    secret_hint: str
    previous_secret_expires_at: datetime | None
    consecutive_failures: int
    last_success_at: datetime | None
    failing_since: datetime | None
    disabled_notified_at: datetime | None
    created_at: datetime
    updated_at: datetime

    def subscribes_to(self, event_type: str) -> bool:
        """True if events of `event_type` go to this endpoint (when enabled)."""
        return self.event_types is None or event_type in self.event_types


@dataclass(frozen=True)
class Event:
    """A published event."""

    id: str
    tenant_id: str
    event_type: str
    payload: dict[str, Any]
    created_at: datetime


@dataclass(frozen=True)
class Delivery:
    """One event to one endpoint; `id` is also the stable Standard Webhooks webhook-id."""

    id: str
    tenant_id: str
    endpoint_id: str
    event_id: str
    status: DeliveryStatus
    attempts: int
    generation: int
    next_attempt_at: datetime | None
    enqueued_generation: int
    last_status_code: int | None
    last_error: str | None
    created_at: datetime
    updated_at: datetime

    @property
    def job_id(self) -> str:
        """The queue job id of this generation (a valid BullMQ id)."""
        return f"{self.id}-g{self.generation}"


@dataclass(frozen=True)
class Attempt:
    """One HTTP attempt in the delivery log."""

    id: int
    delivery_id: str
    attempt_no: int
    started_at: datetime
    status_code: int | None
    latency_ms: int
    error_class: str | None
    response_excerpt: str
    next_retry_at: datetime | None


@dataclass(frozen=True)
class Notification:
    """A message recorded for a tenant."""

    id: str
    tenant_id: str
    kind: str
    subject: str
    body: str
    created_at: datetime


def _endpoint(row: WebhookEndpointRow) -> Endpoint:
    types = None if row.event_types is None else tuple(row.event_types)
    return _value(Endpoint, row, event_types=types)


def _event(row: WebhookEventRow) -> Event:
    return _value(Event, row, payload=copy.deepcopy(row.payload))


def _delivery(row: WebhookDeliveryRow) -> Delivery:
    return _value(Delivery, row, status=DeliveryStatus(row.status))


# --- endpoints -------------------------------------------------------------------------


async def create_endpoint(
    session: AsyncSession,
    box: SecretBox,
    *,
    tenant_id: str,
    url: str,
    event_types: list[str] | None,
    description: str,
    policy: GuardPolicy,
    resolver: Resolver | None = None,
    now: datetime,
) -> tuple[Endpoint, str]:
    """Register `url` for `tenant_id`; returns the endpoint and its secret (shown once).

    The URL must pass the SSRF guard now (`net_guard.Refused`, naming the rule, if not);
    event types must match ``^[a-z0-9_.-]{1,128}$`` (at most 100; None or ``["*"]``: all).
    """
    validate_tenant_id(tenant_id)
    types, text = _event_types(event_types), _description(description)
    await _vet(url, policy, resolver)
    secret, endpoint_id = new_webhook_secret(), new_hex_id()
    row = WebhookEndpointRow(
        id=endpoint_id,
        tenant_id=tenant_id,
        url=url,
        description=text,
        event_types=types,
        enabled=True,
        secret_ciphertext=box.encrypt(secret, context=_context(endpoint_id)),
        secret_hint=mask(secret),
        consecutive_failures=0,
        created_at=now,
        updated_at=now,
    )
    session.add(row)
    await session.flush()
    return _endpoint(row), secret


async def list_endpoints(session: AsyncSession, *, tenant_id: str) -> list[Endpoint]:
    """The tenant's endpoints, oldest first."""
    stmt = select(WebhookEndpointRow).where(WebhookEndpointRow.tenant_id == tenant_id)
    rows = await session.scalars(
        stmt.order_by(WebhookEndpointRow.created_at, WebhookEndpointRow.id)
    )
    return [_endpoint(row) for row in rows]


async def get_endpoint(session: AsyncSession, endpoint_id: str, *, tenant_id: str) -> Endpoint:
    """The endpoint; NotFound if missing or another tenant's."""
    return _endpoint(await _load(session, WebhookEndpointRow, endpoint_id, tenant_id))


async def update_endpoint(
    session: AsyncSession,
    endpoint_id: str,
    *,
    tenant_id: str,
    url: str | None = None,
    event_types: list[str] | _Unchanged | None = UNCHANGED,
    description: str | None = None,
    policy: GuardPolicy,
    resolver: Resolver | None = None,
    now: datetime,
) -> Endpoint:
    """Change what is given; a new URL passes the SSRF guard first (`Refused` if not)."""
    changes: dict[str, Any] = {}
    if not isinstance(event_types, _Unchanged):
        changes["event_types"] = _event_types(event_types)
    if description is not None:
        changes["description"] = _description(description)
    if url is not None:
        await _vet(url, policy, resolver)
        changes["url"] = url
    row = await _load(session, WebhookEndpointRow, endpoint_id, tenant_id, lock=True)
    for name, value in changes.items():
        setattr(row, name, value)
    row.updated_at = now
    await session.flush()
    return _endpoint(row)


async def set_enabled(
    session: AsyncSession,
    endpoint_id: str,
    *,
    tenant_id: str,
    enabled: bool,
    reason: str | None,
    now: datetime,
) -> Endpoint:
    """Enable (health counters reset) or disable an endpoint by hand.

    Disabling by hand owes the tenant no notification (`disabled_notified_at` is set);
    disabling a disabled endpoint keeps its first reason.
    """
    row = await _load(session, WebhookEndpointRow, endpoint_id, tenant_id, lock=True)
    if enabled:
        row.enabled, row.disabled_reason, row.disabled_at = True, None, None
        row.consecutive_failures, row.failing_since, row.disabled_notified_at = 0, None, None
    elif row.enabled:
        _disable(row, reason or "disabled by hand", now)
        row.disabled_notified_at = now
    row.updated_at = now
    await session.flush()
    return _endpoint(row)


async def delete_endpoint(session: AsyncSession, endpoint_id: str, *, tenant_id: str) -> None:
    """Delete the endpoint with its deliveries and attempts (events stay)."""
    row = await _load(session, WebhookEndpointRow, endpoint_id, tenant_id, lock=True)
    await session.delete(row)
    await session.flush()


async def rotate_secret(
    session: AsyncSession,
    box: SecretBox,
    endpoint_id: str,
    *,
    tenant_id: str,
    grace: timedelta,
    now: datetime,
) -> tuple[Endpoint, str]:
    """A new secret (returned once); the old one keeps signing until now + `grace`.

    Only one previous secret is kept: rotating again within the grace drops the oldest.
    """
    if grace < timedelta(0):
        raise ValueError("grace must not be negative")
    row = await _load(session, WebhookEndpointRow, endpoint_id, tenant_id, lock=True)
    secret = new_webhook_secret()
    row.previous_secret_ciphertext = row.secret_ciphertext
    row.previous_secret_expires_at = now + grace
    row.secret_ciphertext = box.encrypt(secret, context=_context(row.id))
    row.secret_hint, row.updated_at = mask(secret), now
    await session.flush()
    return _endpoint(row), secret


async def reveal_secrets(
    session: AsyncSession, box: SecretBox, endpoint_id: str, *, now: datetime
) -> list[str]:
    """The plaintext signing secrets: current first, then the previous one until it expires.

    For signing only; never show or log them.
    """
    row = await _load(session, WebhookEndpointRow, endpoint_id, None)
    context = _context(row.id)
    secrets = [box.decrypt(row.secret_ciphertext, context=context)]
    expires = row.previous_secret_expires_at
    if row.previous_secret_ciphertext and expires is not None and _aware(now) < expires:
        secrets.append(box.decrypt(row.previous_secret_ciphertext, context=context))
    return secrets


def _context(endpoint_id: str) -> str:
    return f"webhook-endpoint:{endpoint_id}"


async def _vet(url: str, policy: GuardPolicy, resolver: Resolver | None) -> None:
    if not isinstance(url, str) or len(url) > MAX_URL:
        raise ValueError(f"url must be a string of at most {MAX_URL} characters")
    await resolve_and_check(url, policy, resolver)


def _event_types(types: list[str] | None) -> list[str] | None:
    if types is None or list(types) == [ALL_EVENTS]:
        return None
    unique = [] if isinstance(types, str) else list(dict.fromkeys(types))
    if not 1 <= len(unique) <= MAX_EVENT_TYPES:
        raise ValueError(
            f"event_types must list 1-{MAX_EVENT_TYPES} event types, or be None or ['*']"
        )
    for name in unique:
        _check_event_type(name)
    return unique


def _check_event_type(name: str) -> None:
    if not isinstance(name, str) or not _EVENT_TYPE_RE.fullmatch(name):
        raise ValueError(f"invalid event type {name!r}: use 1-128 of a-z, 0-9, '_', '.', '-'")


def _description(text: str) -> str:
    if not isinstance(text, str) or len(text) > MAX_DESCRIPTION:
        raise ValueError(f"description must be at most {MAX_DESCRIPTION} characters")
    return text


def _disable(row: WebhookEndpointRow, reason: str, now: datetime) -> None:
    row.enabled, row.disabled_reason, row.disabled_at = False, reason[:MAX_ERROR], now
    row.updated_at = now


# --- events and the outbox -------------------------------------------------------------


async def publish(
    session: AsyncSession,
    *,
    tenant_id: str,
    event_type: str,
    payload: dict[str, Any],
    now: datetime,
) -> tuple[Event, list[Delivery]]:
    """Record an event and one pending delivery per enabled endpoint subscribed to it.

    `payload` must be a JSON object of at most 256 KiB (compact UTF-8), without NUL
    characters (PostgreSQL cannot store them); ValueError otherwise.
    """
    validate_tenant_id(tenant_id)
    _check_event_type(event_type)
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
            created_at=now,
            updated_at=now,
        )
        for endpoint in endpoints
        if endpoint.enabled and endpoint.subscribes_to(event_type)
    ]
    session.add_all(rows)
    await session.flush()
    return _event(event), [_delivery(row) for row in rows]


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
    if _NUL_RE.search(text):
        raise ValueError("payload strings must not contain NUL characters")
    copied: dict[str, Any] = json.loads(text)
    return copied


async def unenqueued(session: AsyncSession, *, limit: int = 500) -> list[Delivery]:
    """Pending deliveries whose current generation has no queue job yet, oldest first."""
    stmt = select(_D).where(
        _D.status == DeliveryStatus.PENDING.value, _D.enqueued_generation < _D.generation
    )
    rows = await session.scalars(stmt.order_by(_D.updated_at, _D.id).limit(_page(limit)))
    return [_delivery(row) for row in rows]


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
    return [_delivery(row) for row in await session.scalars(stmt.limit(_page(limit)))]


# --- the delivery log ------------------------------------------------------------------


async def start_attempt(
    session: AsyncSession, delivery_id: str, *, now: datetime, generation: int | None = None
) -> tuple[Delivery, Endpoint, Event]:
    """Begin an attempt; send only if the returned delivery is DELIVERING.

    An active delivery (of `generation`, when given) becomes delivering with attempts+1,
    or failed if its endpoint is disabled. A final, cancelled or other-generation one is
    returned unchanged. NotFound if the delivery is gone (its endpoint was deleted).
    """
    row = await _load(session, _D, delivery_id, None, lock=True)
    endpoint = await _load(session, WebhookEndpointRow, row.endpoint_id, None)
    event = await _load(session, WebhookEventRow, row.event_id, None)
    if row.status in ACTIVE and generation in (None, row.generation):
        if endpoint.enabled:
            row.status, row.attempts = DeliveryStatus.DELIVERING.value, row.attempts + 1
        else:
            row.status = DeliveryStatus.FAILED.value
            row.last_error = f"endpoint disabled: {endpoint.disabled_reason}"[:MAX_ERROR]
        row.next_attempt_at, row.updated_at = None, now
        await session.flush()
    return _delivery(row), _endpoint(endpoint), _event(event)


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
    row = await _load(session, _D, delivery_id, None, lock=True)
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
    return _delivery(row)


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


async def disable_if_unhealthy(
    session: AsyncSession,
    endpoint_id: str,
    *,
    now: datetime,
    max_consecutive: int,
    max_failing: timedelta,
) -> Notification | None:
    """Disable an endpoint whose last `max_consecutive` attempts all failed, or that has
    been failing without a success for `max_failing`; then, once per disabling (also for
    one disabled by a 410), record a tenant notification and return it.
    """
    if max_consecutive < 1:
        raise ValueError("max_consecutive must be at least 1")
    row = await _load(session, _E, endpoint_id, None, lock=True)
    if row.enabled:
        reason = _unhealthy(row, _aware(now), max_consecutive, max_failing)
        if reason is None:
            return None
        _disable(row, reason, now)
    if row.disabled_notified_at is not None:
        return None
    row.disabled_notified_at = now
    note = _disabled_notice(row, now)
    session.add(note)
    await session.flush()
    return _value(Notification, note)


def _unhealthy(
    row: WebhookEndpointRow, now: datetime, max_consecutive: int, max_failing: timedelta
) -> str | None:
    if row.consecutive_failures >= max_consecutive:
        return f"{row.consecutive_failures} consecutive failed attempts"
    if row.failing_since is not None and now - row.failing_since >= max_failing:
        return f"failing without a success since {row.failing_since.isoformat()}"
    return None


def _disabled_notice(row: WebhookEndpointRow, now: datetime) -> TenantNotificationRow:
    try:
        shown = display_url(httpx.URL(row.url))
    except httpx.InvalidURL:
        shown = "<invalid URL>"
    body = (
        f"Settler stopped sending webhooks to endpoint {row.id} ({shown}). "
        f"Reason: {row.disabled_reason}. Its deliveries stay in the log: fix the receiver, "
        "enable the endpoint again, then redeliver the messages that failed."
    )
    return TenantNotificationRow(
        id=new_hex_id(),
        tenant_id=row.tenant_id,
        kind=DISABLED_KIND,
        subject=f"Webhook endpoint disabled: {shown}"[:256],
        body=body,
        created_at=now,
    )


async def list_notifications(
    session: AsyncSession, *, tenant_id: str, limit: int = 50
) -> list[Notification]:
    """The tenant's recorded notifications, newest first."""
    row_type = TenantNotificationRow
    stmt = select(row_type).where(row_type.tenant_id == tenant_id)
    stmt = stmt.order_by(row_type.created_at.desc(), row_type.id.desc()).limit(_page(limit))
    return [_value(Notification, row) for row in await session.scalars(stmt)]


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
        last = await _load(session, _D, before, tenant_id)
        stmt = stmt.where(_older(last))
    stmt = stmt.order_by(_D.created_at.desc(), _D.id.desc()).limit(_page(limit))
    return [_delivery(row) for row in await session.scalars(stmt)]


def _older(last: WebhookDeliveryRow) -> ColumnElement[bool]:
    same_time = and_(_D.created_at == last.created_at, _D.id < last.id)
    return or_(_D.created_at < last.created_at, same_time)


async def get_delivery(session: AsyncSession, delivery_id: str, *, tenant_id: str) -> Delivery:
    """The delivery; NotFound if missing or another tenant's."""
    return _delivery(await _load(session, _D, delivery_id, tenant_id))


async def list_attempts(
    session: AsyncSession, delivery_id: str, *, tenant_id: str
) -> list[Attempt]:
    """The delivery's attempts in order; NotFound if the delivery is not the tenant's."""
    await _load(session, _D, delivery_id, tenant_id)
    stmt = select(WebhookAttemptRow).where(WebhookAttemptRow.delivery_id == delivery_id)
    stmt = stmt.order_by(WebhookAttemptRow.attempt_no, WebhookAttemptRow.id)
    return [_value(Attempt, row) for row in await session.scalars(stmt)]


async def redeliver(
    session: AsyncSession, delivery_id: str, *, tenant_id: str, now: datetime
) -> Delivery:
    """Send a final delivery again under a new generation (so a new job), due now.

    InvalidState if it is still pending or delivering, or its endpoint is disabled.
    """
    row = await _load(session, _D, delivery_id, tenant_id, lock=True)
    if row.status in ACTIVE:
        raise errors.InvalidState(f"delivery {delivery_id!r} is still {row.status}")
    endpoint = await _load(session, _E, row.endpoint_id, tenant_id)
    if not endpoint.enabled:
        raise errors.InvalidState(f"endpoint {endpoint.id!r} is disabled; enable it first")
    row.generation += 1
    row.status, row.next_attempt_at, row.updated_at = DeliveryStatus.PENDING.value, now, now
    await session.flush()
    return _delivery(row)


async def cancel_delivery(
    session: AsyncSession, delivery_id: str, *, tenant_id: str, now: datetime
) -> Delivery:
    """Stop a pending or delivering delivery (InvalidState if it is already final)."""
    row = await _load(session, _D, delivery_id, tenant_id, lock=True)
    if row.status not in ACTIVE:
        raise errors.InvalidState(f"delivery {delivery_id!r} is already {row.status}")
    row.status, row.next_attempt_at = DeliveryStatus.CANCELLED.value, None
    row.updated_at = now
    await session.flush()
    return _delivery(row)


# --- helpers ---------------------------------------------------------------------------


async def _load(
    session: AsyncSession,
    model: type[_R],
    row_id: str,
    tenant_id: str | None,
    *,
    lock: bool = False,
) -> _R:
    """The row `row_id` (of `tenant_id`, if given); NotFound otherwise."""
    stmt = select(model).where(model.id == row_id)
    if tenant_id is not None:
        stmt = stmt.where(model.tenant_id == tenant_id)
    row = await session.scalar(stmt.with_for_update() if lock else stmt)
    if row is None:
        raise errors.NotFound(f"no {_WHAT[model]} {row_id!r}")
    return row


def _page(limit: int) -> int:
    return max(1, min(limit, MAX_PAGE))


def _aware(moment: datetime) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"naive datetime {moment!r}: pass a timezone-aware one")
    return moment
