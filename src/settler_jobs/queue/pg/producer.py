"""Submitting jobs on PostgreSQL with bullmq's `add_job`, one transaction per bulk.

A stand-in for the engine's producer (which adds fair-share tags and quotas in one
`settler_add_jobs` call): the same validation, ids, envelope and options, and the
same two entry points, `submit_bulk` and `submit_bulk_on(conn, subs)` (inside a
caller's transaction on a psycopg-style connection: `execute(query, params)` with
`%s` parameters, rows as tuples).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from settler_jobs.queue.pg.pool import pg_errors
from settler_jobs.queue.pg.record import COLUMNS, record_from
from settler_jobs.queue.pg.rows import PgSql
from settler_jobs.queue.producer import _new_record, _Prepared, prepare
from settler_jobs.records import JobRecord, Submission, Submitted


class Cursor(Protocol):
    """What the producer reads from an executed statement."""

    async def fetchall(self) -> list[Any]: ...


class Connection(Protocol):
    """A connection in an open transaction (psycopg's, or an adapter over another)."""

    async def execute(self, query: Any, params: Any = ...) -> Any: ...


class PgProducer(PgSql):
    """Submitting jobs: one or many, validated first, idempotent repeats answered."""

    async def submit(self, sub: Submission) -> Submitted:
        """Validate and enqueue one job; an idempotent repeat returns the existing job."""
        return (await self.submit_bulk([sub]))[0]

    async def submit_bulk(self, subs: Sequence[Submission]) -> list[Submitted]:
        """Validate every submission first, then add them all in one transaction."""
        prepared = self._prepared(subs)
        await self.ready()
        async with pg_errors(), self._pool.connection() as conn, conn.transaction():
            return await self._write(conn, prepared)

    async def submit_bulk_on(self, conn: Connection, subs: Sequence[Submission]) -> list[Submitted]:
        """`submit_bulk` inside the caller's open transaction on `conn` (this database):
        the jobs commit, or roll back, with the caller's rows."""
        return await self._write(conn, self._prepared(subs))

    def _prepared(self, subs: Sequence[Submission]) -> list[_Prepared]:
        now_ms = int(time.time() * 1000)
        return [prepare(self._registry, self._settings, sub, now_ms) for sub in subs]

    async def _write(self, conn: Connection, prepared: list[_Prepared]) -> list[Submitted]:
        s = f'"{self._pool.schema}"'
        lanes = self._registry.queues()
        ids = sorted({p.job_id for p in prepared if p.idempotent})
        stored: dict[str, JobRecord] = {}
        if ids:
            columns = ", ".join(c.strip() for c in COLUMNS.split(","))
            cur = await conn.execute(
                f"SELECT {columns} FROM {s}.job WHERE id = ANY(%s) AND queue = ANY(%s)".encode(),
                (ids, lanes),
            )
            names = [c.strip().split(" AS ")[-1].split("::")[0] for c in COLUMNS.split(",")]
            for row in await cur.fetchall():
                # Tuples on psycopg's default rows and on RunConnection; dicts otherwise.
                found = (
                    dict(row) if isinstance(row, Mapping) else dict(zip(names, row, strict=True))
                )
                kind = self._registry.for_queue(str(found["queue"])).name
                stored[str(found["id"])] = record_from(found, kind)
        out: list[Submitted] = []
        added: set[str] = set()
        for p in prepared:
            if p.job_id in stored:
                out.append(Submitted(stored[p.job_id], False))
            elif p.job_id in added:
                out.append(Submitted(_new_record(p), False))
            else:
                await conn.execute(
                    f"SELECT {s}.add_job(%s, %s, %s, %s::jsonb, %s::jsonb, %s, %s, %s, %s,"
                    " NULL, NULL, NULL, NULL, NULL, false)".encode(),
                    _add_args(p),
                )
                added.add(p.job_id)
                out.append(Submitted(_new_record(p), True))
        return out


def _add_args(p: _Prepared) -> tuple[Any, ...]:
    return (
        p.queue,
        p.job_id,
        p.kind,
        json.dumps(p.data, separators=(",", ":")),
        json.dumps(p.opts, separators=(",", ":")),
        int(p.opts["priority"]),
        int(p.opts["delay"]),
        int(p.opts["timestamp"]),
        int(p.opts["attempts"]),
    )
