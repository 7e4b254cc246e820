"""The `exports` table: one requested export file of one tenant and its outcome.

Declared on `tables.Base`; migration 0005 mirrors it.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Final

from sqlalchemy import BigInteger, CheckConstraint, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from settler_jobs.storage.tables import JSON_DOCUMENT, Base, UTCDateTime

EXPORT_FORMATS: Final = ("csv", "pdf")
EXPORT_STATUSES: Final = ("pending", "running", "succeeded", "failed")


def _in(values: tuple[str, ...]) -> str:
    return ", ".join(f"'{v}'" for v in values)


def new_export_id() -> str:
    """A fresh export id: ``exp_`` + 32 hex digits."""
    return f"exp_{uuid.uuid4().hex}"


class ExportRow(Base):
    """An export: what was asked (dataset, format, filters) and where the file is."""

    __tablename__ = "exports"
    __table_args__ = (
        CheckConstraint(f"format IN ({_in(EXPORT_FORMATS)})", name="format"),
        CheckConstraint(f"status IN ({_in(EXPORT_STATUSES)})", name="status"),
        Index("ix_exports_tenant_created", "tenant_id", "created_at"),
        Index("ix_exports_status_expires", "status", "expires_at"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=new_export_id)
    tenant_id: Mapped[str] = mapped_column(String(64))
    tier: Mapped[str] = mapped_column(String(16))
    dataset: Mapped[str] = mapped_column(String(64))
    format: Mapped[str] = mapped_column(String(8))
    filters: Mapped[dict[str, Any]] = mapped_column(JSON_DOCUMENT)
    status: Mapped[str] = mapped_column(String(16), default="pending", server_default="pending")
    job_id: Mapped[str | None] = mapped_column(String(128))
    row_count: Mapped[int | None] = mapped_column(Integer)
    size_bytes: Mapped[int | None] = mapped_column(BigInteger)
    sha256: Mapped[str | None] = mapped_column(String(64))
    storage_key: Mapped[str | None] = mapped_column(String(512))
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
