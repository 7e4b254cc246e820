"""Schema migrations from code: no alembic.ini, the scripts ship inside the package."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Final

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection

from settler_jobs.storage.db import create_engine

MIGRATIONS_DIR: Final = Path(__file__).resolve().parent.parent / "migrations"


def alembic_config(url: str) -> Config:
    """An Alembic config for `url` using the packaged migration scripts."""
    config = Config()
    # Options go through ConfigParser interpolation: escape '%'.
    config.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    config.set_main_option("path_separator", "os")
    config.attributes["url"] = url
    return config


def upgrade(url: str, revision: str = "head") -> None:
    """Migrate the database at `url` up to `revision` (blocking)."""
    command.upgrade(alembic_config(url), revision)


async def upgrade_async(url: str) -> None:
    """Migrate the database at `url` to the newest revision without blocking the loop."""
    await asyncio.to_thread(upgrade, url)


def current_revision(url: str) -> str | None:
    """The revision the database at `url` is at (None if never migrated)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(current_revision_async(url))
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, current_revision_async(url)).result()


async def current_revision_async(url: str) -> str | None:
    """`current_revision` for callers already on an event loop."""
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            return await connection.run_sync(_read_revision)
    finally:
        await engine.dispose()


def _read_revision(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()
