"""A pipelined Redis connection: one socket, many commands in flight, hiredis parsing.

redis-py's asyncio client sends one command and waits for its reply before the next
(bullmq forces a single connection, so a worker has one command in flight). Here the
first command of an event-loop iteration is written at once and the rest of that
iteration's commands in one write at its end; replies are matched to callers in FIFO
order, and Redis reads and answers them in batches: the model of ioredis. A worker lane
uses one of these for its scripts and one more for its blocking marker wait.

A dropped socket fails every command in flight with `redis.ConnectionError`, and so
do replies saying a command was not run (LOADING, BUSY, READONLY, ...); the next
command reconnects. On a Redis Cluster the connection goes to the primary of one slot
(a `locate` callable says which, again on every reconnect): MOVED, ASK and CLUSTERDOWN
are "not run" replies, and MOVED or READONLY drop the socket so the next command
reconnects to the slot's current owner. Nothing is re-sent automatically: whether a
script ran is unknown to the caller, who must resend it knowing that (bullmq's scripts
answer a repeat with an error code instead of acting twice).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import hiredis
from redis.asyncio import Redis
from redis.asyncio.connection import SSLConnection
from redis.exceptions import (
    BusyLoadingError,
    ConnectionError,
    NoScriptError,
    RedisClusterException,
    RedisError,
    ResponseError,
)

Arg = str | bytes | int | float


@dataclass(frozen=True, slots=True)
class Address:
    """Where and how to connect: TCP host/port or a Unix socket path, plus credentials."""

    host: str = "127.0.0.1"
    port: int = 6379
    path: str | None = None
    db: int = 0
    username: str | None = None
    password: str | None = None
    tls: ssl.SSLContext | None = None
    connect_timeout_s: float = 5.0

    @classmethod
    def of(cls, client: Redis) -> Address:
        """The address a redis-py asyncio client connects to."""
        pool = client.connection_pool
        return cls.from_kwargs(pool.connection_kwargs, pool.connection_class)

    @classmethod
    def from_kwargs(cls, kw: dict[str, Any], connection_class: type[Any]) -> Address:
        """The address of redis-py connection settings (a pool's, or a cluster node's)."""
        tls = None
        if issubclass(connection_class, SSLConnection):
            tls = ssl.create_default_context(cafile=kw.get("ssl_ca_certs"))
            if kw.get("ssl_cert_reqs") in ("none", ssl.CERT_NONE):
                tls.check_hostname = False
                tls.verify_mode = ssl.CERT_NONE
        return cls(
            host=str(kw.get("host", "127.0.0.1")),
            port=int(kw.get("port", 6379)),
            path=kw.get("path"),
            db=int(kw.get("db") or 0),
            username=kw.get("username"),
            password=kw.get("password"),
            tls=tls,
            connect_timeout_s=float(kw.get("socket_connect_timeout") or 5.0),
        )


class _Protocol(asyncio.Protocol):
    """Feeds bytes to hiredis and hands each reply to the oldest waiting future."""

    def __init__(self, pipe: PipelinedConnection) -> None:
        self._pipe = pipe
        self._reader = hiredis.Reader(encoding="utf-8", errors="surrogateescape")
        self.waiters: deque[asyncio.Future[Any]] = deque()

    def data_received(self, data: bytes) -> None:
        reader, waiters = self._reader, self.waiters
        reader.feed(data)
        while True:
            reply = reader.gets()
            if reply is False:
                return
            waiter = waiters.popleft()
            if waiter.done():  # its caller was cancelled: the reply is dropped
                continue
            if isinstance(reply, hiredis.ReplyError):
                message = str(reply)
                waiter.set_exception(_error(message))
                if message.startswith(_RECONNECT):  # the slot's primary is elsewhere now
                    asyncio.get_running_loop().call_soon(self._pipe.drop)
            else:
                waiter.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self._pipe._lost(self, exc)


def _pack(args: Sequence[Arg]) -> bytes:
    # hiredis's stub types the tuple as one element; any number of arguments is fine.
    packed: bytes = hiredis.pack_command(tuple(args))  # type: ignore[arg-type]
    return packed


@dataclass(frozen=True, slots=True)
class Head:
    """The first arguments of a command sent many times, packed once (`evalsha(head=)`)."""

    args: tuple[Arg, ...]
    packed: bytes  # their RESP encoding without the array header

    @classmethod
    def of(cls, *args: Arg) -> Head:
        packed = _pack(args)
        return cls(args, packed[packed.index(b"\r\n") + 2 :])


def _pack_after(head: Head, rest: Sequence[Arg]) -> bytes:
    packed = _pack(rest)
    body = packed[packed.index(b"\r\n") + 2 :]
    return b"*%d\r\n%b%b" % (len(head.args) + len(rest), head.packed, body)


# Replies saying the command was not run and may be sent again (after a reconnect).
_NOT_RUN: Final = frozenset(
    {"LOADING", "BUSY", "READONLY", "MASTERDOWN", "TRYAGAIN", "MOVED", "ASK", "CLUSTERDOWN"}
)
# Replies after which this socket is the wrong one: a replica, or not the slot's owner.
_RECONNECT: Final = ("READONLY", "MOVED")
Locate = Callable[[], Awaitable[Address]]


def _error(message: str) -> RedisError:
    """The exception of an error reply; "not run, try again" ones are connection errors."""
    code = message.split(" ", 1)[0]
    if code == "NOSCRIPT":
        return NoScriptError(message)
    if code in _NOT_RUN:
        return BusyLoadingError(message)
    return ResponseError(message)


class PipelinedConnection:
    """Commands from any number of coroutines share one socket; replies come back in order."""

    def __init__(
        self, address: Address, *, name: str | None = None, locate: Locate | None = None
    ) -> None:
        self.address = address
        self.name = name
        self._locate = locate
        self._transport: asyncio.Transport | None = None
        self._protocol: _Protocol | None = None
        self._buffer: list[bytes] = []
        self._flush_scheduled = False
        self._connecting: asyncio.Future[None] | None = None
        self._closed = False
        self.connects = 0

    @property
    def connected(self) -> bool:
        """True while a socket is open."""
        return self._transport is not None and not self._transport.is_closing()

    async def execute(self, *args: Arg) -> Any:
        """Send one command (batched with the others of this loop iteration); its reply."""
        if not self.connected:
            await self._connect()
        return await self._send(_pack(args))

    async def evalsha(
        self,
        sha: str,
        script: str,
        keys: Sequence[Arg],
        args: Sequence[Arg],
        head: Head | None = None,
    ) -> Any:
        """Run a Lua script by SHA, loading it first if the server does not know it.

        `head`, if given, is `Head.of("EVALSHA", sha, len(keys), *keys[:n])`: those
        arguments are not packed again.
        """
        if head is None:
            packed = _pack(("EVALSHA", sha, len(keys), *keys, *args))
        else:
            packed = _pack_after(head, (*keys[len(head.args) - 3 :], *args))
        try:
            if not self.connected:
                await self._connect()
            return await self._send(packed)  # not via execute: one frame less per job
        except NoScriptError:
            await self.execute("SCRIPT", "LOAD", script)
            if not self.connected:
                await self._connect()
            return await self._send(packed)

    async def transaction(self, commands: Sequence[Sequence[Arg]]) -> list[Any]:
        """Run `commands` in one MULTI/EXEC, written back to back; EXEC's replies.

        A command that fails inside the transaction gives a `hiredis.ReplyError` value in
        its place; a transaction refused as a whole (EXECABORT) raises.
        """
        if not self.connected:
            await self._connect()
        waiters = [self._send(_pack(("MULTI",)))]
        waiters += [self._send(_pack(tuple(command))) for command in commands]
        done = self._send(_pack(("EXEC",)))
        queued = await asyncio.gather(*waiters, return_exceptions=True)
        try:
            replies = await done
        except ResponseError:
            failed = next((q for q in queued if isinstance(q, BaseException)), None)
            if isinstance(failed, RedisError):
                raise failed from None  # why it was refused: MOVED, NOSCRIPT, ...
            raise
        return list(replies)

    def _send(self, packed: bytes) -> asyncio.Future[Any]:
        if self._protocol is None:
            raise ConnectionError("Redis connection lost")
        waiter: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._protocol.waiters.append(waiter)
        if self._flush_scheduled:
            self._buffer.append(packed)
        else:
            # The first command of a loop iteration goes out at once, so Redis works on
            # it while we run; the ones after it wait for the iteration's end, one write.
            assert self._transport is not None
            self._transport.write(packed)
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)
        return waiter

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self._buffer and self._transport is not None:
            data = b"".join(self._buffer)
            self._buffer.clear()
            self._transport.write(data)

    async def _connect(self) -> None:
        if self._closed:
            raise ConnectionError("connection closed")
        if self._connecting is None:
            self._connecting = asyncio.ensure_future(self._open())
        connecting = self._connecting
        try:
            await asyncio.shield(connecting)
        finally:
            if connecting.done() and self._connecting is connecting:
                self._connecting = None

    async def _open(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            if self._locate is not None:
                self.address = await self._locate()
            a = self.address
            if a.path:
                opening = loop.create_unix_connection(lambda: _Protocol(self), a.path)
            else:
                opening = loop.create_connection(lambda: _Protocol(self), a.host, a.port, ssl=a.tls)
            transport, protocol = await asyncio.wait_for(opening, a.connect_timeout_s)
        except (OSError, TimeoutError, RedisError, RedisClusterException) as exc:
            raise ConnectionError(f"cannot connect to Redis: {exc}") from exc
        sock = transport.get_extra_info("socket")
        if sock is not None and not a.path:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        self._transport, self._protocol = transport, protocol
        self.connects += 1
        handshake = []
        if a.password is not None:
            auth = (a.username, a.password) if a.username else (a.password,)
            handshake.append(self._send(_pack(("AUTH", *auth))))
        if a.db:
            handshake.append(self._send(_pack(("SELECT", a.db))))
        if self.name:
            handshake.append(self._send(_pack(("CLIENT", "SETNAME", self.name))))
        try:
            await asyncio.gather(*handshake)
        except BaseException:
            self.drop()
            raise

    def _lost(self, protocol: _Protocol, exc: Exception | None) -> None:
        if protocol is self._protocol:
            self._transport = self._protocol = None
            self._buffer.clear()
        error = ConnectionError(f"Redis connection lost: {exc}" if exc else "connection closed")
        while protocol.waiters:
            waiter = protocol.waiters.popleft()
            if not waiter.done():
                waiter.set_exception(error)

    def drop(self) -> None:
        """Abort the socket now: commands in flight fail, the next command reconnects."""
        transport, protocol = self._transport, self._protocol
        if transport is not None and protocol is not None:
            transport.abort()
            self._lost(protocol, None)

    async def close(self) -> None:
        """Close for good; commands in flight fail."""
        self._closed = True
        if self._connecting is not None:
            self._connecting.cancel()
            with contextlib.suppress(BaseException):
                await self._connecting
        self.drop()
