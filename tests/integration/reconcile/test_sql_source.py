"""The read-only SQL adapter against real SQLite and PostgreSQL databases."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import make_url, text
from sqlalchemy.ext.asyncio import create_async_engine

from settler_jobs.net_guard import GuardPolicy
from settler_jobs.reconcile import FieldMapping, MatchRules, SourceError, SqlSource
from settler_jobs.reconcile.run import run_reconciliation
from settler_jobs.reconcile.sql_source import check_query, read_sql

LOCAL = GuardPolicy.from_strings(False, ["127.0.0.1/32", "::1/128"])
MAPPING = FieldMapping(
    id="txn_id",
    amount="amount",
    currency="currency",
    date="booked",
    description="memo",
    reference=None,
)
# SQLite would store NUMERIC 12.5 as a float (refused as inexact): text keeps it exact.
CREATE = (
    "CREATE TABLE payments (txn_id VARCHAR(20), amount {amount}, currency VARCHAR(3),"
    " booked DATE, memo VARCHAR(50), ratio REAL)"
)
ROWS = (
    "INSERT INTO payments VALUES ('p1', 12.5, 'USD', '2026-01-02', 'first', 0.5),"
    " ('p2', -3, 'JPY', '2026-01-03', NULL, 0.25), ('p3', 1.2345, 'USD', '2026-01-04', 'x', 1)"
)


def sqlite_url(db_url: str, root: Path) -> str:
    """The test database as a file relative to the storage root `root`."""
    database = Path(make_url(db_url).database or "")
    return f"sqlite:///{database.relative_to(root).as_posix()}"


async def _execute(url: str, *statements: str) -> None:
    engine = create_async_engine(url)
    try:
        async with engine.begin() as connection:
            for statement in statements:
                await connection.execute(text(statement))
    finally:
        await engine.dispose()


@pytest.fixture
def source_url(db_url: str, tmp_path: Path) -> str:
    """A database with a `payments` table; SQLite as a file inside `tmp_path`."""
    sqlite = db_url.startswith("sqlite")
    create = CREATE.format(amount="TEXT" if sqlite else "NUMERIC(18, 4)")
    statements = ("DROP TABLE IF EXISTS payments", create, ROWS)
    if sqlite:
        path = make_url(db_url).database or ""
        with sqlite3.connect(path) as connection:
            for statement in statements:
                connection.execute(statement)
        return sqlite_url(db_url, tmp_path)
    asyncio.run(_execute(db_url, *statements))
    return db_url


def spec(url: str, query: str = "SELECT * FROM payments ORDER BY txn_id") -> SqlSource:
    return SqlSource(url=url, query=query, mapping=MAPPING)


@pytest.mark.parametrize(
    "query",
    [
        "SELECT 1; DELETE FROM payments",
        "SELECT 1 -- hidden",
        "SELECT /* x */ 1",
        "DELETE FROM payments",
        "WITH gone AS (DELETE FROM payments RETURNING *) SELECT * FROM gone",
        "SELECT * INTO copy FROM payments",
        "select 1 for update",
        "PRAGMA writable_schema = 1",
        "EXPLAIN ANALYZE SELECT 1",
        "",
    ],
)
def test_only_a_single_read_only_select_passes_the_text_check(query: str) -> None:
    with pytest.raises(SourceError):
        check_query(query)


def test_a_trailing_semicolon_is_fine() -> None:
    assert check_query("  with a as (select 1) select * from a ; ") == (
        "with a as (select 1) select * from a"
    )


def test_rows_are_read_exactly(source_url: str, tmp_path: Path) -> None:
    frame, rejects = read_sql(spec(source_url), tmp_path, LOCAL)
    rows = frame.select("line", "id", "amount", "currency", "date", "description").rows()
    assert [(line, id_, float(amount), cur) for line, id_, amount, cur, _d, _m in rows] == [
        (1, "p1", 12.5, "USD"),
        (2, "p2", -3.0, "JPY"),
        (3, "p3", 1.2345, "USD"),
    ]
    assert rows[0][4] == "2026-01-02" and rows[0][5] == "first"
    assert rejects == []
    # the whole run: p3 has more decimals than USD allows, so it is reported, not rounded
    result = run_reconciliation(
        spec(source_url), spec(source_url), MatchRules(), files_root=tmp_path, policy=LOCAL
    )
    assert result.summary.matched == 2
    assert result.unmatched.select("side", "reason").rows() == [
        ("source", "malformed"),
        ("target", "malformed"),
    ]


def test_float_columns_are_refused_per_row(source_url: str, tmp_path: Path) -> None:
    mapping = MAPPING.model_copy(update={"amount": "ratio"})
    query = SqlSource(url=source_url, query="SELECT * FROM payments", mapping=mapping)
    frame, rejects = read_sql(query, tmp_path, LOCAL)
    assert frame.is_empty()
    assert {r["reason"] for r in rejects} == {
        "field 'ratio' is a binary floating-point number (inexact); send it as text"
    }


def test_a_missing_column_fails_clearly(source_url: str, tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="no column 'booked'"):
        read_sql(
            spec(source_url, "SELECT txn_id, amount, currency, memo FROM payments"), tmp_path, LOCAL
        )


@pytest.mark.postgres
def test_postgres_refuses_writes_the_text_check_cannot_see(
    postgres_database: str, tmp_path: Path
) -> None:
    asyncio.run(_execute(postgres_database, "DROP SEQUENCE IF EXISTS s", "CREATE SEQUENCE s"))
    with pytest.raises(SourceError, match="read-only transaction"):
        read_sql(spec(postgres_database, "SELECT nextval('s') AS txn_id"), tmp_path, LOCAL)


def test_sqlite_files_must_be_in_the_tenant_storage(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    sqlite3.connect(tmp_path / "data" / "tenant.db").close()
    other_root = tmp_path / "elsewhere"
    other_root.mkdir()
    with pytest.raises(SourceError, match="does not exist"):
        read_sql(spec("sqlite:///data/tenant.db"), other_root, LOCAL)
    with pytest.raises(SourceError, match="leaves the tenant's storage"):
        read_sql(spec("sqlite:///../data/tenant.db"), other_root, LOCAL)


def test_database_hosts_pass_the_network_guard(tmp_path: Path) -> None:
    for url in (
        "postgresql://u:p@127.0.0.1/db",
        "postgresql://u:p@[::1]:5432/db",
        "postgresql://u:p@169.254.169.254/db",
    ):
        with pytest.raises(SourceError, match="the database host is refused"):
            read_sql(spec(url), tmp_path, GuardPolicy())
    with pytest.raises(SourceError, match="not supported"):
        read_sql(spec("mysql://u:p@db.example.com/x"), tmp_path, GuardPolicy())
