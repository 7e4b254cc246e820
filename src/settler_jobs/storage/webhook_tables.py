"""Webhook tables: endpoints, events, deliveries, attempts and tenant notifications.

They are declared on `tables.Base`, so importing this module registers them in
`Base.metadata` (the migration environment imports it). Migration 0002 mirrors them.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Final

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    true,
)
from sqlalchemy.orm import Mapped, mapped_column

from settler_jobs.storage.tables import JSON_DOCUMENT, Base, UTCDateTime

DELIVERY_STATUSES: Final = ("pending", "delivering", "succeeded", "failed", "cancelled")
_DELIVERY_STATUS_CHECK: Final = "status IN ({})".format(
    ", ".join(f"'{s}'" for s in DELIVERY_STATUSES)
)
ROW_ID: Final = BigInteger().with_variant(Integer(), "sqlite")
"""BIGINT identity on PostgreSQL; INTEGER on SQLite, where only that is the rowid."""


def new_hex_id() -> str:
    """A fresh endpoint or notification id (uuid4, 32 hex digits)."""
    return uuid.uuid4().hex


def new_event_id() -> str:
    """A fresh event id: ``evt_`` + 32 hex digits."""
    return f"evt_{uuid.uuid4().hex}"


def new_delivery_id() -> str:
    """A fresh delivery id, also the Standard Webhooks ``webhook-id``: ``msg_`` + 32 hex."""
    return f"msg_{uuid.uuid4().hex}"


class WebhookEndpointRow(Base):
    """A tenant's receiver URL, its subscriptions, sealed secrets and health."""

    __tablename__ = "webhook_endpoints"
    __table_args__ = (Index("ix_webhook_endpoints_tenant_enabled", "tenant_id", "enabled"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_hex_id)
    tenant_id: Mapped[str] = mapped_column(String(64))
    url: Mapped[str] = mapped_column(Text)
    description: Mapped[str] = mapped_column(String(500), default="", server_default="")
    event_types: Mapped[list[str] | None] = mapped_column(JSON_DOCUMENT, nullable=True)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    disabled_reason: Mapped[str | None] = mapped_column(Text)
    disabled_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    secret_ciphertext: Mapped[str] = mapped_column(Text)
    secret_hint: Mapped[str] = mapped_column(String(32))
    """`secrets_box.mask` of the current secret, so listings need no key."""
    previous_secret_ciphertext: Mapped[str | None] = mapped_column(Text)
    previous_secret_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    consecutive_failures: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    last_success_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    failing_since: Mapped[datetime | None] = mapped_column(UTCDateTime())
    disabled_notified_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class WebhookEventRow(Base):
    """One published event; the payload every delivery of it sends."""

    __tablename__ = "webhook_events"
    __table_args__ = (Index("ix_webhook_events_tenant_created", "tenant_id", "created_at"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=new_event_id)
    tenant_id: Mapped[str] = mapped_column(String(64))
    event_type: Mapped[str] = mapped_column(String(128))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON_DOCUMENT)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class WebhookDeliveryRow(Base):
    """One event to one endpoint (one message id), retried until final.

    `generation` grows on every manual redelivery; `enqueued_generation` is the outbox
    marker (the generation whose job has been enqueued; 0: none yet).
    """

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        CheckConstraint(_DELIVERY_STATUS_CHECK, name="status"),
        Index("ix_webhook_deliveries_tenant_created", "tenant_id", "created_at"),
        Index("ix_webhook_deliveries_status_next_attempt", "status", "next_attempt_at"),
        Index("ix_webhook_deliveries_endpoint_created", "endpoint_id", "created_at"),
        # Retention deletes events no delivery references (migration 0008).
        Index("ix_webhook_deliveries_event_id", "event_id"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=new_delivery_id)
    tenant_id: Mapped[str] = mapped_column(String(64))
    endpoint_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("webhook_endpoints.id", ondelete="CASCADE")
    )
    event_id: Mapped[str] = mapped_column(String(40), ForeignKey("webhook_events.id"))
    status: Mapped[str] = mapped_column(String(16), default="pending", server_default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    generation: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    enqueued_generation: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    tier: Mapped[str] = mapped_column(String(16), default="starter", server_default="starter")
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class WebhookAttemptRow(Base):
    """One HTTP attempt of a delivery, as the delivery log shows it."""

    __tablename__ = "webhook_attempts"
    __table_args__ = (Index("ix_webhook_attempts_delivery_attempt", "delivery_id", "attempt_no"),)

    id: Mapped[int] = mapped_column(ROW_ID, primary_key=True, autoincrement=True)
    delivery_id: Mapped[str] = mapped_column(
        String(40), ForeignKey("webhook_deliveries.id", ondelete="CASCADE")
    )
    attempt_no: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime())
    status_code: Mapped[int | None] = mapped_column(Integer)
    latency_ms: Mapped[int] = mapped_column(Integer)
    error_class: Mapped[str | None] = mapped_column(String(64))
    response_excerpt: Mapped[str] = mapped_column(Text, default="", server_default="")
    next_retry_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class TenantNotificationRow(Base):
    """A message recorded for a tenant (until notifications can be emailed)."""

    __tablename__ = "tenant_notifications"
    __table_args__ = (Index("ix_tenant_notifications_tenant_created", "tenant_id", "created_at"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_hex_id)
    tenant_id: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(64))
    subject: Mapped[str] = mapped_column(String(256))
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
