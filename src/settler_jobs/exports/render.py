"""Rows to bytes: CSV (streamed) and PDF (fpdf2, in render_pdf.py). Blocking code: run it
in a thread.

CSV: RFC 4180 (comma, CRLF line ends, fields quoted when needed), UTF-8 with a byte
order mark, header row first. The BOM is there because these files are mostly opened
in spreadsheets, which read BOM-less CSV as a legacy code page; `csv` readers skip it
with ``encoding="utf-8-sig"``. Text cells a spreadsheet would run as a formula (first
non-space character ``= + - @``, their full-width forms, tab or CR) get a leading
``'``; numbers are written as they are.

PDF: A4 landscape, title, tenant, filters and generation time on the first page, the
column header on every page, "Page n of N" in the footer. Cells are cut to their
column's width (ending in "…"); control characters become spaces and characters the
bundled DejaVu Sans font has no glyph for (such as CJK) become "?". fpdf2 keeps the
whole document in memory, so PDF exports are capped (SETTLER_EXPORT_PDF_MAX_ROWS).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from operator import itemgetter
from pathlib import Path
from typing import IO, Any, Final, Protocol

from settler_jobs.exports.csv_lines import csv_lines

FONT_PATH: Final = Path(__file__).resolve().parent / "fonts" / "DejaVuSans.ttf"
FORMULA_TRIGGERS: Final = frozenset("=+-@\t\r\uff1d\uff0b\uff0d\uff20")  # + full-width = + - @
_SUSPECT: Final = FORMULA_TRIGGERS | {" "}
BOM: Final = "\ufeff"
ISO_UTC: Final = "%Y-%m-%dT%H:%M:%S.%fZ"
"""How times are written (the database renders them the same way, `export_datasets`)."""
MAX_CELL_CHARS: Final = 32_000
CONTROL_CHARS: Final = re.compile(r"[\x00-\x1f\x7f-\x9f]")
"""Control characters, which a PDF cell shows as spaces."""


class Sink:
    """A binary file that also counts and hashes what passes through it."""

    def __init__(self, target: IO[bytes]) -> None:
        self._target = target
        self._hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> None:
        self._hash.update(data)
        self._target.write(data)
        self.size += len(data)

    @property
    def sha256(self) -> str:
        """Hex digest of every byte written so far."""
        return self._hash.hexdigest()


def cell_text(value: Any) -> str:
    """One value as text: ISO 8601 times, JSON for documents, '' for NULL."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime(ISO_UTC)
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)
    return str(value)


def neutralise(text: str) -> str:
    """Prefix ``'`` to text a spreadsheet would evaluate as a formula."""
    stripped = text.lstrip(" ")
    if stripped and stripped[0] in FORMULA_TRIGGERS:
        return "'" + text
    return text


def csv_cell(value: Any) -> Any:
    """A CSV field: numbers as they are, text neutralised and bounded."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value
    return neutralise(cell_text(value)[:MAX_CELL_CHARS])


def _csv_row(row: Sequence[Any]) -> list[Any]:
    # Safe text, ints and NULLs pass without a call.
    return [_csv_value(v) for v in row]


def _csv_value(v: Any) -> Any:
    if (
        v is None
        or (cls := v.__class__) is int
        or (cls is str and (not v or v[0] not in _SUSPECT) and len(v) <= MAX_CELL_CHARS)
    ):
        return v
    return csv_cell(v)


_NUMBERS_AND_NULLS: Final = frozenset({int, type(None)})
_SUSPECT_START: Final = re.compile("\n[" + re.escape("".join(sorted(_SUSPECT))) + "]")


def _csv_rows(rows: Sequence[Sequence[Any]]) -> Iterable[Sequence[Any]]:
    """`_csv_row` of every row, worked out a column at a time (see `_csv_columns`)."""
    columns = _csv_columns(rows)
    return map(_csv_row, rows) if columns is None else zip(*columns, strict=True)


def _csv_columns(rows: Sequence[Sequence[Any]]) -> list[Sequence[Any]] | None:
    """The columns of `_csv_row` of every row; None if the rows differ in width.

    The hot loop of a CSV export. A column of ints and NULLs passes as it is, and so does
    one of text (and NULLs) whose cells are all short and none starts with a suspect
    character: that takes a few calls per column (one joined string, one search), not
    one per cell. Other columns go through `_csv_value` cell by cell.
    """
    widths = set(map(len, rows))
    if len(widths) != 1:
        return None
    columns: list[Sequence[Any]] = []
    for i in range(widths.pop()):
        column = list(map(itemgetter(i), rows))
        types = set(map(type, column))
        if types <= _NUMBERS_AND_NULLS:
            columns.append(column)
            continue
        if types <= {str, type(None)}:
            texts = list(filter(None, column))  # empty text passes like NULL
            if not texts or (
                max(map(len, texts)) <= MAX_CELL_CHARS
                and _SUSPECT_START.search("\n" + "\n".join(texts)) is None
            ):
                columns.append(column)
                continue
        columns.append(list(map(_csv_value, column)))
    return columns


class Renderer(Protocol):
    """Writes rows to a sink in one format."""

    def begin(self, headers: Sequence[str]) -> None: ...

    def write_rows(self, rows: Sequence[Sequence[Any]]) -> None: ...

    def finish(self) -> None: ...


class CsvRenderer:
    """RFC 4180 CSV, UTF-8 with BOM, one batch of rows per call."""

    def __init__(self, sink: Sink) -> None:
        self._sink = sink
        self._buffer = io.StringIO()
        self._writer = csv.writer(self._buffer, lineterminator="\r\n")

    def _flush(self) -> None:
        self._sink.write(self._buffer.getvalue().encode("utf-8", "surrogatepass"))
        self._buffer.seek(0)
        self._buffer.truncate()

    def begin(self, headers: Sequence[str]) -> None:
        self._buffer.write(BOM)
        self._writer.writerow(headers)
        self._flush()

    def write_rows(self, rows: Sequence[Sequence[Any]]) -> None:
        columns = _csv_columns(rows) if rows else None
        text = None if columns is None else csv_lines(columns)
        if text is not None:
            self._buffer.write(text)
        else:
            self._writer.writerows(_csv_rows(rows))
        self._flush()

    def finish(self) -> None:
        self._flush()
