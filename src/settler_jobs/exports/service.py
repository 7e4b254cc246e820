"""The Python API of exports: request one, follow it, download its file.

Every call is scoped to a tenant: another tenant's export answers `NotFound`, exactly
like a missing one. `create_export` validates the dataset and filters, commits the
record (with an audit row), then enqueues the job that only carries the export id. If
Redis is down then, the export is marked failed and `QueueUnavailable` is raised. On the
PostgreSQL queue backend the record, its audit row and its job commit in one
transaction instead: there is no export without its job, nor a job without its export.

    exports = services.exports
    export = await exports.create_export("acme", "audit_log", "csv", {"action": "x"})
    download = await exports.open_download("acme", export.id)   # once it succeeded
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Final

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from settler_jobs import errors
from settler_jobs.audit import record_audit
from settler_jobs.clock import utc_now
from settler_jobs.domain import Tier, validate_tenant_id
from settler_jobs.exports import store
from settler_jobs.exports.datasets import get_dataset
from settler_jobs.exports.store import Export, ExportFormat, ExportStatus
from settler_jobs.ports import Submitter, TransactionalSubmitter
from settler_jobs.records import Submission
from settler_jobs.storage.db import sql_runner
from settler_jobs.storage.files import ObjectStore, Readable, iter_chunks

EXPORT_KIND: Final = "export-generation"


@dataclass
class Download:
    """A finished export's file: `path` when stored locally, else only the stream."""

    export: Export
    path: Path | None
    stream: Readable

    def chunks(self) -> Iterator[bytes]:
        """The file's bytes in chunks (blocking reads); closes the stream at the end."""
        return iter_chunks(self.stream)

    def close(self) -> None:
        """Close the stream without reading it."""
        self.stream.close()


def _submission(export: Export) -> Submission:
    """The generation job of an export: it carries only the export id."""
    return Submission(
        kind=EXPORT_KIND,
        data={"exportId": export.id},
        tenant_id=export.tenant_id,
        tier=Tier(export.tier),
        idempotency_key=export.id,
    )


def _format(value: ExportFormat | str) -> ExportFormat:
    try:
        return ExportFormat(str(value).lower())
    except ValueError:
        raise errors.InvalidJob(f"unknown format {value!r}; expected csv or pdf") from None


class Exports:
    """Tenant-scoped export operations over a database, the job queue and object storage."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        submitter: Submitter,
        objects: ObjectStore,
        *,
        now: Callable[[], datetime] = utc_now,
    ) -> None:
        self._sessions = sessions
        self._submitter = submitter
        self._objects = objects
        self._now = now
        # The PostgreSQL queue adds jobs in our own transaction.
        self._in_transaction = submitter if isinstance(submitter, TransactionalSubmitter) else None

    async def create_export(
        self,
        tenant_id: str,
        dataset: str,
        format: ExportFormat | str,
        filters: dict[str, Any] | None = None,
        tier: Tier = Tier.STARTER,
        *,
        actor: str = "api",
    ) -> Export:
        """Record a pending export and enqueue its generation (InvalidJob on bad input)."""
        try:
            validate_tenant_id(tenant_id)
        except ValueError as exc:
            raise errors.InvalidJob(str(exc)) from None
        fmt = _format(format)
        parsed = get_dataset(dataset).parse_filters(filters)
        stored = parsed.model_dump(mode="json", exclude_none=True)
        async with self._sessions() as session, session.begin():
            export = await store.insert_export(
                session,
                tenant_id=tenant_id,
                tier=Tier(tier).value,
                dataset=dataset,
                fmt=fmt,
                filters=stored,
                now=self._now(),
            )
            await record_audit(
                session,
                actor=actor,
                tenant_id=tenant_id,
                action="export.create",
                target=("export", export.id),
                details={"dataset": dataset, "format": fmt.value, "filters": stored},
            )
            if self._in_transaction is not None:
                # Row and job commit together: the job sees its export, or neither exists.
                [submitted] = await self._in_transaction.submit_in(
                    sql_runner(session), [_submission(export)]
                )
                await store.update_export(
                    session,
                    export.id,
                    tenant_id=tenant_id,
                    now=self._now(),
                    job_id=submitted.job.id,
                )
        if self._in_transaction is not None:
            return await self.get_export(tenant_id, export.id)
        # Enqueue after commit: a worker must never see a job whose export row is not visible.
        return await self._enqueue(export)

    async def _enqueue(self, export: Export) -> Export:
        try:
            [submitted] = await self._submitter.submit_bulk([_submission(export)])
        except errors.QueueUnavailable as exc:
            await self._update(export, status=ExportStatus.FAILED, error=f"not enqueued: {exc}")
            raise
        await self._update(export, job_id=submitted.job.id)
        return await self.get_export(export.tenant_id, export.id)

    async def _update(self, export: Export, **values: Any) -> None:
        async with self._sessions() as session, session.begin():
            await store.update_export(
                session, export.id, tenant_id=export.tenant_id, now=self._now(), **values
            )

    async def get_export(self, tenant_id: str, export_id: str) -> Export:
        """One export (NotFound if it is not the tenant's)."""
        async with self._sessions() as session:
            return await store.get_export(session, export_id, tenant_id=tenant_id)

    async def list_exports(
        self, tenant_id: str, *, status: ExportStatus | str | None = None, limit: int = 50
    ) -> list[Export]:
        """The tenant's exports, newest first."""
        async with self._sessions() as session:
            return await store.list_exports(
                session,
                tenant_id=tenant_id,
                status=ExportStatus(status) if status is not None else None,
                limit=limit,
            )

    async def open_download(self, tenant_id: str, export_id: str) -> Download:
        """The finished file; InvalidState if the export is not succeeded or has expired."""
        export = await self.get_export(tenant_id, export_id)
        if export.status is not ExportStatus.SUCCEEDED or export.storage_key is None:
            raise errors.InvalidState(f"export {export_id} is {export.status.value}, not ready")
        if export.expires_at is not None and export.expires_at <= self._now():
            raise errors.InvalidState(f"export {export_id} expired at {export.expires_at}")
        key = export.storage_key
        stream = await asyncio.to_thread(self._objects.open_read, key)
        return Download(export, self._objects.local_path(key), stream)
