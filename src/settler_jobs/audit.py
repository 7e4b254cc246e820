"""The audit log: who changed what, for which tenant. Append-only.

`record_audit` is for every part of the system that changes state on someone's behalf;
it writes through the caller's session (the caller commits, so the audit row and the
change land together). Reads are tenant-scoped.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from settler_jobs.clock import utc_now
from settler_jobs.redaction import redact
from settler_jobs.storage.audit_tables import AuditLogRow

MAX_DETAILS_BYTES: Final = 4096
"""Larger details are replaced by a note saying so: the audit log is not a payload store."""
MAX_PAGE: Final = 500


@dataclass(frozen=True)
class AuditEntry:
    """One audit row; `created_at` is aware UTC."""

    id: int
    actor: str
    tenant_id: str | None
    action: str
    target_type: str | None
    target_id: str | None
    details: dict[str, Any]
    created_at: datetime


def _clip(text: str, limit: int, what: str) -> str:
    if not text.strip():
        raise ValueError(f"audit {what} must not be empty")
    return text[:limit]


def _details(details: dict[str, Any] | None) -> dict[str, Any]:
    cleaned = redact(details or {})
    value = cleaned if isinstance(cleaned, dict) else {"value": cleaned}
    size = len(json.dumps(value, default=str))
    return value if size <= MAX_DETAILS_BYTES else {"truncated": True, "bytes": size}


async def record_audit(
    session: AsyncSession,
    *,
    actor: str,
    tenant_id: str | None,
    action: str,
    target: tuple[str, str | None] | None = None,
    details: dict[str, Any] | None = None,
    now: datetime | None = None,
) -> None:
    """Add an audit row in the caller's transaction.

    `action` is a dotted verb such as ``webhook_endpoint.create``; `target` is
    ``(type, id)``; `details` are redacted and kept only up to 4 KiB of JSON.
    """
    target_type, target_id = target if target is not None else (None, None)
    session.add(
        AuditLogRow(
            actor=_clip(actor, 128, "actor"),
            tenant_id=tenant_id,
            action=_clip(action, 64, "action"),
            target_type=target_type[:64] if target_type else None,
            target_id=target_id[:128] if target_id else None,
            details=_details(details),
            created_at=now or utc_now(),
        )
    )


async def record_audit_now(
    sessions: async_sessionmaker[AsyncSession],
    *,
    actor: str,
    tenant_id: str | None,
    action: str,
    target: tuple[str, str | None] | None = None,
    details: dict[str, Any] | None = None,
) -> None:
    """`record_audit` in a transaction of its own (after a change already committed)."""
    async with sessions() as session, session.begin():
        await record_audit(
            session,
            actor=actor,
            tenant_id=tenant_id,
            action=action,
            target=target,
            details=details,
        )


async def list_audit(
    session: AsyncSession,
    *,
    tenant_id: str | None,
    action: str | None = None,
    limit: int = 50,
    before_id: int | None = None,
) -> list[AuditEntry]:
    """A tenant's audit rows newest first (`tenant_id` None: only system-wide rows)."""
    stmt = select(AuditLogRow).where(
        AuditLogRow.tenant_id.is_(None) if tenant_id is None else AuditLogRow.tenant_id == tenant_id
    )
    if action is not None:
        stmt = stmt.where(AuditLogRow.action == action)
    if before_id is not None:
        stmt = stmt.where(AuditLogRow.id < before_id)
    stmt = stmt.order_by(AuditLogRow.id.desc()).limit(max(1, min(limit, MAX_PAGE)))
    return [
        AuditEntry(
            id=row.id,
            actor=row.actor,
            tenant_id=row.tenant_id,
            action=row.action,
            target_type=row.target_type,
            target_id=row.target_id,
            details=dict(row.details),
            created_at=row.created_at,
        )
        for row in await session.scalars(stmt)
    ]
