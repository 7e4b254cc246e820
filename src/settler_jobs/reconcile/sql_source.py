"""The SQL adapter: one read-only SELECT against a tenant's database, read in batches.

Two locks keep it read-only. The text must be a single SELECT (or WITH ... SELECT):
one statement, no comments, none of the words that write or change the session
(`FORBIDDEN`, even inside string literals: refuse rather than parse). And it runs inside
a read-only transaction (PostgreSQL ``SET TRANSACTION READ ONLY`` with a statement
timeout; SQLite opened ``mode=ro`` with ``PRAGMA query_only``), so the database itself
refuses any write the text check missed. Give the adapter a role that may only read.

PostgreSQL hosts pass the network guard like any outbound address (checked once before
connecting: unlike the HTTP adapter, the driver resolves the name again, so a rebinding
DNS answer is not yet ruled out; pin the host to an IP where that matters). A SQLite database
must be a file in the tenant's storage (``sqlite:///relative/path.db``). Rows are
numbered from 1; NUMERIC values are read as exact decimals, floats are refused per row
(SQLite stores NUMERIC with a fraction as a float: keep amounts there as TEXT or INTEGER).
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Final

import asyncpg
import polars as pl
from sqlalchemy import make_url, text
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.ext.asyncio import create_async_engine

from settler_jobs.config import normalise_database_url
from settler_jobs.net_guard import GuardPolicy, Refused, check_address, parse_ip_literal
from settler_jobs.reconcile.files import resolve_path
from settler_jobs.reconcile.raw import RawBuilder, SourceError
from settler_jobs.reconcile.specs import SqlSource

FORBIDDEN: Final = frozenset(
    (  # noqa: SIM905 - a word list reads better than a column of strings
        "alter analyze attach call cluster comment copy create delete detach discard do drop "
        "execute grant import insert into listen load lock merge notify pragma prepare refresh "
        "reindex replace reset revoke savepoint set truncate unlisten update vacuum"
    ).split()
)
BATCH_ROWS: Final = 10_000
STATEMENT_TIMEOUT_MS: Final = 300_000
CONNECT_TIMEOUT_S: Final = 10
_WORD: Final = re.compile(r"[A-Za-z_]+")


def check_query(query: str) -> str:
    """The query without a trailing semicolon; SourceError unless one read-only SELECT."""
    body = query.strip().removesuffix(";").strip()
    if ";" in body:
        raise SourceError("the query must be a single statement (no ';' inside)")
    if "--" in body or "/*" in body:
        raise SourceError("the query may not contain comments")
    words = [w.lower() for w in _WORD.findall(body)]
    if not words or words[0] not in ("select", "with"):
        raise SourceError("the query must start with SELECT or WITH")
    if bad := sorted(FORBIDDEN.intersection(words)):
        raise SourceError(f"the query may only read; refused word(s): {', '.join(bad)}")
    return body


class _Rows:
    """Numbers query rows from 1 and feeds them to a RawBuilder, batch by batch."""

    def __init__(self, spec: SqlSource, columns: Sequence[str]) -> None:
        missing = sorted(c for c in spec.mapping.columns().values() if c not in columns)
        if missing:
            raise SourceError(f"the query returns no column {', '.join(map(repr, missing))}")
        self.columns, self.builder, self.count = list(columns), RawBuilder(spec.mapping), 0

    def feed(self, batch: Iterable[Sequence[Any]]) -> None:
        for row in batch:
            self.count += 1
            self.builder.add(self.count, dict(zip(self.columns, row, strict=True)))

    def result(self) -> tuple[pl.DataFrame, list[dict[str, object]]]:
        return self.builder.frame(), self.builder.rejects


def _read_sqlite(
    spec: SqlSource, query: str, root: Path
) -> tuple[pl.DataFrame, list[dict[str, object]]]:
    database = make_url(spec.url).database or ""
    path = resolve_path(root, database)
    try:
        connection = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise SourceError(f"the SQLite file cannot be opened: {exc}") from exc
    try:
        connection.execute("PRAGMA query_only = ON")
        cursor = connection.execute(query)
        rows = _Rows(spec, [d[0] for d in cursor.description or ()])
        while batch := cursor.fetchmany(BATCH_ROWS):
            rows.feed(batch)
        return rows.result()
    except sqlite3.Error as exc:
        raise SourceError(f"the query failed: {exc}") from exc
    finally:
        connection.close()


def _check_host(host: str, port: int, policy: GuardPolicy) -> None:
    literal = parse_ip_literal(host)
    if literal is not None:
        addresses: list[str] = [str(literal)]
    else:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise SourceError(f"database host {host!r} cannot be resolved") from exc
        addresses = [str(info[4][0]) for info in infos]
    for address in addresses:
        check_address(ipaddress.ip_address(address), policy, f"postgresql://{host}:{port}/")


async def _read_postgres(
    spec: SqlSource, query: str
) -> tuple[pl.DataFrame, list[dict[str, object]]]:
    engine = create_async_engine(
        normalise_database_url(spec.url), connect_args={"timeout": CONNECT_TIMEOUT_S}
    )
    try:
        async with engine.connect() as connection:
            await connection.execute(text("SET TRANSACTION READ ONLY"))
            await connection.execute(text(f"SET LOCAL statement_timeout = {STATEMENT_TIMEOUT_MS}"))
            result = await connection.stream(text(query))
            rows = _Rows(spec, list(result.keys()))
            async for batch in result.partitions(BATCH_ROWS):
                rows.feed(batch)
            await connection.rollback()
        return rows.result()
    finally:
        await engine.dispose()


def read_sql(
    spec: SqlSource, files_root: Path, policy: GuardPolicy
) -> tuple[pl.DataFrame, list[dict[str, object]]]:
    """Run the spec's query read-only and return its rows as a raw frame (and rejects)."""
    query = check_query(spec.query)
    try:
        url = make_url(spec.url)
    except ArgumentError as exc:
        raise SourceError("the database URL cannot be parsed") from exc
    backend = url.get_backend_name()
    if backend == "sqlite":
        return _read_sqlite(spec, query, files_root)
    if backend != "postgresql":
        raise SourceError(f"database {backend!r} is not supported (PostgreSQL or SQLite)")
    try:
        _check_host(url.host or "localhost", url.port or 5432, policy)
    except Refused as exc:
        raise SourceError(f"the database host is refused: {exc.detail} ({exc.rule})") from exc
    try:
        return asyncio.run(_read_postgres(spec, query))
    except (OSError, SQLAlchemyError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        transient = isinstance(exc, OSError) or getattr(exc, "connection_invalidated", False)
        message = str(getattr(exc, "orig", exc)).splitlines()[0][:300]
        raise SourceError(f"the query failed: {message}", transient=transient) from exc
