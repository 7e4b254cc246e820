"""One entry point for every adapter: a source spec in, a raw frame and unreadable rows out."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from settler_jobs.net_guard import GuardPolicy
from settler_jobs.reconcile.files import read_file
from settler_jobs.reconcile.http_source import read_http
from settler_jobs.reconcile.specs import FileSource, HttpSource, SqlSource
from settler_jobs.reconcile.sql_source import read_sql


def load_raw(
    spec: FileSource | SqlSource | HttpSource, files_root: Path, policy: GuardPolicy
) -> tuple[pl.DataFrame, list[dict[str, object]]]:
    """Read `spec`: files (and SQLite files) inside `files_root`, network through `policy`.

    Raises `SourceError` if the source cannot be read at all.
    """
    if isinstance(spec, FileSource):
        return read_file(spec, files_root)
    if isinstance(spec, SqlSource):
        return read_sql(spec, files_root, policy)
    return read_http(spec, policy)
