"""Reading a dataset's rows for a file: keyset pages, values rendered by SQL.

Each page is its own short query in its own session: memory stays flat whatever the row
count, and no connection is held between pages (the embedded SQLite has one).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    ColumnElement,
    Text,
    case,
    cast,
    literal,
    null,
    select,
    tuple_,
)
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement

from settler_jobs.exports.definition import Dataset, Filters
from settler_jobs.exports.render import ISO_UTC
from settler_jobs.storage.tables import UTCDateTime

Row = Sequence[Any]


async def stream_rows(
    sessions: async_sessionmaker[AsyncSession],
    dataset: Dataset,
    *,
    tenant_id: str,
    filters: Filters,
    until: datetime,
    batch_rows: int,
) -> AsyncIterator[Sequence[Row]]:
    """The tenant's rows in (time, id) order, `batch_rows` at a time.

    Values come back as the database renders them for a file: times as ISO 8601 UTC
    text, JSON documents as JSON text, booleans as ``true``/``false``; SQL does that
    work, not a Python call per cell.
    """
    keyset = (dataset.time_column, dataset.id_column)
    at_time, at_id = dataset.position(dataset.time_column), dataset.position(dataset.id_column)
    base = (
        select(*(display(col) for _, col in dataset.columns))
        .select_from(dataset.source)
        .where(*dataset.where(tenant_id, filters, until))
        .order_by(*keyset)
        .limit(batch_rows)
    )
    after: tuple[datetime, Any] | None = None
    while True:
        stmt = base
        if after is not None:
            bound = tuple_(literal(after[0], UTCDateTime()), literal(after[1]))
            stmt = base.where(tuple_(*keyset) > bound)
        async with sessions() as session:
            rows = (await session.execute(stmt)).all()
        if rows:
            yield rows
            # The next page starts after the last row, read back from its display values
            # (ISO text keeps every microsecond), so rows need no extra columns.
            last = rows[-1]
            after = (datetime.strptime(last[at_time], ISO_UTC).replace(tzinfo=UTC), last[at_id])
        if len(rows) < batch_rows:
            return


class IsoUtc(FunctionElement[str]):
    """A UTC timestamp column as ISO 8601 text with microseconds and ``Z``."""

    type = Text()
    inherit_cache = True


@compiles(IsoUtc, "sqlite")
def _iso_sqlite(element: IsoUtc, compiler: Any, **kw: Any) -> str:
    # UTCDateTime stores 'YYYY-MM-DD HH:MM:SS.ffffff' (UTC) on SQLite.
    return f"(replace({compiler.process(element.clauses, **kw)}, ' ', 'T') || 'Z')"


@compiles(IsoUtc, "postgresql")
def _iso_postgres(element: IsoUtc, compiler: Any, **kw: Any) -> str:
    column = compiler.process(element.clauses, **kw)
    return f"to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"


def display(col: ColumnElement[Any]) -> ColumnElement[Any]:
    """The column as an export shows it (see `stream_rows`)."""
    if isinstance(col.type, UTCDateTime):
        return IsoUtc(col)
    if isinstance(col.type, JSON):
        return cast(col, Text)
    if isinstance(col.type, Boolean):
        return case((col.is_(None), null()), (col, literal("true")), else_=literal("false"))
    return col
