"""Async engines and session factories for SQLite (embedded) and PostgreSQL."""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Concatenate, Final, Generic, ParamSpec, TypeVar

from sqlalchemy import URL, Connection, Engine, event, make_url, text
from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from settler_jobs.ports import SqlRun

P = ParamSpec("P")
T = TypeVar("T")
Item = TypeVar("Item")
R = TypeVar("R")
BatchFn = Callable[[Connection, Sequence[Item]], Sequence[R | Exception]]
"""`fn(connection, items) -> one result per item`: an Exception result fails only that item."""
SQLITE_BUSY_TIMEOUT_MS: Final = 5000
PING_AFTER_IDLE_S: Final = 2.0
"""A pooled server connection idle this long is pinged before use (pre-ping)."""
_RETURNED_AT: Final = "settler_returned_at"
_SQLITE_PRAGMAS: Final = (
    "PRAGMA journal_mode=WAL",
    # WAL + NORMAL: a commit survives a killed process; only an OS crash may lose the
    # last commits. FULL would fsync on every commit, the embedded setup's bottleneck.
    "PRAGMA synchronous=NORMAL",
    "PRAGMA foreign_keys=ON",
    f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}",
)


def create_engine(url: str, *, connect_timeout_s: float | None = None) -> AsyncEngine:
    """An async engine for `url` (`sqlite+aiosqlite://...` or `postgresql+asyncpg://...`).

    SQLite files get their parent folder created and every connection runs in WAL mode
    with foreign keys on and a busy timeout; other databases ping a pooled connection
    before use when it has been idle `PING_AFTER_IDLE_S` or more (a dead one is replaced),
    and give up connecting after `connect_timeout_s` if given (the API's 503 within 2 s).
    Call `await engine.dispose()` when done.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(parsed)
    connect_args = {"timeout": connect_timeout_s} if connect_timeout_s is not None else {}
    engine = create_async_engine(parsed, connect_args=connect_args)
    _ping_when_idle(engine.sync_engine)
    return engine


def _ping_when_idle(engine: Engine) -> None:
    """Pre-ping only connections idle for a while: a ping is a round trip (three on
    asyncpg: BEGIN, ping, ROLLBACK), and pinging on every check-out cost a busy worker
    more than its own statements; a connection used moments ago is alive."""

    def returned(_dbapi: Any, record: Any, *_: Any) -> None:
        record.info[_RETURNED_AT] = time.monotonic()

    def check_out(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        returned_at = record.info.get(_RETURNED_AT)
        if returned_at is not None and time.monotonic() - returned_at < PING_AFTER_IDLE_S:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except Exception as exc:  # the pool drops this connection and tries another
            raise DisconnectionError("a pooled connection failed its ping") from exc

    event.listen(engine, "connect", returned)
    event.listen(engine, "checkin", returned)
    event.listen(engine, "checkout", check_out)


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions bound to `engine`; objects stay readable after commit."""
    return async_sessionmaker(engine, expire_on_commit=False)


def _sqlite_engine(url: URL) -> AsyncEngine:
    _ensure_parent_folder(url)
    # One connection: SQLite runs one writer at a time anyway, and waiting for the pool
    # in asyncio is far cheaper than SQLite's busy handler sleeping on a locked file.
    engine = create_async_engine(url, pool_size=1, max_overflow=0, pool_timeout=60)
    event.listen(engine.sync_engine, "connect", _apply_sqlite_pragmas)
    return engine


def _ensure_parent_folder(url: URL) -> None:
    database = url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)


def _apply_sqlite_pragmas(dbapi_connection: Any, _connection_record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        for pragma in _SQLITE_PRAGMAS:
            cursor.execute(pragma)
    finally:
        cursor.close()


class Transactions:
    """Runs a synchronous function on a connection inside one transaction.

    For hot paths made of a few short statements. On SQLite the whole function runs in
    one dedicated thread on a synchronous connection kept open by that thread, in a
    ``BEGIN IMMEDIATE`` transaction (it holds the write lock throughout): one hand-off per
    transaction instead of several per statement (aiosqlite's cost dwarfs SQLite's), and
    no pool check-out per transaction (which cost twice the transaction). Elsewhere it
    runs through the async engine (`AsyncConnection.run_sync`), each statement awaiting
    the server as usual. Close with `aclose`.
    """

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._sync: Engine | None = None
        self._thread: ThreadPoolExecutor | None = None
        self._groups: dict[Any, GroupCommit[Any, Any]] = {}
        self._conn: Connection | None = None  # used only in `_thread`
        if engine.dialect.name == "sqlite":
            sync_url = engine.url.set(drivername="sqlite")
            self._sync = create_sync_engine(sync_url, pool_size=1, max_overflow=0)
            event.listen(self._sync, "connect", _apply_sqlite_pragmas)
            self._thread = ThreadPoolExecutor(1, thread_name_prefix="settler-sqlite")

    async def run(
        self, fn: Callable[Concatenate[Connection, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """`fn(connection, *args, **kwargs)` in a transaction, committed if it returns."""
        if self._sync is None or self._thread is None:
            async with self._engine.begin() as conn:
                return await conn.run_sync(fn, *args, **kwargs)
        call = functools.partial(self._in_transaction, fn, *args, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(self._thread, call)

    def _in_transaction(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """In `_thread`: `fn` in a write transaction on the thread's kept connection."""
        assert self._sync is not None
        conn = self._conn
        if conn is None or conn.closed or conn.invalidated:
            conn = self._conn = self._sync.connect()
        with conn.begin():
            # The write lock from the start (waiting up to the busy timeout): what `fn`
            # reads cannot change before it writes, and a read-then-write transaction
            # never fails with SQLITE_BUSY on upgrading its lock (the busy handler does
            # not retry that).
            conn.exec_driver_sql("BEGIN IMMEDIATE")
            return fn(conn, *args, **kwargs)

    def _close_connection(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def grouped(self, fn: BatchFn[Item, R]) -> GroupCommit[Item, R]:
        """The one `GroupCommit` of `fn` on these transactions (made on first use)."""
        group = self._groups.get(fn)
        if group is None:
            group = self._groups[fn] = GroupCommit(self, fn)
        return group

    async def aclose(self) -> None:
        """Release the synchronous engine and its thread (SQLite)."""
        if self._thread is not None:
            await asyncio.get_running_loop().run_in_executor(self._thread, self._close_connection)
            await asyncio.to_thread(self._thread.shutdown, True)
        if self._sync is not None:
            self._sync.dispose()


class GroupCommit(Generic[Item, R]):
    """Group commit: the items of concurrent callers share one transaction.

    `submit` queues an item; while no transaction of this group runs, one starts at once
    with every item queued so far (at least the caller's), so a lone caller waits for
    nothing but its own transaction. Items that arrive meanwhile go into the next one.
    `submit` returns once the transaction holding its item has committed. A per-item
    Exception result is raised to that caller only (the batch function must not have
    written anything for such an item); if the transaction itself fails, every caller
    in it gets the error and nothing of the batch is committed.
    """

    def __init__(self, transactions: Transactions, fn: BatchFn[Item, R]) -> None:
        self._transactions, self._fn = transactions, fn
        self._queue: list[tuple[Item, asyncio.Future[R]]] = []
        self._draining: asyncio.Task[None] | None = None

    async def submit(self, item: Item) -> R:
        """Run `item` in the next group transaction; its result once committed."""
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue.append((item, future))
        if self._draining is None or self._draining.done():
            self._draining = asyncio.ensure_future(self._drain())
        return await future

    async def _drain(self) -> None:
        while self._queue:
            batch, self._queue = self._queue, []
            items = [item for item, _ in batch]
            try:
                results = await self._transactions.run(self._fn, items)
            except Exception as exc:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            except BaseException:  # cancelled (shutting down): nobody is left waiting
                for _, future in [*batch, *self._queue]:
                    future.cancel()
                self._queue = []
                raise
            for (_, future), result in zip(batch, results, strict=True):
                if future.done():  # its caller was cancelled meanwhile
                    continue
                if isinstance(result, Exception):
                    future.set_exception(result)
                else:
                    future.set_result(result)


class _SessionSql:
    """A `ports.SqlRun` on a session's transaction."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def __call__(self, sql: str, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        result = await self._session.execute(text(sql), dict(params))
        if not result.returns_rows:  # type: ignore[attr-defined]  # CursorResult at run time
            return []
        return [dict(row) for row in result.mappings().all()]


def sql_runner(session: AsyncSession) -> SqlRun:
    """Statements run on `session`'s open transaction (see `ports.SqlRun`)."""
    return _SessionSql(session)
