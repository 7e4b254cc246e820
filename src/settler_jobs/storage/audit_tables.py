"""Audit and error log tables.

`audit_logs`: who did what to which object of which tenant (append-only).
`error_logs`: one row per job that failed for good, for operators to review and resolve.
Declared on `tables.Base`; migration 0005 mirrors them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, Index, String, Text, false
from sqlalchemy.orm import Mapped, mapped_column

from settler_jobs.storage.tables import JSON_DOCUMENT, Base, UTCDateTime
from settler_jobs.storage.webhook_tables import ROW_ID


class AuditLogRow(Base):
    """One state-changing action (tenant None: a system-wide one)."""

    __tablename__ = "audit_logs"
    __table_args__ = (
        Index("ix_audit_logs_tenant_created", "tenant_id", "created_at", "id"),
        Index("ix_audit_logs_created", "created_at"),
    )

    id: Mapped[int] = mapped_column(ROW_ID, primary_key=True, autoincrement=True)
    actor: Mapped[str] = mapped_column(String(128))
    tenant_id: Mapped[str | None] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(64))
    target_type: Mapped[str | None] = mapped_column(String(64))
    target_id: Mapped[str | None] = mapped_column(String(128))
    details: Mapped[dict[str, Any]] = mapped_column(JSON_DOCUMENT)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class ErrorLogRow(Base):
    """A job that ran out of attempts or failed permanently."""

    __tablename__ = "error_logs"
    __table_args__ = (
        Index("ix_error_logs_tenant_created", "tenant_id", "created_at", "id"),
        Index("ix_error_logs_resolved_created", "resolved", "created_at"),
    )

    id: Mapped[int] = mapped_column(ROW_ID, primary_key=True, autoincrement=True)
    queue: Mapped[str] = mapped_column(String(128))
    kind: Mapped[str] = mapped_column(String(64))
    job_id: Mapped[str] = mapped_column(String(128))
    tenant_id: Mapped[str | None] = mapped_column(String(64))
    error_type: Mapped[str] = mapped_column(String(128))
    error_message: Mapped[str] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    resolved: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
