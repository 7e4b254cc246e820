"""Splitting PostgreSQL COPY text output into the values the driver would return."""

from __future__ import annotations

import pytest

from settler_jobs.exports.copy_rows import _TextParser

TEXT = (
    "7\t-12\t\\N\tplain\n-3\t\\N\t0\tZürich\\tTab\\nNL\\\\N \\b\\f\\v\\r\n42\t5\t\\N\t\\N\n"
).encode()
EXPECTED = [
    [7, -12, None, "plain"],
    [-3, None, 0, "Zürich\tTab\nNL\\N \b\f\v\r"],
    [42, 5, None, None],
]


@pytest.mark.parametrize("chunk", [1, 2, 7, len(TEXT)])
def test_rows_come_out_whole_whatever_the_chunks(chunk: int) -> None:
    parser = _TextParser(ints=[0, 1, 2], batch_rows=2)
    batches = []
    for start in range(0, len(TEXT), chunk):  # splits rows and UTF-8 characters too
        batches += parser.feed(TEXT[start : start + chunk])
    batches += parser.finish()

    assert [len(b) for b in batches] == [2, 1]
    assert [row for batch in batches for row in batch] == EXPECTED


def test_output_ending_inside_a_row_is_an_error() -> None:
    parser = _TextParser(ints=[], batch_rows=10)
    parser.feed(b"complete\nincomp")
    with pytest.raises(ValueError, match="inside a row"):
        parser.finish()
