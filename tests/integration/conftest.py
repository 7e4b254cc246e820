"""Database fixtures: every test gets a migrated SQLite file and PostgreSQL database.

PostgreSQL comes from `SETTLER_TEST_POSTGRES_URL` (default: the local server, user
postgres). Each test module gets its own freshly created database, emptied before every
test and dropped at the end. Without a reachable server the PostgreSQL cases are
skipped, except under CI (`CI=true`), where they fail.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import NoReturn

import pytest
from sqlalchemy import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

import settler_jobs.storage.schema  # noqa: F401 - every table in Base.metadata
from settler_jobs.config import normalise_database_url
from settler_jobs.storage.db import create_engine, session_factory
from settler_jobs.storage.migrate import upgrade
from tests.postgres import empty_tables_sql, execute

POSTGRES_URL_ENV = "SETTLER_TEST_POSTGRES_URL"
DEFAULT_POSTGRES_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"


def _admin_url() -> str:
    return normalise_database_url(os.environ.get(POSTGRES_URL_ENV) or DEFAULT_POSTGRES_URL)


def _unavailable(reason: str) -> NoReturn:
    if os.environ.get("CI") == "true":
        pytest.fail(f"PostgreSQL is required under CI: {reason}")
    pytest.skip(f"PostgreSQL unavailable: {reason}")


@pytest.fixture(scope="module")
def postgres_database() -> Iterator[str]:
    """URL of a fresh, migrated PostgreSQL database for this test module."""
    admin = _admin_url()
    name = f"settler_test_{uuid.uuid4().hex[:16]}"
    try:
        asyncio.run(execute(admin, f'CREATE DATABASE "{name}"', autocommit=True))
    except (OSError, DBAPIError) as exc:
        _unavailable(f"{type(exc).__name__}: {exc}")
    url = make_url(admin).set(database=name).render_as_string(hide_password=False)
    try:
        upgrade(url)
        yield url
    finally:
        drop = f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'
        asyncio.run(execute(admin, drop, autocommit=True))


@pytest.fixture(params=["redis-queue", pytest.param("pg-queue", marks=pytest.mark.postgres)])
def queue_backend(request: pytest.FixtureRequest) -> str:
    """Every test built on `settings` runs on the Redis and on the PostgreSQL queue."""
    return "postgres" if request.param == "pg-queue" else "redis"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """URL of an empty database migrated to head: SQLite, then PostgreSQL."""
    if request.param == "sqlite":
        sqlite_url = f"sqlite+aiosqlite:///{tmp_path / 'data' / 'settler.db'}"
        upgrade(sqlite_url)
        return sqlite_url
    postgres_url: str = request.getfixturevalue("postgres_database")
    asyncio.run(execute(postgres_url, empty_tables_sql()))
    return postgres_url


@pytest.fixture
async def db_session_factory(db_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """Sessions on the `db_url` database; the engine is disposed afterwards."""
    engine = create_engine(db_url)
    try:
        yield session_factory(engine)
    finally:
        await engine.dispose()
