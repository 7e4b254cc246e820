"""A small pool of autocommit psycopg connections to the queue database.

Every connection has the queue schema first on its `search_path`, so bullmq's SQL
functions and our tables are reached unqualified. Unreachable servers and dropped
connections surface as `QueueUnavailable` (HTTP 503, CLI exit 5), like Redis errors.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Final

import psycopg
from psycopg.rows import dict_row, tuple_row

from settler_jobs.errors import QueueUnavailable

_DEFAULT_SIZE: Final = 4
_PING_AFTER_IDLE_S: Final = 5.0


class PgPool:
    """Up to `size` open connections, handed out one task at a time."""

    def __init__(
        self,
        dsn: str,
        schema: str,
        *,
        size: int = _DEFAULT_SIZE,
        connect_timeout_s: float = 5.0,
        statement_timeout_s: float | None = None,
    ) -> None:
        self._dsn = dsn
        self._schema = schema
        self._size = max(1, size)
        self._connect_timeout_s = connect_timeout_s
        self._statement_timeout_s = statement_timeout_s
        self._idle: list[tuple[Any, float]] = []  # (connection, idle since)
        self._slots = asyncio.Semaphore(self._size)
        self._closed = False

    @property
    def dsn(self) -> str:
        """The libpq URL connections are opened with."""
        return self._dsn

    @property
    def connect_timeout(self) -> int:
        """libpq's connect_timeout (whole seconds) of every connection."""
        return max(1, math.ceil(self._connect_timeout_s))

    @property
    def schema(self) -> str:
        """The queue schema (bullmq's tables and functions, and ours)."""
        return self._schema

    async def connect(
        self, *, autocommit: bool = True, dict_rows: bool = True, bounded: bool = True
    ) -> Any:
        """A new connection outside the pool (LISTEN, migrations); the caller closes it.

        Rows are dicts unless `dict_rows` is False (bullmq's migration runner wants tuples);
        `bounded=False` lifts the statement timeout (migrations, waits).
        """
        options = f"-c search_path={self._schema},public"
        if self._statement_timeout_s is not None and bounded:
            options += f" -c statement_timeout={round(self._statement_timeout_s * 1000)}"
        try:
            # The connect timeout of libpq has 1 s granularity: bound the whole attempt too.
            return await asyncio.wait_for(
                psycopg.AsyncConnection.connect(
                    self._dsn,
                    autocommit=autocommit,
                    options=options,
                    row_factory=dict_row if dict_rows else tuple_row,
                    connect_timeout=self.connect_timeout,
                ),
                self._connect_timeout_s,
            )
        except (psycopg.OperationalError, OSError, TimeoutError) as exc:
            raise unavailable(exc) from exc

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[psycopg.AsyncConnection[dict[str, Any]]]:
        """A pooled autocommit connection; a broken one is dropped, not returned."""
        if self._closed:
            raise QueueUnavailable("the queue database pool is closed")
        async with self._slots:
            conn = await self._checkout()
            try:
                yield conn
            except (psycopg.OperationalError, OSError) as exc:
                raise unavailable(exc) from exc
            finally:
                healthy = not conn.closed and conn.info.transaction_status.name == "IDLE"
                if healthy and not self._closed:
                    self._idle.append((conn, time.monotonic()))
                else:
                    await conn.close()

    async def _checkout(self) -> Any:
        while self._idle:
            conn, since = self._idle.pop()
            if time.monotonic() - since < _PING_AFTER_IDLE_S:
                return conn
            # Idle a while: the server may have restarted since; check before use.
            try:
                await conn.execute("SELECT 1")
                return conn
            except (psycopg.OperationalError, OSError):
                await conn.close()
        return await self.connect()

    async def fetch(self, sql: str, params: Any = None) -> list[dict[str, Any]]:
        """Rows of one statement (an empty list for statements without a result)."""
        async with self.connection() as conn:
            cur = await conn.execute(sql, params)
            return await cur.fetchall() if cur.description else []

    async def close(self) -> None:
        """Close every idle connection; connections in use close when handed back."""
        self._closed = True
        idle, self._idle = self._idle, []
        for conn, _ in idle:
            await conn.close()


def unavailable(exc: BaseException) -> QueueUnavailable:
    """The error callers see when PostgreSQL does not answer."""
    return QueueUnavailable(
        f"PostgreSQL is unreachable ({type(exc).__name__}: {exc}); nothing was changed"
    )


@asynccontextmanager
async def pg_errors() -> AsyncIterator[None]:
    """Turn "PostgreSQL is unreachable" errors into QueueUnavailable."""
    try:
        yield
    except (psycopg.OperationalError, OSError, TimeoutError) as exc:
        raise unavailable(exc) from exc
