"""Engine set-up: the embedded SQLite database, and pooled PostgreSQL connections."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from settler_jobs.storage import db
from settler_jobs.storage.db import create_engine


async def test_sqlite_engine_settings(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "deeper" / "settler.db"
    engine = create_engine(f"sqlite+aiosqlite:///{path}")
    try:
        async with engine.connect() as connection:
            pragmas = [
                (await connection.execute(text(f"PRAGMA {name}"))).scalar_one()
                for name in ("journal_mode", "foreign_keys", "busy_timeout")
            ]
    finally:
        await engine.dispose()
    assert pragmas == ["wal", 1, 5000]
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone() == ("wal",)


@pytest.mark.postgres
async def test_server_connections_are_pinged_only_after_being_idle(
    postgres_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = create_engine(postgres_database)
    killer = create_engine(postgres_database)

    async def backend_pid() -> int:
        async with engine.connect() as connection:
            return int((await connection.execute(text("SELECT pg_backend_pid()"))).scalar_one())

    async def kill(pid: int) -> None:
        async with killer.connect() as connection:
            await connection.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid})

    try:
        monkeypatch.setattr(db, "PING_AFTER_IDLE_S", 3600.0)
        await kill(await backend_pid())
        with pytest.raises(DBAPIError):  # used moments ago: no ping, the dead one fails
            await backend_pid()
        monkeypatch.setattr(db, "PING_AFTER_IDLE_S", 0.0)
        first = await backend_pid()
        await kill(first)
        assert await backend_pid() != first  # idle long enough: pinged, found dead, replaced
    finally:
        await engine.dispose()
        await killer.dispose()
