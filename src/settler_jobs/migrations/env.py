"""Alembic environment: async-aware, driven from code (see settler_jobs.storage.migrate).

The database URL comes from `config.attributes["url"]` (or the `sqlalchemy.url` option).
Online runs open an async engine on their own event loop; when called from a thread
that already runs a loop, that work moves to a helper thread.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from alembic import context
from sqlalchemy import Connection

# Imported for their side effect: they register their tables on Base.metadata.
import settler_jobs.storage.audit_tables
import settler_jobs.storage.export_tables
import settler_jobs.storage.webhook_tables  # noqa: F401
from settler_jobs.storage.db import create_engine
from settler_jobs.storage.tables import Base

config = context.config
target_metadata = Base.metadata


def _database_url() -> str:
    url = config.attributes.get("url") or config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("no database URL: set config.attributes['url']")
    return str(url)


def _configure(**kwargs: Any) -> None:
    context.configure(
        target_metadata=target_metadata,
        compare_type=True,
        **kwargs,
    )


def run_migrations_offline() -> None:
    """Emit SQL for the URL's dialect without connecting."""
    url = _database_url()
    _configure(
        url=url,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        render_as_batch=url.startswith("sqlite"),
    )
    with context.begin_transaction():
        context.run_migrations()


def _run_sync(connection: Connection) -> None:
    _configure(
        connection=connection,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_async() -> None:
    engine = create_engine(_database_url())
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run_sync)
            await connection.commit()
    finally:
        await engine.dispose()


def _run_on_own_loop(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        asyncio.run(main())
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="alembic") as pool:
        pool.submit(lambda: asyncio.run(main())).result()


if context.is_offline_mode():
    run_migrations_offline()
else:
    _run_on_own_loop(_run_async)
