"""The email sent-ledger: one row per (tenant, idempotency key, recipient).

Declared on `tables.Base`, so importing this module registers it in `Base.metadata`
(the migration environment imports it). Migration 0004 mirrors it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Final

from sqlalchemy import CheckConstraint, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from settler_jobs.storage.tables import Base, UTCDateTime

SEND_STATUSES: Final = ("pending", "sending", "sent", "failed")
_STATUS_CHECK: Final = "status IN ({})".format(", ".join(f"'{s}'" for s in SEND_STATUSES))


class EmailSendRow(Base):
    """One email to one recipient: `sending` before the provider call, `sent` after.

    `pending`: a passing failure, to be tried again; `failed`: given up (`job_id` is the
    job that gave up, so its own retries skip the row and a new job tries again).
    """

    __tablename__ = "email_sends"
    __table_args__ = (
        CheckConstraint(_STATUS_CHECK, name="status"),
        Index("ix_email_sends_tenant_created", "tenant_id", "created_at"),
    )

    tenant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    idempotency_key: Mapped[str] = mapped_column(String(255), primary_key=True)
    recipient: Mapped[str] = mapped_column(String(254), primary_key=True)
    template: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    job_id: Mapped[str] = mapped_column(String(128))
    provider: Mapped[str] = mapped_column(String(16))
    provider_message_id: Mapped[str | None] = mapped_column(String(255))
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
