"""PostgreSQL helpers for fixtures: empty Settler's tables, drop a test's queue schema."""

from __future__ import annotations

import asyncio

from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

import settler_jobs.storage.schema  # noqa: F401 - every table in Base.metadata
from settler_jobs.storage.tables import Base

CONNECT_TIMEOUT_S = 5


async def execute(url: str, *statements: str, autocommit: bool = False) -> None:
    """Run `statements` in one transaction (or each on its own with `autocommit`)."""
    options = {"isolation_level": "AUTOCOMMIT"} if autocommit else {}
    engine = create_async_engine(url, connect_args={"timeout": CONNECT_TIMEOUT_S}, **options)
    try:
        async with engine.begin() as connection:
            for statement in statements:
                await connection.execute(text(statement))
    finally:
        await engine.dispose()


def empty_tables_sql() -> str:
    """TRUNCATE of every Settler table (the migrated schema stays)."""
    names = ", ".join(f'"{table.name}"' for table in Base.metadata.sorted_tables)
    return f"TRUNCATE {names}"


def empty_database(url: str) -> None:
    """Empty Settler's tables in the database at `url`."""
    asyncio.run(execute(url, empty_tables_sql()))


def drop_schema(url: str, schema: str) -> None:
    """Drop a test's queue schema and everything in it."""
    asyncio.run(execute(url, f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
