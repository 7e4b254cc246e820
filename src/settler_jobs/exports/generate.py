"""Generating one export file: rows from the database, rendered, stored atomically.

The database is read in batches on the event loop (async driver; on PostgreSQL one COPY,
`copy_rows`); rendering and file writes run in a thread, so the loop keeps renewing the
job's lock. The file is published only when complete; a failed or retried attempt leaves
the previous state.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from settler_jobs.errors import PermanentFailure
from settler_jobs.exports import datasets
from settler_jobs.exports.copy_rows import copy_rows, copy_supported
from settler_jobs.exports.render import CsvRenderer, Renderer, Sink
from settler_jobs.exports.rows import stream_rows
from settler_jobs.exports.store import Export, ExportFormat, storage_key
from settler_jobs.storage.files import ObjectStore


@dataclass(frozen=True)
class Generated:
    """What was written."""

    storage_key: str
    row_count: int
    size_bytes: int
    sha256: str


@dataclass(frozen=True)
class Limits:
    """Batch size and the largest PDF."""

    batch_rows: int = 5000
    pdf_max_rows: int = 50_000


def _renderer(export: Export, sink: Sink, now: datetime) -> Renderer:
    if export.format is ExportFormat.CSV:
        return CsvRenderer(sink)
    meta = [
        ("Tenant", export.tenant_id),
        ("Filters", json.dumps(export.filters, sort_keys=True) if export.filters else "none"),
        ("Generated", now.astimezone(UTC).isoformat(timespec="seconds")),
        ("Export", export.id),
    ]
    from settler_jobs.exports.render_pdf import PdfRenderer  # fpdf2: loaded on first use

    return PdfRenderer(sink, title=f"Export: {export.dataset}", meta=meta)


async def generate(
    sessions: async_sessionmaker[AsyncSession],
    store: ObjectStore,
    export: Export,
    *,
    now: datetime,
    limits: Limits = Limits(),
) -> Generated:
    """Write the export's file to `store`; the rows are the tenant's, up to its creation."""
    dataset = datasets.get_dataset(export.dataset)
    filters = dataset.parse_filters(export.filters)
    key = storage_key(export.tenant_id, export.id, export.format)
    writing = store.open_write(key)
    target: IO[bytes] = await asyncio.to_thread(writing.__enter__)
    sink = Sink(target)
    # One batch renders in a thread while the next is read from the database.
    rendering: asyncio.Future[None] | None = None
    try:
        renderer = _renderer(export, sink, now)
        await asyncio.to_thread(renderer.begin, dataset.headers)
        count = 0
        source = copy_rows if copy_supported(sessions, dataset) else stream_rows
        async for batch in source(
            sessions,
            dataset,
            tenant_id=export.tenant_id,
            filters=filters,
            until=export.created_at,
            batch_rows=limits.batch_rows,
        ):
            count += len(batch)
            if export.format is ExportFormat.PDF and count > limits.pdf_max_rows:
                raise PermanentFailure(
                    f"more than {limits.pdf_max_rows} rows: too many for a PDF; export CSV "
                    "or narrow the filters"
                )
            if rendering is not None:
                await rendering
            rendering = asyncio.ensure_future(asyncio.to_thread(renderer.write_rows, batch))
        if rendering is not None:
            await rendering
        await asyncio.to_thread(renderer.finish)
    except BaseException as exc:
        await _abandon(writing, exc, rendering)
        raise
    await asyncio.to_thread(writing.__exit__, None, None, None)
    return Generated(key, count, sink.size, sink.sha256)


async def _abandon(
    writing: Any, exc: BaseException, rendering: asyncio.Future[None] | None
) -> None:
    """Discard the partial file, even while the attempt is being cancelled."""

    async def discard() -> None:
        if rendering is not None:
            # The thread cannot be stopped: let it finish before its file goes.
            await asyncio.gather(rendering, return_exceptions=True)
        await asyncio.to_thread(writing.__exit__, type(exc), exc, exc.__traceback__)

    await asyncio.shield(discard())
