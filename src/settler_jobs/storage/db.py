"""Async engines and session factories for SQLite (embedded) and PostgreSQL."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

from sqlalchemy import URL, event, make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

SQLITE_BUSY_TIMEOUT_MS: Final = 5000
_SQLITE_PRAGMAS: Final = (
    "PRAGMA journal_mode=WAL",
    # WAL + NORMAL: a commit survives a killed process; only an OS crash may lose the
    # last commits. FULL would fsync on every commit, the embedded setup's bottleneck.
    "PRAGMA synchronous=NORMAL",
    "PRAGMA foreign_keys=ON",
    f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}",
)


def create_engine(url: str) -> AsyncEngine:
    """An async engine for `url` (`sqlite+aiosqlite://...` or `postgresql+asyncpg://...`).

    SQLite files get their parent folder created and every connection runs in WAL mode
    with foreign keys on and a busy timeout; other databases ping pooled connections
    before use. Call `await engine.dispose()` when done.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(parsed)
    return create_async_engine(parsed, pool_pre_ping=True)


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions bound to `engine`; objects stay readable after commit."""
    return async_sessionmaker(engine, expire_on_commit=False)


def _sqlite_engine(url: URL) -> AsyncEngine:
    _ensure_parent_folder(url)
    # One connection: SQLite runs one writer at a time anyway, and waiting for the pool
    # in asyncio is far cheaper than SQLite's busy handler sleeping on a locked file.
    engine = create_async_engine(url, pool_size=1, max_overflow=0, pool_timeout=60)
    event.listen(engine.sync_engine, "connect", _apply_sqlite_pragmas)
    return engine


def _ensure_parent_folder(url: URL) -> None:
    database = url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)


def _apply_sqlite_pragmas(dbapi_connection: Any, _connection_record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        for pragma in _SQLITE_PRAGMAS:
            cursor.execute(pragma)
    finally:
        cursor.close()
