"""Engine set-up for the embedded SQLite database."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from sqlalchemy import text

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
