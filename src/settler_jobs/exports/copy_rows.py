"""Reading a dataset's rows on PostgreSQL with one ``COPY (SELECT ...) TO STDOUT``.

The same query as `rows.stream_rows` (the tenant's rows up to the export's creation, its
filters, the values rendered by SQL, in (time, id) order), with its parameters bound by
the server, streamed in PostgreSQL's text format and split into the same Python values
the driver would return: text as ``str``, integers as ``int``, NULL as None. The CSV
and PDF renderers then work on them as on any rows, formula neutralisation included.
One query instead of a page per 5,000 rows, and no driver or SQLAlchemy object per row.

Backpressure: the driver waits for each chunk to be taken before it reads the next, and
at most one batch waits in the queue, so memory stays flat whatever the row count.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncGenerator, Callable, Sequence
from datetime import datetime
from typing import Any, Final

from sqlalchemy import Integer, String, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from settler_jobs.exports.definition import Dataset, Filters
from settler_jobs.exports.rows import display

Row = Sequence[Any]
_NULL: Final = "\\N"
_ESCAPE: Final = re.compile(r"\\(.)")
_ESCAPED: Final = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}


def copy_supported(sessions: async_sessionmaker[AsyncSession], dataset: Dataset) -> bool:
    """True on PostgreSQL for a dataset whose shown values are all text or integers.

    Others (floats, whose text form differs from the driver's) use `rows.stream_rows`.
    """
    bind = sessions.kw.get("bind")
    if bind is None or bind.dialect.name != "postgresql":
        return False
    return all(_parser(display(col).type) is not None for _, col in dataset.columns)


def _parser(column_type: Any) -> Callable[[str], Any] | None:
    if isinstance(column_type, Integer):
        return int
    if isinstance(column_type, String):  # Text, Enum and other string types
        return str
    return None


def _unescape(field: str) -> str:
    return _ESCAPE.sub(lambda m: _ESCAPED.get(m.group(1), m.group(1)), field)


def _field(raw: str) -> str | None:
    if raw == _NULL:
        return None
    return _unescape(raw) if "\\" in raw else raw


async def copy_rows(
    sessions: async_sessionmaker[AsyncSession],
    dataset: Dataset,
    *,
    tenant_id: str,
    filters: Filters,
    until: datetime,
    batch_rows: int,
) -> AsyncGenerator[list[list[Any]], None]:
    """The rows `rows.stream_rows` yields (same values, same order), in batches of about
    `batch_rows`. Only where `copy_supported` says so."""
    columns = [display(col) for _, col in dataset.columns]
    ints = [i for i, col in enumerate(columns) if isinstance(col.type, Integer)]
    stmt = (
        select(*columns)
        .select_from(dataset.source)
        .where(*dataset.where(tenant_id, filters, until))
        .order_by(dataset.time_column, dataset.id_column)
    )
    async with sessions() as session:
        connection = await session.connection()
        compiled = stmt.compile(dialect=connection.dialect)
        args = _positional_params(compiled, connection.dialect)
        raw = await connection.get_raw_connection()
        driver: Any = raw.driver_connection
        queue: asyncio.Queue[list[list[Any]] | None] = asyncio.Queue(maxsize=1)
        parser = _TextParser(ints, batch_rows)

        async def take(chunk: bytes) -> None:
            for batch in parser.feed(chunk):
                await queue.put(batch)

        async def copy() -> None:
            try:
                await driver.copy_from_query(compiled.string, *args, output=take, format="text")
                for batch in parser.finish():
                    await queue.put(batch)
            except BaseException:
                # Failed or cancelled: the rows no longer matter, and the reader (if any is
                # left) must not wait for more, so the end mark goes in without waiting.
                while not queue.empty():
                    queue.get_nowait()
                queue.put_nowait(None)
                raise
            await queue.put(None)

        copying = asyncio.ensure_future(copy())
        try:
            while (batch := await queue.get()) is not None:
                yield batch
            await copying  # its error, if it failed
        finally:
            if not copying.done():  # the reader stopped early: abandon the COPY
                copying.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await copying
                # Mid-COPY, the connection cannot be reused (nor closed politely).
                await connection.invalidate()


def _positional_params(compiled: Any, dialect: Any) -> list[Any]:
    """The statement's bound values in `$n` order, through their types' bind processing."""
    params = compiled.construct_params()
    values = []
    for name in compiled.positiontup or ():
        value = params[name]
        process = compiled.binds[name].type.bind_processor(dialect)
        values.append(process(value) if process is not None else value)
    return values


class _TextParser:
    """Splits COPY text-format chunks into rows (lists of values), batch by batch."""

    def __init__(self, ints: Sequence[int], batch_rows: int) -> None:
        self._ints, self._batch_rows = ints, batch_rows
        self._tail = b""
        self._rows: list[list[Any]] = []

    def feed(self, chunk: bytes) -> list[list[list[Any]]]:
        """Take a chunk; return the batches now complete."""
        data = self._tail + chunk
        end = data.rfind(b"\n") + 1
        self._tail = data[end:]
        if end:
            self._parse(data[:end].decode("utf-8"))
        batches = []
        while len(self._rows) >= self._batch_rows:
            batches.append(self._rows[: self._batch_rows])
            del self._rows[: self._batch_rows]
        return batches

    def finish(self) -> list[list[list[Any]]]:
        """The last, partial batch (if any); the data must have ended with a row."""
        if self._tail:
            raise ValueError("COPY output ended inside a row")
        rows, self._rows = self._rows, []
        return [rows] if rows else []

    def _parse(self, text: str) -> None:
        lines = text.split("\n")
        lines.pop()  # after the last newline
        ints = self._ints
        rows = self._rows
        for line in lines:
            row: list[Any] = line.split("\t")
            if "\\" in line:
                row = [_field(raw) for raw in row]
            for i in ints:
                value = row[i]
                row[i] = None if value is None else int(value)
            rows.append(row)
