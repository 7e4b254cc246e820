"""CSV and PDF rendering: formula neutralisation, RFC 4180 output, paginated PDFs."""

from __future__ import annotations

import csv
import hashlib
import io
from datetime import UTC, datetime
from typing import Any

import pytest
from pypdf import PdfReader

from settler_jobs.exports.render import (
    CsvRenderer,
    Sink,
    _csv_row,
    _csv_rows,
    cell_text,
    csv_cell,
)
from settler_jobs.exports.render_pdf import PdfRenderer

FULLWIDTH_EQUALS, FULLWIDTH_PLUS, FULLWIDTH_MINUS, FULLWIDTH_AT = (
    "\uff1d",
    "\uff0b",
    "\uff0d",
    "\uff20",
)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("=SUM(A1:A2)", "'=SUM(A1:A2)"),
        ("+1+2", "'+1+2"),
        ("-2+3", "'-2+3"),
        ("@cmd", "'@cmd"),
        ("\tleading tab", "'\tleading tab"),
        ("\rleading cr", "'\rleading cr"),
        ("   =after spaces", "'   =after spaces"),
        (f"{FULLWIDTH_EQUALS}1+1", f"'{FULLWIDTH_EQUALS}1+1"),
        (f"{FULLWIDTH_PLUS}1", f"'{FULLWIDTH_PLUS}1"),
        (f"{FULLWIDTH_MINUS}1", f"'{FULLWIDTH_MINUS}1"),
        (f"{FULLWIDTH_AT}x", f"'{FULLWIDTH_AT}x"),
        ("plain", "plain"),
        ("a=b", "a=b"),
        ("", ""),
        ("   ", "   "),
        ("'quoted", "'quoted"),
        (None, ""),
        (-5, -5),
        (3.5, 3.5),
        (True, "true"),
        ({"b": 1, "a": "=x"}, '{"a": "=x", "b": 1}'),
        (datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC), "2026-01-02T03:04:05.000000Z"),
    ],
)
def test_csv_cells_neutralise_formulas(value: Any, expected: Any) -> None:
    assert csv_cell(value) == expected
    data, _ = _csv(["value"], [[value]])
    [_header, [cell]] = list(csv.reader(io.StringIO(data.decode("utf-8-sig"), newline="")))
    assert cell == ("" if expected is None else str(expected))


def _csv(headers: list[str], *batches: list[list[Any]]) -> tuple[bytes, Sink]:
    out = io.BytesIO()
    sink = Sink(out)
    renderer = CsvRenderer(sink)
    renderer.begin(headers)
    for batch in batches:
        renderer.write_rows(batch)
    renderer.finish()
    return out.getvalue(), sink


def test_csv_is_rfc4180_utf8_with_bom_and_header() -> None:
    data, sink = _csv(
        ["id", "text"],
        [[1, 'say "hi", then\nleave'], [2, "Zürich ½ 東京"]],
        [[3, None]],
    )
    assert data.startswith(b"\xef\xbb\xbfid,text\r\n")
    assert b'1,"say ""hi"", then\nleave"\r\n' in data
    assert data.endswith(b"3,\r\n")
    rows = list(csv.reader(io.StringIO(data.decode("utf-8-sig"), newline="")))
    assert rows == [
        ["id", "text"],
        ["1", 'say "hi", then\nleave'],
        ["2", "Zürich ½ 東京"],
        ["3", ""],
    ]
    assert sink.size == len(data)
    assert sink.sha256 == hashlib.sha256(data).hexdigest()


def _pdf(rows: list[list[Any]], headers: list[str] | None = None) -> PdfReader:
    out = io.BytesIO()
    renderer = PdfRenderer(
        Sink(out), title="Export: audit_log", meta=[("Tenant", "acme"), ("Filters", "none")]
    )
    renderer.begin(headers or ["id", "text"])
    renderer.write_rows(rows)
    renderer.finish()
    return PdfReader(io.BytesIO(out.getvalue()))


def test_pdf_paginates_every_row_with_page_numbers() -> None:
    reader = _pdf([[i, f"row-{i}"] for i in range(200)])
    pages = len(reader.pages)
    assert pages > 3
    text = [page.extract_text() for page in reader.pages]
    assert "Export: audit_log" in text[0]
    assert "Tenant: acme" in text[0]
    for n, page_text in enumerate(text, start=1):
        assert f"Page {n} of {pages}" in page_text
        assert "text" in page_text  # the header row repeats
    everything = "\n".join(text)
    assert all(f"row-{i}" in everything for i in range(200))


def test_pdf_prints_non_latin1_and_replaces_missing_glyphs() -> None:
    long = "x" * 500
    reader = _pdf([[1, "Zürich Ελληνικά Кириллица"], [2, "東京"], [3, "a\x00b\nc"], [4, long]])
    text = reader.pages[0].extract_text()
    assert "Zürich Ελληνικά Кириллица" in text
    assert "??" in text  # no CJK glyphs in DejaVu Sans
    assert "a b c" in text
    assert "x" * 500 not in text and "…" in text


def test_cell_text_of_lists_is_json() -> None:
    assert cell_text(["a", 1]) == '["a", 1]'


@pytest.mark.parametrize(
    "rows",
    [
        [],
        [["ok", 1, None, ""], ["fine", -5, None, ""]],  # plain columns pass as they are
        [["ok", 1], ["=1+1", 2], [" x", 3], ["a\n=b", 4]],  # a suspect cell in a column
        [["x" * 40_000, True], ["short", False]],  # a long cell; booleans
        [["a", 1.5, datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)], ["b", 2, None]],
        [["a", "b"], ["ragged"]],  # rows of different widths: row by row
        [["@a", None], [None, "\uff0bb"], [1, "mixed"]],
    ],
)
def test_csv_cells_worked_out_by_column_equal_those_by_row(rows: list[list[Any]]) -> None:
    by_row = [[csv_cell(v) if (v is not None and not isinstance(v, int)) or isinstance(v, bool)
               else v for v in row] for row in rows]  # fmt: skip

    assert [list(row) for row in _csv_rows(rows)] == [_csv_row(row) for row in rows] == by_row
