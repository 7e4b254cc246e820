"""A small pool of psycopg 3 async connections to the queue database.

Connections are autocommit with `search_path` pinned to the queue schema, so bullmq's
SQL functions resolve unqualified. A connection that fails with a connection-level
error (the server restarted, `pg_terminate_backend`, a dropped socket) is discarded;
the next checkout opens a fresh one. Connection errors surface as `QueueUnavailable`
through `pg_errors`, as Redis errors do through `redis_errors`.
"""

from __future__ import annotations

import asyncio
import contextlib
import select
from collections.abc import AsyncIterator
from typing import Any, Final

import psycopg
from psycopg.rows import TupleRow

from settler_jobs.errors import QueueUnavailable

Conn = psycopg.AsyncConnection[TupleRow]

_KEEPALIVE: Final = {
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
}
# Errors after which the connection is unusable: it is dropped, not returned.
BROKEN: Final = (psycopg.OperationalError, psycopg.InterfaceError, OSError)
_IDLE_READS: Final = 4


def quote_ident(name: str) -> str:
    """A schema or identifier checked to be simple and double-quoted for SQL text."""
    if not name or len(name) > 63 or not (name[0].isalpha() or name[0] == "_"):
        raise ValueError(f"invalid PostgreSQL identifier {name!r}")
    if not all(c.isalnum() or c in "_$" for c in name):
        raise ValueError(f"invalid PostgreSQL identifier {name!r}")
    return f'"{name}"'


class PgPool:
    """At most `size` connections, opened on demand and reused; broken ones are dropped."""

    def __init__(
        self,
        dsn: str,
        schema: str,
        *,
        size: int = 4,
        application_name: str = "settler",
        connect_timeout_s: float = 5.0,
        statement_timeout_s: float | None = None,
    ) -> None:
        self.dsn = dsn
        self.schema = schema
        self._options = f"-c search_path={quote_ident(schema)},public"
        self._app = application_name
        self._timeout = connect_timeout_s
        # Pooled connections only (the API's 2 s budget); LISTEN and migrations are unbounded.
        self._bounded = (
            f" -c statement_timeout={round(statement_timeout_s * 1000)}"
            if statement_timeout_s is not None
            else ""
        )
        self._idle: list[Conn] = []
        self._slots = asyncio.Semaphore(size)
        self._closed = False
        self.size = size
        self.opened = 0

    async def connect(
        self, *, autocommit: bool = True, keepalive: bool = False, bounded: bool = False
    ) -> Conn:
        """A new connection outside the pool (LISTEN, migrations); the caller closes it."""
        extra: dict[str, Any] = dict(_KEEPALIVE) if keepalive else {}
        options = self._options + (self._bounded if bounded else "")
        try:
            conn = await asyncio.wait_for(
                psycopg.AsyncConnection.connect(
                    self.dsn,
                    autocommit=autocommit,
                    options=options,
                    application_name=self._app,
                    connect_timeout=max(1, round(self._timeout)),
                    **extra,
                ),
                self._timeout,
            )
        except TimeoutError as exc:
            raise QueueUnavailable(f"PostgreSQL did not answer within {self._timeout:g} s") from exc
        except BROKEN as exc:
            raise QueueUnavailable(f"PostgreSQL is unreachable ({exc})") from exc
        self.opened += 1
        return conn

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[Conn]:
        """An autocommit connection for the block; returned to the pool unless it broke."""
        if self._closed:
            raise QueueUnavailable("the queue's connection pool is closed")
        async with self._slots:
            conn = None
            while self._idle and conn is None:
                conn = self._idle.pop()
                if not _alive(conn):
                    await _discard(conn)
                    conn = None
            if conn is None:
                conn = await self.connect(keepalive=True, bounded=True)
            try:
                yield conn
            except BROKEN:
                await _discard(conn)
                raise
            except BaseException:
                if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                    await _discard(conn)  # cancelled mid-statement: state unknown
                else:
                    self._keep(conn)
                raise
            else:
                if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                    await _discard(conn)
                else:
                    self._keep(conn)

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Conn]:
        """A pooled connection inside one transaction (committed unless the block raises)."""
        async with self.connection() as conn, conn.transaction():
            yield conn

    def _keep(self, conn: Conn) -> None:
        if self._closed or conn.closed:
            return
        self._idle.append(conn)

    async def close(self) -> None:
        """Close every idle connection; ones in use close when they come back."""
        self._closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            await _discard(conn)


def _alive(conn: Conn) -> bool:
    """False if an idle connection is closed or the server ended it (terminated, restarted).

    An idle connection is sent nothing unasked but a termination notice or EOF (and
    notifications), so only a readable socket is read, without a round trip. A server
    that crashed or shut down sends its FATAL notice and then closes: one read takes the
    notice and leaves the status OK, so the socket is read until it has nothing more.
    """
    if conn.closed:
        return False
    pgconn = conn.pgconn
    try:
        for _ in range(_IDLE_READS):
            readable, _, _ = select.select([pgconn.socket], [], [], 0)
            if not readable:
                break
            pgconn.consume_input()
            if pgconn.status != psycopg.pq.ConnStatus.OK:
                return False
        else:
            return False  # still talking after that many reads: not an idle connection
    except (OSError, psycopg.OperationalError):
        return False
    return bool(pgconn.status == psycopg.pq.ConnStatus.OK)


async def _discard(conn: Conn) -> None:
    with contextlib.suppress(Exception):
        await asyncio.wait_for(conn.close(), 2.0)


@contextlib.asynccontextmanager
async def pg_errors() -> AsyncIterator[None]:
    """Turn "PostgreSQL is unreachable" errors into QueueUnavailable (HTTP 503, CLI exit 5)."""
    try:
        yield
    except BROKEN as exc:
        raise QueueUnavailable(
            f"PostgreSQL is unreachable ({type(exc).__name__}: {exc}); nothing was changed"
        ) from exc
