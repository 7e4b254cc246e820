"""Bringing the queue schema up to date: bullmq's migrations, then settler's own SQL.

Settler's files (sql/NNNN_<name>.sql, unqualified names: the queue schema is first on
the `search_path`) run in order, each once, recorded in `settler_migrations`. One
transaction under an advisory lock per schema, so concurrent starts apply each once.
"""

from __future__ import annotations

from importlib import resources
from typing import Final

from bullmq.backends.postgres_connection import MINIMUM_POSTGRES_VERSION, run_migrations

from settler_jobs.errors import ConfigError
from settler_jobs.queue.pg.pool import PgPool

# bullmq's PostgreSQL backend supports 13 and newer (it refuses older servers itself);
# we hold the same floor so the check fails before anything is written.
MIN_SERVER_VERSION: Final = MINIMUM_POSTGRES_VERSION
_LOCK_KEY: Final = 0x53544C52  # "STLR": settler's own lock, apart from bullmq's


def settler_sql_files() -> list[str]:
    """Names of settler's queue-side SQL files, in the order they apply."""
    folder = resources.files("settler_jobs.queue.pg").joinpath("sql")
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".sql"))


def _sql(name: str) -> str:
    return resources.files("settler_jobs.queue.pg").joinpath(f"sql/{name}").read_text()


async def server_version(pool: PgPool) -> int:
    """The server's major version."""
    rows = await pool.fetch("SELECT current_setting('server_version_num')::int AS v")
    return int(rows[0]["v"]) // 10_000


async def check_version(pool: PgPool) -> int:
    """The server's major version; ConfigError below what the queue tables need."""
    major = await server_version(pool)
    if major < MIN_SERVER_VERSION:
        raise ConfigError(
            f"PostgreSQL {major} is too old for the queue tables; {MIN_SERVER_VERSION} or "
            "newer is needed"
        )
    return major


async def migrate(pool: PgPool) -> None:
    """Apply bullmq's migrations and settler's SQL files not applied yet."""
    conn = await pool.connect(autocommit=False, dict_rows=False, bounded=False)
    try:
        await run_migrations(conn, pool.schema)
        async with conn.transaction():
            lock = "SELECT pg_advisory_xact_lock(%s, hashtext(%s))"
            await conn.execute(lock, (_LOCK_KEY, pool.schema))
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS settler_migrations ("
                "name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            cur = await conn.execute("SELECT name FROM settler_migrations")
            done = {str(row[0]) for row in await cur.fetchall()}
            for name in settler_sql_files():
                if name not in done:
                    await conn.execute(_sql(name).encode())
                    await conn.execute("INSERT INTO settler_migrations (name) VALUES (%s)", (name,))
    finally:
        await conn.close()


async def pending(pool: PgPool) -> list[str]:
    """Migrations not applied yet (bullmq's as `bullmq:<file>`, then settler's files)."""
    from bullmq.postgres import sql_loader

    rows = await pool.fetch(
        "SELECT to_regclass('migration') IS NOT NULL AS b,"
        " to_regclass('settler_migrations') IS NOT NULL AS s"
    )
    have_bullmq, have_ours = bool(rows[0]["b"]), bool(rows[0]["s"])
    applied = 0
    if have_bullmq:
        top = await pool.fetch("SELECT COALESCE(MAX(version), 0) AS v FROM migration")
        applied = int(top[0]["v"])
    missing = [
        f"bullmq:{name}"
        for name in sql_loader.migration_files()
        if int(name.split("_", 1)[0]) > applied
    ]
    done: set[str] = set()
    if have_ours:
        done = {str(r["name"]) for r in await pool.fetch("SELECT name FROM settler_migrations")}
    return missing + [name for name in settler_sql_files() if name not in done]
