"""Export records over an `AsyncSession` (the caller commits).

Reads take the tenant: another tenant's export answers NotFound like a missing one.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, Final

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from settler_jobs import errors
from settler_jobs.domain import validate_tenant_id
from settler_jobs.storage.export_tables import ExportRow, new_export_id
from settler_jobs.storage.files import validate_key

EXPORT_ID_RE: Final = re.compile(r"^exp_[0-9a-f]{32}$")
MAX_ERROR: Final = 2000
MAX_PAGE: Final = 500


class ExportFormat(StrEnum):
    """File formats an export can have."""

    CSV = "csv"
    PDF = "pdf"


class ExportStatus(StrEnum):
    """pending -> running -> succeeded | failed (running -> pending between attempts)."""

    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


@dataclass(frozen=True)
class Export:
    """An export record; datetimes are aware UTC."""

    id: str
    tenant_id: str
    tier: str
    dataset: str
    format: ExportFormat
    filters: dict[str, Any]
    status: ExportStatus
    job_id: str | None
    row_count: int | None
    size_bytes: int | None
    sha256: str | None
    storage_key: str | None
    expires_at: datetime | None
    error: str | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_row(cls, row: ExportRow) -> Export:
        """Copy an ORM row into an immutable value."""
        fields = {name: getattr(row, name) for name in cls.__dataclass_fields__}
        fields["filters"] = copy.deepcopy(row.filters)
        fields["format"] = ExportFormat(row.format)
        fields["status"] = ExportStatus(row.status)
        return cls(**fields)


def storage_key(tenant_id: str, export_id: str, fmt: ExportFormat) -> str:
    """``exports/<tenant>/<export-id>.<ext>``, validated."""
    validate_tenant_id(tenant_id)
    if not EXPORT_ID_RE.fullmatch(export_id):
        raise ValueError(f"invalid export id {export_id!r}")
    return validate_key(f"exports/{tenant_id}/{export_id}.{ExportFormat(fmt).value}")


async def insert_export(
    session: AsyncSession,
    *,
    tenant_id: str,
    tier: str,
    dataset: str,
    fmt: ExportFormat,
    filters: dict[str, Any],
    now: datetime,
) -> Export:
    """Add a pending export."""
    row = ExportRow(
        id=new_export_id(),
        tenant_id=validate_tenant_id(tenant_id),
        tier=tier,
        dataset=dataset,
        format=ExportFormat(fmt).value,
        filters=filters,
        status=ExportStatus.PENDING.value,
        created_at=now,
        updated_at=now,
    )
    session.add(row)
    await session.flush()
    return Export.from_row(row)


async def get_export(session: AsyncSession, export_id: str, *, tenant_id: str) -> Export:
    """The tenant's export; NotFound otherwise."""
    row = await session.scalar(
        select(ExportRow).where(ExportRow.id == export_id, ExportRow.tenant_id == tenant_id)
    )
    if row is None:
        raise errors.NotFound(f"no export {export_id!r}")
    return Export.from_row(row)


async def list_exports(
    session: AsyncSession,
    *,
    tenant_id: str,
    status: ExportStatus | None = None,
    limit: int = 50,
) -> list[Export]:
    """The tenant's exports, newest first."""
    stmt = select(ExportRow).where(ExportRow.tenant_id == tenant_id)
    if status is not None:
        stmt = stmt.where(ExportRow.status == ExportStatus(status).value)
    stmt = stmt.order_by(ExportRow.created_at.desc(), ExportRow.id.desc())
    rows = await session.scalars(stmt.limit(max(1, min(limit, MAX_PAGE))))
    return [Export.from_row(row) for row in rows]


async def update_export(
    session: AsyncSession, export_id: str, *, tenant_id: str, now: datetime, **values: Any
) -> None:
    """Set columns of the tenant's export (status given as ExportStatus or str)."""
    if "status" in values:
        values["status"] = ExportStatus(values["status"]).value
    if isinstance(values.get("error"), str):
        values["error"] = values["error"][:MAX_ERROR]
    result = await session.execute(
        update(ExportRow)
        .where(ExportRow.id == export_id, ExportRow.tenant_id == tenant_id)
        .values(updated_at=now, **values)
    )
    if getattr(result, "rowcount", 1) == 0:
        raise errors.NotFound(f"no export {export_id!r}")
