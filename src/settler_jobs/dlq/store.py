"""Dead-letter queue use cases over an `AsyncSession`.

Every function only reads and writes through the session it is given and never
commits: the caller owns the transaction. Results are frozen `DlqEntry` values, never
ORM rows. Tenant-scoped calls (`tenant_id=...`) treat another tenant's entry exactly
like a missing one (`errors.NotFound`).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from sqlalchemy import ColumnElement, Insert, and_, func, or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.exc import StaleDataError

from settler_jobs import errors
from settler_jobs.domain import DlqStatus as DlqStatus  # re-exported: part of this API
from settler_jobs.redaction import redact
from settler_jobs.storage.tables import DlqEntryRow, new_entry_id

MAX_ERROR_MESSAGE: Final = 4000
MAX_STACKTRACE: Final = 20_000
MAX_NOTE: Final = 2000
MAX_NAME: Final = 128
"""Longest actor, job id or error type stored."""
MAX_PAGE: Final = 500
_NATURAL_KEY: Final = ["queue", "job_id", "failed_at_ms"]


@dataclass(frozen=True)
class FailureRecord:
    """A final failure of a job, as the worker saw it (payload not yet redacted)."""

    queue: str
    kind: str
    job_id: str
    tenant_id: str | None
    tier: str | None
    payload: dict[str, Any]
    error_type: str
    error_message: str
    stacktrace: str
    attempts: int
    failed_at_ms: int
    first_failed_at: datetime
    last_failed_at: datetime


@dataclass(frozen=True)
class DlqEntry(FailureRecord):
    """A stored DLQ entry (its failure, redacted, plus triage state); datetimes are aware UTC."""

    id: str
    status: DlqStatus
    notes: str
    retried_job_id: str | None
    resolved_by: str | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_row(cls, row: DlqEntryRow) -> DlqEntry:
        """Copy an ORM row into an immutable value."""
        fields = {name: getattr(row, name) for name in cls.__dataclass_fields__}
        fields["payload"] = copy.deepcopy(row.payload)
        fields["status"] = DlqStatus(row.status)
        return cls(**fields)


async def record_failure(
    session: AsyncSession, rec: FailureRecord, now: datetime
) -> DlqEntry | None:
    """Store `rec` once per (queue, job_id, failed_at_ms); None if it was already stored."""
    values = _row_values(rec, _aware(now))
    stmt = _insert_new(session.get_bind().dialect.name, values)
    row = await session.scalar(stmt.returning(DlqEntryRow))
    return None if row is None else DlqEntry.from_row(row)


def _insert_new(dialect: str, values: dict[str, Any]) -> Insert:
    """INSERT that skips a row whose natural key is already stored."""
    if dialect == "sqlite":
        stmt = sqlite.insert(DlqEntryRow).values(values)
        return stmt.on_conflict_do_nothing(index_elements=_NATURAL_KEY)
    if dialect == "postgresql":
        pg_stmt = postgresql.insert(DlqEntryRow).values(values)
        return pg_stmt.on_conflict_do_nothing(index_elements=_NATURAL_KEY)
    raise errors.ConfigError(f"the DLQ needs SQLite or PostgreSQL, not {dialect}")


def _row_values(rec: FailureRecord, now: datetime) -> dict[str, Any]:
    payload = redact(rec.payload)
    return {
        "id": new_entry_id(),
        "queue": rec.queue,
        "kind": rec.kind,
        "job_id": rec.job_id,
        "tenant_id": rec.tenant_id,
        "tier": rec.tier,
        "payload": payload if isinstance(payload, dict) else {"value": payload},
        "error_type": rec.error_type[:MAX_NAME],
        "error_message": rec.error_message[:MAX_ERROR_MESSAGE],
        "stacktrace": rec.stacktrace[:MAX_STACKTRACE],
        "attempts": rec.attempts,
        "failed_at_ms": rec.failed_at_ms,
        "first_failed_at": _aware(rec.first_failed_at),
        "last_failed_at": _aware(rec.last_failed_at),
        "created_at": now,
        "updated_at": now,
    }


async def list_entries(
    session: AsyncSession,
    *,
    tenant_id: str | None = None,
    kind: str | None = None,
    status: DlqStatus | None = None,
    limit: int = 50,
    before: str | None = None,
) -> list[DlqEntry]:
    """Entries newest first (created_at, id descending), `limit` clamped to 1..500.

    `before`: id of the previous page's last entry (NotFound if not visible).
    """
    stmt = select(DlqEntryRow).where(*_tenant(tenant_id))
    if kind is not None:
        stmt = stmt.where(DlqEntryRow.kind == kind)
    if status is not None:
        stmt = stmt.where(DlqEntryRow.status == DlqStatus(status).value)
    if before is not None:
        stmt = stmt.where(_after(await _load(session, before, tenant_id, lock=False)))
    stmt = stmt.order_by(DlqEntryRow.created_at.desc(), DlqEntryRow.id.desc())
    rows = await session.scalars(stmt.limit(max(1, min(limit, MAX_PAGE))))
    return [DlqEntry.from_row(row) for row in rows]


def _after(last: DlqEntryRow) -> ColumnElement[bool]:
    return or_(
        DlqEntryRow.created_at < last.created_at,
        and_(DlqEntryRow.created_at == last.created_at, DlqEntryRow.id < last.id),
    )


async def get_entry(
    session: AsyncSession, entry_id: str, *, tenant_id: str | None = None
) -> DlqEntry:
    """The entry `entry_id`; NotFound if missing or not `tenant_id`'s."""
    return DlqEntry.from_row(await _load(session, entry_id, tenant_id, lock=False))


async def resolve(
    session: AsyncSession,
    entry_id: str,
    *,
    note: str,
    actor: str,
    now: datetime,
    tenant_id: str | None = None,
) -> DlqEntry:
    """Close an open entry as dealt with; InvalidState unless it is open."""
    text = _checked_note(note)
    row = await _open_row(session, entry_id, tenant_id, actor, now)
    row.status = DlqStatus.RESOLVED.value
    row.resolved_by = actor
    _append_note(row, f"resolved: {text}" if text else "resolved", actor, now)
    return await _flushed(session, row)


async def add_note(
    session: AsyncSession,
    entry_id: str,
    *,
    note: str,
    actor: str,
    now: datetime,
    tenant_id: str | None = None,
) -> DlqEntry:
    """Append a note (any status); ValueError if it is empty or over MAX_NOTE chars."""
    text = _checked_note(note)
    if not text:
        raise ValueError("note must not be empty")
    _checked_actor(actor)
    row = await _load(session, entry_id, tenant_id, lock=True)
    _append_note(row, text, actor, _aware(now))
    return await _flushed(session, row)


async def mark_retried(
    session: AsyncSession,
    entry_id: str,
    *,
    new_job_id: str,
    actor: str,
    now: datetime,
    tenant_id: str | None = None,
) -> DlqEntry:
    """Close an open entry because its job was re-enqueued as `new_job_id`."""
    if not new_job_id or len(new_job_id) > MAX_NAME:
        raise ValueError(f"new_job_id must be 1-{MAX_NAME} characters")
    row = await _open_row(session, entry_id, tenant_id, actor, now)
    row.status = DlqStatus.RETRIED.value
    row.retried_job_id = new_job_id
    row.resolved_by = actor
    _append_note(row, f"retried as job {new_job_id}", actor, now)
    return await _flushed(session, row)


async def count_open(session: AsyncSession, *, tenant_id: str | None = None) -> int:
    """How many entries (of `tenant_id`, or all) are open."""
    stmt = select(func.count()).select_from(DlqEntryRow).where(*_tenant(tenant_id))
    return int(await session.scalar(stmt.where(DlqEntryRow.status == DlqStatus.OPEN.value)) or 0)


def _tenant(tenant_id: str | None) -> list[ColumnElement[bool]]:
    return [] if tenant_id is None else [DlqEntryRow.tenant_id == tenant_id]


async def _load(
    session: AsyncSession, entry_id: str, tenant_id: str | None, *, lock: bool
) -> DlqEntryRow:
    stmt = select(DlqEntryRow).where(DlqEntryRow.id == entry_id, *_tenant(tenant_id))
    row = await session.scalar(stmt.with_for_update() if lock else stmt)
    if row is None:
        raise errors.NotFound(f"no DLQ entry {entry_id!r}")
    return row


async def _open_row(
    session: AsyncSession, entry_id: str, tenant_id: str | None, actor: str, now: datetime
) -> DlqEntryRow:
    """The locked, open row; inputs are checked first so a refusal changes nothing."""
    _checked_actor(actor)
    _aware(now)
    row = await _load(session, entry_id, tenant_id, lock=True)
    if row.status != DlqStatus.OPEN.value:
        raise errors.InvalidState(f"DLQ entry {entry_id!r} is {row.status}, not open")
    return row


async def _flushed(session: AsyncSession, row: DlqEntryRow) -> DlqEntry:
    entry_id = row.id  # read now: a failed flush expires the row
    try:
        await session.flush()
    except StaleDataError:
        raise errors.InvalidState(f"DLQ entry {entry_id!r} changed meanwhile") from None
    return DlqEntry.from_row(row)


def _append_note(row: DlqEntryRow, text: str, actor: str, now: datetime) -> None:
    stamp = _aware(now).astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    line = f"[{stamp}] {actor}: {text}"
    row.notes = f"{row.notes}\n{line}" if row.notes else line
    row.updated_at = now


def _checked_note(note: str) -> str:
    text = note.strip()
    if len(text) > MAX_NOTE:
        raise ValueError(f"note is {len(text)} characters; the limit is {MAX_NOTE}")
    return text


def _checked_actor(actor: str) -> None:
    if not actor.strip() or len(actor) > MAX_NAME:
        raise ValueError(f"actor must be 1-{MAX_NAME} characters")


def _aware(moment: datetime) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"naive datetime {moment!r}: pass a timezone-aware one")
    return moment
