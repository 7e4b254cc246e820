"""Webhook endpoints over an `AsyncSession` (never committing): the registry, secrets (plaintext
only from create/rotate, once, and `reveal_secrets`, for signing) and endpoint health.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from settler_jobs.domain import validate_tenant_id
from settler_jobs.net_guard import GuardPolicy, Resolver, display_url, resolve_and_check
from settler_jobs.secrets_box import SecretBox, mask, new_webhook_secret
from settler_jobs.storage.webhook_tables import (
    TenantNotificationRow,
    WebhookEndpointRow,
    new_hex_id,
)
from settler_jobs.webhooks.values import (
    ALL_EVENTS,
    DISABLED_KIND,
    MAX_DESCRIPTION,
    MAX_ERROR,
    MAX_EVENT_TYPES,
    MAX_URL,
    UNCHANGED,
    Endpoint,
    Notification,
    SealedSecrets,
    Unchanged,
    aware,
    check_event_type,
    load,
    page,
    to_endpoint,
    to_value,
)

_E = WebhookEndpointRow


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
    return to_endpoint(row), secret


async def list_endpoints(session: AsyncSession, *, tenant_id: str) -> list[Endpoint]:
    """The tenant's endpoints, oldest first."""
    stmt = select(WebhookEndpointRow).where(WebhookEndpointRow.tenant_id == tenant_id)
    rows = await session.scalars(
        stmt.order_by(WebhookEndpointRow.created_at, WebhookEndpointRow.id)
    )
    return [to_endpoint(row) for row in rows]


async def get_endpoint(session: AsyncSession, endpoint_id: str, *, tenant_id: str) -> Endpoint:
    """The endpoint; NotFound if missing or another tenant's."""
    return to_endpoint(await load(session, WebhookEndpointRow, endpoint_id, tenant_id))


async def update_endpoint(
    session: AsyncSession,
    endpoint_id: str,
    *,
    tenant_id: str,
    url: str | None = None,
    event_types: list[str] | Unchanged | None = UNCHANGED,
    description: str | None = None,
    policy: GuardPolicy,
    resolver: Resolver | None = None,
    now: datetime,
) -> Endpoint:
    """Change what is given; a new URL passes the SSRF guard first (`Refused` if not)."""
    changes: dict[str, Any] = {}
    if not isinstance(event_types, Unchanged):
        changes["event_types"] = _event_types(event_types)
    if description is not None:
        changes["description"] = _description(description)
    if url is not None:
        await _vet(url, policy, resolver)
        changes["url"] = url
    row = await load(session, WebhookEndpointRow, endpoint_id, tenant_id, lock=True)
    for name, value in changes.items():
        setattr(row, name, value)
    row.updated_at = now
    await session.flush()
    return to_endpoint(row)


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
    row = await load(session, WebhookEndpointRow, endpoint_id, tenant_id, lock=True)
    if enabled:
        row.enabled, row.disabled_reason, row.disabled_at = True, None, None
        row.consecutive_failures, row.failing_since, row.disabled_notified_at = 0, None, None
    elif row.enabled:
        _disable(row, reason or "disabled by hand", now)
        row.disabled_notified_at = now
    row.updated_at = now
    await session.flush()
    return to_endpoint(row)


async def delete_endpoint(session: AsyncSession, endpoint_id: str, *, tenant_id: str) -> None:
    """Delete the endpoint with its deliveries and attempts (events stay)."""
    row = await load(session, WebhookEndpointRow, endpoint_id, tenant_id, lock=True)
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
    row = await load(session, WebhookEndpointRow, endpoint_id, tenant_id, lock=True)
    secret = new_webhook_secret()
    row.previous_secret_ciphertext = row.secret_ciphertext
    row.previous_secret_expires_at = now + grace
    row.secret_ciphertext = box.encrypt(secret, context=_context(row.id))
    row.secret_hint, row.updated_at = mask(secret), now
    await session.flush()
    return to_endpoint(row), secret


async def reveal_secrets(
    session: AsyncSession, box: SecretBox, endpoint_id: str, *, now: datetime
) -> list[str]:
    """The plaintext signing secrets: current first, then the previous one until it expires.

    For signing only; never show or log them.
    """
    row = await load(session, WebhookEndpointRow, endpoint_id, None)
    sealed = SealedSecrets(
        row.secret_ciphertext, row.previous_secret_ciphertext, row.previous_secret_expires_at
    )
    return open_secrets(box, endpoint_id, sealed, now=now)


def open_secrets(
    box: SecretBox, endpoint_id: str, sealed: SealedSecrets, *, now: datetime
) -> list[str]:
    """Decrypt `sealed` (the endpoint's): current first, the previous one until it expires."""
    context = _context(endpoint_id)
    secrets = [box.decrypt(sealed.current, context=context)]
    expires = sealed.previous_expires_at
    if sealed.previous and expires is not None and aware(now) < expires:
        secrets.append(box.decrypt(sealed.previous, context=context))
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
        check_event_type(name)
    return unique


def _description(text: str) -> str:
    if not isinstance(text, str) or len(text) > MAX_DESCRIPTION:
        raise ValueError(f"description must be at most {MAX_DESCRIPTION} characters")
    return text


def _disable(row: WebhookEndpointRow, reason: str, now: datetime) -> None:
    row.enabled, row.disabled_reason, row.disabled_at = False, reason[:MAX_ERROR], now
    row.updated_at = now


async def disable_if_unhealthy(
    session: AsyncSession,
    endpoint_id: str,
    *,
    now: datetime,
    max_consecutive: int,
    max_failing: timedelta,
) -> Notification | None:
    """Disable an endpoint whose last `max_consecutive` deliveries all failed, or that has
    been failing without a success for `max_failing`; then, once per disabling (also for
    one disabled by a 410), record a tenant notification and return it.
    """
    if max_consecutive < 1:
        raise ValueError("max_consecutive must be at least 1")
    row = await load(session, _E, endpoint_id, None, lock=True)
    if row.enabled:
        reason = _unhealthy(row, aware(now), max_consecutive, max_failing)
        if reason is None:
            return None
        _disable(row, reason, now)
    if row.disabled_notified_at is not None:
        return None
    row.disabled_notified_at = now
    note = _disabled_notice(row, now)
    session.add(note)
    await session.flush()
    return to_value(Notification, note)


def _unhealthy(
    row: WebhookEndpointRow, now: datetime, max_consecutive: int, max_failing: timedelta
) -> str | None:
    if row.consecutive_failures >= max_consecutive:
        return f"{row.consecutive_failures} consecutive failed deliveries"
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
    stmt = stmt.order_by(row_type.created_at.desc(), row_type.id.desc()).limit(page(limit))
    return [to_value(Notification, row) for row in await session.scalars(stmt)]
