"""The relational schema (SQLAlchemy 2 declarative). Migrations in `migrations/` mirror it."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, Final

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    DateTime,
    Dialect,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION: Final = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

DLQ_STATUSES: Final = ("open", "resolved", "retried")
_STATUS_CHECK: Final = "status IN ({})".format(", ".join(f"'{s}'" for s in DLQ_STATUSES))

JSON_DOCUMENT: Final = JSON().with_variant(JSONB(), "postgresql")
"""JSON everywhere, stored as JSONB on PostgreSQL."""


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware timestamp on every backend.

    Binds only aware datetimes (naive ones raise ValueError), stores them in UTC
    (SQLite keeps no zone, so the UTC wall time is stored) and always returns aware
    UTC datetimes.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value!r}: pass a timezone-aware one")
        utc = value.astimezone(UTC)
        return utc.replace(tzinfo=None) if dialect.name == "sqlite" else utc

    def process_result_value(self, value: Any | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if not isinstance(value, datetime):
            raise TypeError(f"expected a datetime from the database, got {value!r}")
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Base(DeclarativeBase):
    """Declarative base; constraint names follow NAMING_CONVENTION."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def new_entry_id() -> str:
    """A fresh DLQ entry id (uuid4, 32 hex digits)."""
    return uuid.uuid4().hex


class DlqEntryRow(Base):
    """One failure of one job that ran out of attempts (or failed permanently)."""

    __tablename__ = "dlq_entries"
    __table_args__ = (
        UniqueConstraint("queue", "job_id", "failed_at_ms"),
        CheckConstraint(_STATUS_CHECK, name="status"),
        Index("ix_dlq_entries_tenant_status_created", "tenant_id", "status", "created_at"),
        Index("ix_dlq_entries_kind_status_created", "kind", "status", "created_at"),
        Index("ix_dlq_entries_status_created", "status", "created_at"),
        Index("ix_dlq_entries_tenant_created_id", "tenant_id", "created_at", "id"),  # exports
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_entry_id)
    queue: Mapped[str] = mapped_column(String(128))
    kind: Mapped[str] = mapped_column(String(64))
    job_id: Mapped[str] = mapped_column(String(128))
    tenant_id: Mapped[str | None] = mapped_column(String(64))
    tier: Mapped[str | None] = mapped_column(String(16))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON_DOCUMENT)
    error_type: Mapped[str] = mapped_column(String(128))
    error_message: Mapped[str] = mapped_column(Text)
    stacktrace: Mapped[str] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer)
    failed_at_ms: Mapped[int] = mapped_column(BigInteger)
    first_failed_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_failed_at: Mapped[datetime] = mapped_column(UTCDateTime())
    status: Mapped[str] = mapped_column(String(16), default="open", server_default="open")
    notes: Mapped[str] = mapped_column(Text, default="", server_default="")
    retried_job_id: Mapped[str | None] = mapped_column(String(128))
    resolved_by: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())

    # Every UPDATE also matches the updated_at it read, so concurrent changes cannot
    # overwrite each other where SELECT ... FOR UPDATE does not exist (SQLite).
    __mapper_args__ = {  # noqa: RUF012 - SQLAlchemy reads this mapping once
        "version_id_col": updated_at,
        "version_id_generator": False,
    }
