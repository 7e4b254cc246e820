"""Raw frames: every mapped field as text, plus the line (or record number) it came from.

Adapters that read records one by one (JSON Lines, HTTP, SQL) feed `RawBuilder`, which
keeps memory bounded by turning every `CHUNK_ROWS` records into a columnar frame.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any, Final

import polars as pl

from settler_jobs.errors import SettlerError
from settler_jobs.reconcile.normalise import FIELDS, empty_raw
from settler_jobs.reconcile.specs import FieldMapping

CHUNK_ROWS: Final = 50_000
RAW_SCHEMA: Final = {"line": pl.Int64, **{f: pl.String for f in FIELDS}}


class SourceError(SettlerError):
    """A source cannot be read at all (missing file or column, refused query, bad API).

    `transient` says whether trying again later may help (network, server errors).
    """

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_source_error, (str(self), self.transient))


def _rebuild_source_error(message: str, transient: bool) -> SourceError:
    return SourceError(message, transient=transient)


def as_text(value: object) -> str | None:
    """A scalar as the exact text a record field holds; None for null, ValueError otherwise.

    Floats are refused: their binary value is not the decimal the producer meant. Read
    JSON with ``parse_float=str`` and SQL NUMERIC as Decimal to keep amounts exact.
    """
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError("is a boolean")
    if isinstance(value, str):
        return value
    if isinstance(value, int | Decimal):
        return str(value)
    if isinstance(value, float):
        raise ValueError("is a binary floating-point number (inexact); send it as text")
    if hasattr(value, "isoformat"):
        return str(value.isoformat())
    raise ValueError(f"is a {type(value).__name__}, not a scalar")


def lookup(record: Mapping[str, Any], path: str) -> object:
    """`record[path]`, or a dotted path into nested objects (``amount.value``)."""
    if path in record:
        return record[path]
    value: object = record
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


class RawBuilder:
    """Collects records (mappings) into a raw frame; unreadable ones into rejects."""

    def __init__(self, mapping: FieldMapping) -> None:
        self._columns = mapping.columns()
        self._rows: list[tuple[int, dict[str, str | None]]] = []
        self._frames: list[pl.DataFrame] = []
        self.rejects: list[dict[str, object]] = []

    def add(self, line: int, record: object) -> None:
        """Add one record read from `line`; a non-object or non-scalar field is a reject."""
        if not isinstance(record, Mapping):
            self.rejects.append(_reject(line, "the record is not a JSON object"))
            return
        fields: dict[str, str | None] = {}
        for name, column in self._columns.items():
            try:
                fields[name] = as_text(lookup(record, column))
            except ValueError as exc:
                self.rejects.append(_reject(line, f"field '{column}' {exc}"))
                return
        self._rows.append((line, fields))
        if len(self._rows) >= CHUNK_ROWS:
            self._flush()

    def reject(self, line: int, reason: str) -> None:
        """Record a line that could not be read at all."""
        self.rejects.append(_reject(line, reason))

    def _flush(self) -> None:
        if not self._rows:
            return
        data: dict[str, list[Any]] = {"line": [line for line, _ in self._rows]}
        for name in FIELDS:
            data[name] = [fields.get(name) for _, fields in self._rows]
        self._frames.append(pl.DataFrame(data, schema=RAW_SCHEMA))
        self._rows.clear()

    def frame(self) -> pl.DataFrame:
        """Everything added so far, as one raw frame."""
        self._flush()
        return pl.concat(self._frames) if self._frames else empty_raw()


def _reject(line: int, reason: str) -> dict[str, object]:
    return {"line": line, "reason": reason, **dict.fromkeys(FIELDS)}
