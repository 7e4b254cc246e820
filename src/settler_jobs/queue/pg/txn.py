"""Transactional enqueue: jobs added inside the caller's own database transaction (the
queue tables live in the same PostgreSQL database as Settler's). The domain row and
its job commit together or not at all; bullmq's NOTIFY reaches workers at commit.

The caller's transaction runs on SQLAlchemy (asyncpg), the producer speaks psycopg:
`RunConnection` gives the producer's `submit_bulk_on` a psycopg-style `execute` over
the caller's `SqlRun` (`%s` parameters become named ones, rows come back as tuples).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Final, cast

from settler_jobs.ports import SqlRun
from settler_jobs.queue.pg.pool import Conn
from settler_jobs.queue.pg.producer import PgProducer
from settler_jobs.records import Submission, Submitted

# `%s`, optionally cast (`%s::jsonb`), and `%%`; a cast after a named parameter would
# not parse in SQLAlchemy's text(), so it becomes CAST(... AS type).
_PARAM: Final = re.compile(r"%s(?:::([a-z_]+(?:\[\])?))?|%%")


class PgTransactionalProducer(PgProducer):
    """`submit_in`: add jobs inside the caller's transaction."""

    async def submit_in(self, run: SqlRun, subs: Sequence[Submission]) -> list[Submitted]:
        """Validate every submission, then add the jobs through `run` (the caller's
        transaction). Rolling that transaction back removes the jobs too.
        """
        await self.ready()
        # RunConnection speaks the part of psycopg's connection the producer uses
        # (execute, then fetchall/fetchone on the result).
        return await self.submit_bulk_on(cast(Conn, RunConnection(run)), subs)


class RunConnection:
    """A psycopg-style connection over a `SqlRun` (the caller's open transaction)."""

    def __init__(self, run: SqlRun) -> None:
        self._run = run

    async def execute(self, query: Any, params: Sequence[Any] = ()) -> _Rows:
        text = query.decode() if isinstance(query, bytes) else str(query)
        named: dict[str, Any] = {}

        def bind(match: re.Match[str]) -> str:
            if match.group(0) == "%%":
                return "%"
            name = f"p{len(named)}"
            named[name] = params[len(named)]
            return f"CAST(:{name} AS {match.group(1)})" if match.group(1) else f":{name}"

        sql = _PARAM.sub(bind, text)
        return _Rows([tuple(row.values()) for row in await self._run(sql, named)])


class _Rows:
    """The rows of one statement, read as a psycopg cursor's are."""

    def __init__(self, rows: list[tuple[Any, ...]]) -> None:
        self._rows = rows

    async def fetchall(self) -> list[tuple[Any, ...]]:
        return self._rows

    async def fetchone(self) -> tuple[Any, ...] | None:
        return self._rows[0] if self._rows else None
