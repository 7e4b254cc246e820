"""CSV lines written a column at a time, byte for byte as `csv.writer` writes them.

`csv.writer` (comma, ``"``, CRLF, QUOTE_MINIMAL) costs a C call per row and a type check
per cell; for a batch of a few thousand rows, these columns are turned into text with a
few calls per column, and the lines joined by C loops. Quoting follows the writer: a
field containing a comma, a quote, CR or LF is quoted with inner quotes doubled; None is
empty; numbers are ``str()``. Anything else (other types, NUL characters, one-column
rows whose empty field the writer quotes) returns None: write those with `csv.writer`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Final

_NEEDS_QUOTES: Final = re.compile(r'[,"\r\n]')
_NONE: Final = type(None)
_NUMBERS: Final = frozenset({int, float})


def csv_lines(columns: Sequence[Sequence[Any]]) -> str | None:
    """The CSV lines (each ending in CRLF) of the rows these columns hold, or None."""
    if len(columns) < 2:
        return None
    if not columns[0]:
        return ""
    fields: list[Sequence[str]] = []
    for column in columns:
        text = _column_text(column)
        if text is None:
            return None
        fields.append(text)
    return "\r\n".join(map(",".join, zip(*fields, strict=True))) + "\r\n"


def _column_text(column: Sequence[Any]) -> Sequence[str] | None:
    types = set(map(type, column))
    if types <= _NUMBERS:
        return list(map(str, column))
    if types <= _NUMBERS | {_NONE}:
        return ["" if v is None else str(v) for v in column]
    if not types <= {str, _NONE}:
        return None
    texts = [v for v in column if v is not None] if _NONE in types else column
    joined = "".join(texts)
    if "\0" in joined:
        return None
    if _NONE in types:
        column = ["" if v is None else v for v in column]
    if _NEEDS_QUOTES.search(joined) is None:
        return column
    return [_quoted(v) if _NEEDS_QUOTES.search(v) else v for v in column]


def _quoted(text: str) -> str:
    return '"' + text.replace('"', '""') + '"'
