"""Shared webhook store pieces: limits, `DeliveryStatus`, the frozen values (`Endpoint`, `Event`,
`Delivery`, `Attempt`, `Notification`), row-to-value converters and tenant-scoped row loading.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum, StrEnum
from typing import Any, Final, TypeVar

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from settler_jobs import errors
from settler_jobs.storage.webhook_tables import (
    WebhookDeliveryRow,
    WebhookEndpointRow,
    WebhookEventRow,
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


class DeliveryStatus(StrEnum):
    """Where a delivery stands."""

    PENDING = "pending"
    DELIVERING = "delivering"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


ACTIVE: Final = frozenset({DeliveryStatus.PENDING.value, DeliveryStatus.DELIVERING.value})
OUTCOMES: Final = frozenset({"succeeded", "retry", "gone", "failed"})


class Unchanged(Enum):
    UNCHANGED = "unchanged"


UNCHANGED: Final = Unchanged.UNCHANGED
"""`update_endpoint(event_types=...)` default: keep the subscriptions."""

_V = TypeVar("_V")
_R = TypeVar("_R", WebhookEndpointRow, WebhookDeliveryRow, WebhookEventRow)
_WHAT: Final[dict[type[Any], str]] = {
    WebhookEndpointRow: "webhook endpoint",
    WebhookDeliveryRow: "webhook delivery",
    WebhookEventRow: "webhook event",
}


def to_value(cls: type[_V], row: Any, **overrides: Any) -> _V:
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
class SealedSecrets:
    """An endpoint's encrypted signing secrets (`webhook_endpoints.open_secrets`)."""

    current: str = field(repr=False)
    previous: str | None = field(repr=False)
    previous_expires_at: datetime | None


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
    tier: str
    """The tenant tier the event was published with (decides the job's priority)."""
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


def to_endpoint(row: WebhookEndpointRow) -> Endpoint:
    types = None if row.event_types is None else tuple(row.event_types)
    return to_value(Endpoint, row, event_types=types)


def to_event(row: WebhookEventRow) -> Event:
    return to_value(Event, row, payload=copy.deepcopy(row.payload))


def to_delivery(row: WebhookDeliveryRow) -> Delivery:
    return to_value(Delivery, row, status=DeliveryStatus(row.status))


async def load(
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


def page(limit: int) -> int:
    return max(1, min(limit, MAX_PAGE))


def aware(moment: datetime) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"naive datetime {moment!r}: pass a timezone-aware one")
    return moment


def check_event_type(name: str) -> None:
    if not isinstance(name, str) or not _EVENT_TYPE_RE.fullmatch(name):
        raise ValueError(f"invalid event type {name!r}: use 1-128 of a-z, 0-9, '_', '.', '-'")
