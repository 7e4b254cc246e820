"""Submitting jobs on PostgreSQL through the transactional path on a pooled connection.

A stand-in for the engine's own producer (fair-share tags, quotas): same validation,
ids, envelope and options, one transaction per bulk.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Final

from psycopg.rows import dict_row

from settler_jobs.queue.pg.pool import pg_errors
from settler_jobs.queue.pg.txn import PgTransactionalProducer
from settler_jobs.records import Submission, Submitted

_NAMED: Final = re.compile(r"(?<![:\w]):(\w+)")


class PgProducer(PgTransactionalProducer):
    """`submit` and `submit_bulk`: all jobs of a bulk commit together."""

    async def submit(self, sub: Submission) -> Submitted:
        """Validate and enqueue one job; an idempotent repeat returns the existing job."""
        return (await self.submit_bulk([sub]))[0]

    async def submit_bulk(self, subs: Sequence[Submission]) -> list[Submitted]:
        """Validate every submission first, then add them all in one transaction."""
        await self.ready()
        async with pg_errors(), self._pool.connection() as conn, conn.transaction():

            async def run(sql: str, params: Mapping[str, Any]) -> list[dict[str, Any]]:
                cur = conn.cursor(row_factory=dict_row)
                await cur.execute(_NAMED.sub(r"%(\1)s", sql).encode(), dict(params))
                return list(await cur.fetchall()) if cur.description else []

            return await self.submit_in(run, subs)
