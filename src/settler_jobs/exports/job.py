"""The export-generation kind: the payload names an export record; the handler writes
its file and records the outcome (row count, size, sha256, storage key, expiry).

A job that runs again after success does nothing; a failed attempt puts the export back
to pending with the error, the last one marks it failed.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any, Final

from pydantic import BaseModel, ConfigDict, Field, model_validator

from settler_jobs.context import JobContext
from settler_jobs.errors import InvalidJob, NotFound, PermanentFailure
from settler_jobs.exports import store
from settler_jobs.exports.generate import Limits, generate
from settler_jobs.exports.store import Export, ExportStatus
from settler_jobs.redaction import mask_string
from settler_jobs.storage.files import object_store

STALE_TEMP_S: Final = 3600.0
"""Temporary files older than this were left by killed writers (the kind times out at 900 s)."""


class ExportPayload(BaseModel):
    """Which export to generate; everything else is in its record."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    exportId: str = Field(pattern=r"^exp_[0-9a-f]{32}$")

    @model_validator(mode="before")
    @classmethod
    def _not_the_seed_shape(cls, data: Any) -> Any:
        if isinstance(data, dict) and "exportId" not in data and "reportId" in data:
            raise ValueError(
                "export-generation jobs carry an exportId: request exports with "
                "Exports.create_export, `settler-jobs exports create` or POST /v1/exports"
            )
        return data


def _summary(export: Export, **extra: Any) -> dict[str, Any]:
    return {"exportId": export.id, "dataset": export.dataset, "format": export.format, **extra}


async def generate_export(payload: ExportPayload, ctx: JobContext) -> dict[str, Any]:
    """Generate the export's file; the record ends succeeded or (after the last try) failed."""
    res = ctx.resources
    async with res.sessions() as session:
        try:
            export = await store.get_export(session, payload.exportId, tenant_id=ctx.tenant_id)
        except NotFound:
            raise PermanentFailure(f"export {payload.exportId} does not exist") from None
    if export.status is ExportStatus.SUCCEEDED:
        return _summary(export, rows=export.row_count, skipped=True)
    await _set(ctx, export, status=ExportStatus.RUNNING, job_id=ctx.job_id)
    try:
        settings = res.settings
        objects = await asyncio.to_thread(object_store, settings)
        await asyncio.to_thread(objects.remove_stale_temp, STALE_TEMP_S)
        written = await generate(
            res.sessions,
            objects,
            export,
            now=res.now(),
            limits=Limits(settings.export_batch_rows, settings.export_pdf_max_rows),
        )
    except InvalidJob as exc:
        await _set(ctx, export, status=ExportStatus.FAILED, error=str(exc))
        raise PermanentFailure(str(exc)) from exc
    except Exception as exc:
        final = isinstance(exc, PermanentFailure) or ctx.is_last_attempt
        error = mask_string(f"{type(exc).__name__}: {exc}")
        status = ExportStatus.FAILED if final else ExportStatus.PENDING
        await _set(ctx, export, status=status, error=error)
        raise
    expires = res.now() + timedelta(days=res.settings.export_ttl_days)
    await _set(
        ctx,
        export,
        status=ExportStatus.SUCCEEDED,
        row_count=written.row_count,
        size_bytes=written.size_bytes,
        sha256=written.sha256,
        storage_key=written.storage_key,
        expires_at=expires,
        error=None,
    )
    return _summary(export, rows=written.row_count, bytes=written.size_bytes)


async def _set(ctx: JobContext, export: Export, **values: Any) -> None:
    async with ctx.resources.sessions() as session, session.begin():
        await store.update_export(
            session, export.id, tenant_id=export.tenant_id, now=ctx.resources.now(), **values
        )
