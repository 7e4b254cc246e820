"""The error log: one row per job that failed for good (dead or permanently failed).

The worker writes it next to the dead-letter entry (`dead_letters.record`); operators
mark rows resolved. Reads are tenant-scoped; another tenant's row answers NotFound.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Final

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from settler_jobs import errors
from settler_jobs.storage.audit_tables import ErrorLogRow

MAX_MESSAGE: Final = 4000
MAX_PAGE: Final = 500


@dataclass(frozen=True)
class ErrorEntry:
    """One failed job; datetimes are aware UTC."""

    id: int
    queue: str
    kind: str
    job_id: str
    tenant_id: str | None
    error_type: str
    error_message: str
    attempts: int
    created_at: datetime
    resolved: bool
    resolved_at: datetime | None

    @classmethod
    def from_row(cls, row: ErrorLogRow) -> ErrorEntry:
        """Copy an ORM row into an immutable value."""
        return cls(**{name: getattr(row, name) for name in cls.__dataclass_fields__})


async def record_job_failure(
    session: AsyncSession,
    *,
    queue: str,
    kind: str,
    job_id: str,
    tenant_id: str | None,
    error_type: str,
    error_message: str,
    attempts: int,
    now: datetime,
) -> None:
    """Add an error row in the caller's transaction (the message should be masked already)."""
    session.add(
        ErrorLogRow(
            queue=queue[:128],
            kind=kind[:64],
            job_id=job_id[:128],
            tenant_id=tenant_id,
            error_type=error_type[:128],
            error_message=error_message[:MAX_MESSAGE],
            attempts=attempts,
            created_at=now,
            resolved=False,
        )
    )


async def list_errors(
    session: AsyncSession,
    *,
    tenant_id: str,
    resolved: bool | None = None,
    limit: int = 50,
) -> list[ErrorEntry]:
    """The tenant's failed jobs, newest first."""
    stmt = select(ErrorLogRow).where(ErrorLogRow.tenant_id == tenant_id)
    if resolved is not None:
        stmt = stmt.where(ErrorLogRow.resolved.is_(resolved))
    stmt = stmt.order_by(ErrorLogRow.id.desc()).limit(max(1, min(limit, MAX_PAGE)))
    return [ErrorEntry.from_row(row) for row in await session.scalars(stmt)]


async def resolve_error(
    session: AsyncSession, error_id: int, *, tenant_id: str, now: datetime
) -> ErrorEntry:
    """Mark a row resolved (idempotent: an already resolved row keeps its time)."""
    stmt = select(ErrorLogRow).where(ErrorLogRow.id == error_id, ErrorLogRow.tenant_id == tenant_id)
    row = await session.scalar(stmt)
    if row is None:
        raise errors.NotFound(f"no error log entry {error_id}")
    if not row.resolved:
        row.resolved, row.resolved_at = True, now
        await session.flush()
    return ErrorEntry.from_row(row)
