"""SQL reads as dict rows for the reads, control, schedules and usage parts. Only the
base's pool (`connection()`), `ready()` and the registry are used, so the parts run
over any `PgQueueBase` that has those.
"""

from __future__ import annotations

from typing import Any

from psycopg.rows import dict_row

from settler_jobs.queue.pg.base import PgQueueBase
from settler_jobs.queue.pg.record import record_from
from settler_jobs.records import JobRecord


class PgSql(PgQueueBase):
    """`_rows` (one statement's rows as dicts) and `_record` for the parts."""

    async def _rows(self, sql: str, params: Any = None) -> list[dict[str, Any]]:
        await self.ready()
        async with self._pool.connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(sql.encode(), params)
            return list(await cur.fetchall()) if cur.description else []

    def _record(self, row: dict[str, Any]) -> JobRecord:
        queue = str(row["queue"])
        return record_from(row, self._registry.for_queue(queue).name)
