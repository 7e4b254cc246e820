"""Running SQL on a PostgreSQL queue's own connections in tests (rows as dicts)."""

from __future__ import annotations

from typing import Any

from psycopg.rows import dict_row

from settler_jobs.queue.pg import PgJobQueue


async def sql(queue: PgJobQueue, text: str, params: Any = None) -> list[dict[str, Any]]:
    """The rows of one statement in the queue's schema (empty without a result)."""
    await queue.ready()
    async with queue.pool.connection() as conn:
        cur = conn.cursor(row_factory=dict_row)
        await cur.execute(text.encode(), params)
        return list(await cur.fetchall()) if cur.description else []
