"""The queue schema: bullmq's own migrations, then Settler's (queue/pg/sql/NNNN_*.sql).

Settler's files run in name order, each once, in one transaction under an advisory
lock (so concurrent starts are safe), and are recorded in
`<schema>.settler_migrations(name, applied_at)`. Numbers 0001-0099 belong to the
engine (fairness state, claim), 0100-0199 to reads and control.
"""

from __future__ import annotations

from importlib import resources
from typing import Final

from bullmq.backends.postgres_connection import run_migrations

from settler_jobs.errors import ConfigError
from settler_jobs.queue.pg.pool import PgPool, pg_errors, quote_ident

# "SETL": the advisory lock key for Settler's migrations (bullmq's is "BULL").
_LOCK_KEY: Final = 0x5345544C
MINIMUM_SERVER_VERSION: Final = 13


def migration_files() -> list[str]:
    """Settler's queue-side SQL files, in the order they apply."""
    folder = resources.files("settler_jobs.queue.pg").joinpath("sql")
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".sql"))


def _text(name: str) -> str:
    return resources.files("settler_jobs.queue.pg").joinpath(f"sql/{name}").read_text()


async def apply(pool: PgPool) -> list[str]:
    """Bring the queue schema up to date; the names of Settler files applied now."""
    conn = await pool.connect(autocommit=False)
    try:
        await run_migrations(conn, pool.schema)
        schema = quote_ident(pool.schema)
        applied: list[str] = []
        async with conn.transaction():
            await conn.execute(
                "SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (_LOCK_KEY, pool.schema)
            )
            await conn.execute(f"SET LOCAL search_path TO {schema}, public")
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS settler_migrations ("
                "name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            cur = await conn.execute("SELECT name FROM settler_migrations")
            done = {row[0] for row in await cur.fetchall()}
            for name in migration_files():
                if name in done:
                    continue
                await conn.execute(_text(name).encode())
                await conn.execute("INSERT INTO settler_migrations (name) VALUES (%s)", (name,))
                applied.append(name)
        return applied
    finally:
        await conn.close()


async def check_version(pool: PgPool) -> int:
    """The server's major version; ConfigError below what bullmq's tables need."""
    async with pg_errors(), pool.connection() as conn:
        cur = await conn.execute("SELECT current_setting('server_version_num')::int")
        row = await cur.fetchone()
    major = int(row[0]) // 10_000 if row else 0
    if major < MINIMUM_SERVER_VERSION:
        raise ConfigError(
            f"PostgreSQL {major} is too old for the queue tables; "
            f"{MINIMUM_SERVER_VERSION} or newer is needed"
        )
    return major


async def pending(pool: PgPool) -> list[str]:
    """Settler files not applied yet (for start-up checks); every file if none are."""
    async with pool.connection() as conn:
        cur = await conn.execute("SELECT to_regclass('settler_migrations') IS NOT NULL")
        row = await cur.fetchone()
        if row is None or not row[0]:
            return migration_files()
        cur = await conn.execute("SELECT name FROM settler_migrations")
        done = {r[0] for r in await cur.fetchall()}
    return [name for name in migration_files() if name not in done]
