"""`csv_lines` writes exactly what `csv.writer` writes, or declines."""

from __future__ import annotations

import csv
import io
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from settler_jobs.exports.csv_lines import csv_lines

CELLS = st.one_of(
    st.none(),
    st.integers(),
    st.floats(allow_nan=False),
    st.text(alphabet=st.sampled_from("ab ,\"\r\n\t'=é✓\0\\"), max_size=6),
    st.text(max_size=4),
)


def _written(rows: list[list[Any]]) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="\r\n").writerows(rows)
    return out.getvalue()


@given(st.integers(min_value=1, max_value=5).flatmap(
    lambda width: st.lists(st.lists(CELLS, min_size=width, max_size=width), max_size=6)
))  # fmt: skip
def test_lines_are_those_of_csv_writer(rows: list[list[Any]]) -> None:
    columns = [list(column) for column in zip(*rows, strict=True)] if rows else []
    text = csv_lines(columns)

    if text is None:  # declined (the writer takes those): one column, NUL, mixed types
        mixed = any(
            str in {type(v) for v in column} and {int, float} & {type(v) for v in column}
            for column in columns
        )
        assert len(columns) < 2 or mixed or any("\0" in str(v) for row in rows for v in row)
    else:
        assert text == _written(rows)


def test_typical_export_rows() -> None:
    rows: list[list[Any]] = [
        [1, "2026-01-01T00:00:00.000000Z", "a@b.example", "'=SUM(A1)", None, '{"a": 1, "b": 2}'],
        [-2, "2026-01-01T00:00:01.000000Z", "", "line\nbreak", "x", "plain"],
    ]  # fmt: skip
    columns = [list(column) for column in zip(*rows, strict=True)]
    assert csv_lines(columns) == _written(rows)
    assert csv_lines([["only"]]) is None and csv_lines([["a", "b\0"], ["c", "d"]]) is None
