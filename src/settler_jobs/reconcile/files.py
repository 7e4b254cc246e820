"""File adapters: CSV, JSON Lines and Parquet in the tenant's file storage, as raw frames.

Paths are relative to the storage root handed in by the caller and may not leave it
(no absolute paths, no ``..``, no symlinks pointing out). Only the mapped columns are
read. Line numbers: CSV counts the header as line 1 (a field with an embedded newline
shifts the count after it), JSON Lines counts physical lines, Parquet numbers rows from 1.
CSV rows with missing trailing fields read them as empty; extra fields are ignored.
"""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl

from settler_jobs.reconcile.normalise import FIELDS, empty_raw
from settler_jobs.reconcile.raw import RawBuilder, SourceError
from settler_jobs.reconcile.specs import FieldMapping, FileSource


def resolve_path(root: Path, relative: str) -> Path:
    """`root / relative`, refusing anything that resolves outside `root` (SourceError)."""
    if Path(relative).is_absolute():
        raise SourceError(f"file path {relative!r} must be relative to the tenant's storage")
    base = root.resolve()
    path = (base / relative).resolve()
    if not path.is_relative_to(base):
        raise SourceError(f"file path {relative!r} leaves the tenant's storage")
    if not path.is_file():
        raise SourceError(f"file {relative!r} does not exist in the tenant's storage")
    return path


def _select(columns: list[str], mapping: FieldMapping, what: str) -> list[pl.Expr]:
    wanted = mapping.columns()
    missing = sorted(c for c in wanted.values() if c not in columns)
    if missing:
        raise SourceError(f"{what} has no column {', '.join(map(repr, missing))}")
    exprs = [pl.col(wanted[f]).cast(pl.String).alias(f) for f in FIELDS if f in wanted]
    return exprs + [pl.lit(None, pl.String).alias(f) for f in FIELDS if f not in wanted]


def read_csv(path: Path, mapping: FieldMapping, delimiter: str = ",") -> pl.DataFrame:
    """Mapped columns of a CSV file with a header row, every value as text."""
    if path.stat().st_size == 0:
        return empty_raw()
    scan = pl.scan_csv(
        path,
        separator=delimiter,
        infer_schema=False,
        encoding="utf8-lossy",
        truncate_ragged_lines=True,
        row_index_name="line",
        row_index_offset=2,
    )
    try:
        exprs = _select(scan.collect_schema().names(), mapping, "the CSV header")
        frame = scan.select(pl.col("line").cast(pl.Int64), *exprs).collect(engine="streaming")
    except pl.exceptions.PolarsError as exc:
        raise SourceError(f"the CSV file cannot be read: {exc}") from exc
    return frame.select("line", *FIELDS)


def read_parquet(path: Path, mapping: FieldMapping) -> pl.DataFrame:
    """Mapped columns of a Parquet file as text (decimals exactly; floats as shortest text)."""
    try:
        scan = pl.scan_parquet(path)
        exprs = _select(scan.collect_schema().names(), mapping, "the Parquet file")
        frame = (
            scan.with_row_index("line", offset=1)
            .select(pl.col("line").cast(pl.Int64), *exprs)
            .collect(engine="streaming")
        )
    except pl.exceptions.PolarsError as exc:
        raise SourceError(f"the Parquet file cannot be read: {exc}") from exc
    return frame.select("line", *FIELDS)


def read_jsonl(path: Path, mapping: FieldMapping) -> tuple[pl.DataFrame, list[dict[str, object]]]:
    """Records of a JSON Lines file (numbers kept as exact text) and unreadable lines."""
    builder = RawBuilder(mapping)
    with path.open("rb") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line, parse_float=str, parse_int=str)
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                builder.reject(number, f"not valid JSON: {exc}")
                continue
            builder.add(number, record)
    return builder.frame(), builder.rejects


def read_file(spec: FileSource, root: Path) -> tuple[pl.DataFrame, list[dict[str, object]]]:
    """The raw frame of a file source and the lines that could not be read."""
    path = resolve_path(root, spec.path)
    if spec.format == "csv":
        return read_csv(path, spec.mapping, spec.delimiter), []
    if spec.format == "parquet":
        return read_parquet(path, spec.mapping), []
    return read_jsonl(path, spec.mapping)
