"""A lean HTTP/1.1 POST client behind the SSRF guard, with keep-alive pools.

Made for webhook deliveries, where a general client's per-request cost dominated the
worker. Every request is vetted by `net_guard.resolve_and_check` (the whole URL, every
DNS answer); the connection goes to the vetted IP, never to a second DNS answer, and
every new connection checks that IP again just before connecting. Idle connections are
pooled per (scheme, host, port, vetted IP), so a reused connection always goes to an
address vetted for this very request, and an https connection verified for one host
name never serves another. Past `MAX_TRANSPORTS` keys, connections are not kept.

Redirects are never followed and no proxy is used. TLS is verified against the URL's
host name (SNI), or against the IP for a bare-IP URL. There is no timeout inside: the
caller bounds the whole exchange (`asyncio.timeout`), and a connection cut by it, by an
error or by a body too long to drain is closed, never reused. A request that finds its
reused connection closed before any response byte arrived is sent once more on a new
connection (the peer dropped an idle connection; receivers deduplicate by message id).
"""

from __future__ import annotations

import asyncio
import ipaddress
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

import httpx

from settler_jobs.http1_wire import (
    HEAD_LIMIT,
    ConnectFailed,
    Exchange,
    InvalidUrl,
    ProtocolFailure,
    encode_request,
    parse_head,
    read_body,
)
from settler_jobs.net_guard import (
    MAX_TRANSPORTS,
    GuardPolicy,
    Resolver,
    Vetted,
    check_address,
    display_url,
    parse_ip_literal,
    resolve_and_check,
)

__all__ = ["ConnectFailed", "Exchange", "GuardedHttp1", "InvalidUrl", "ProtocolFailure"]

IDLE_EXPIRY_S: Final = 5.0
"""Idle connections older than this are closed instead of reused (as httpx's default)."""
MAX_IDLE_PER_KEY: Final = 64
_TARGET_CACHE: Final = 4096

_Key = tuple[str, str, int, str]


@dataclass(frozen=True, slots=True)
class _Target:
    """What a URL's requests share: the request line and Host, and for a bare-IP URL its
    vetting (an address needs no DNS, so its verdict cannot change)."""

    prefix: bytes
    vetted: Vetted | None


class _Connection:
    __slots__ = ("idle_since", "reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.idle_since = 0.0

    def usable(self, now: float) -> bool:
        return (
            now - self.idle_since < IDLE_EXPIRY_S
            and not self.reader.at_eof()
            and not self.writer.transport.is_closing()
        )

    def close(self) -> None:
        self.writer.transport.abort()


class _Stale(Exception):
    """A reused connection was closed by the peer before any response byte arrived."""


class GuardedHttp1:
    """POSTs through the SSRF guard over pooled keep-alive connections (see the module)."""

    def __init__(
        self,
        policy: GuardPolicy,
        *,
        resolver: Resolver | None = None,
        verify: ssl.SSLContext | bool = True,
    ) -> None:
        self._policy, self._resolver, self._verify = policy, resolver, verify
        self._ssl: ssl.SSLContext | None = None
        self._idle: dict[_Key, list[_Connection]] = {}
        self._targets: dict[str, _Target] = {}

    async def post(
        self, url: str, headers: Mapping[str, str], body: bytes, *, into: Exchange, limit: int
    ) -> None:
        """POST `body` to `url`; the response status, headers and first `limit` body bytes
        go to `into` as they arrive.

        Raises `net_guard.Refused` (the guard said no), `InvalidUrl`, `ConnectFailed`,
        `ProtocolFailure`, `OSError` (the network), ValueError for unsendable headers.
        """
        target, vetted = await self._vet(url)
        request = encode_request(target.prefix, headers, body)
        key = (vetted.scheme, vetted.host, vetted.port, vetted.address)
        connection = self._take_idle(key)
        if connection is not None:
            try:
                await self._exchange(connection, key, request, into, limit, reused=True)
                return
            except _Stale:
                pass
        connection = await self._connect(vetted)
        try:
            await self._exchange(connection, key, request, into, limit, reused=False)
        except _Stale as exc:  # cannot happen on a new connection; keep the type honest
            raise ProtocolFailure("the server closed the connection") from exc

    async def aclose(self) -> None:
        """Close every idle connection."""
        for connections in self._idle.values():
            for connection in connections:
                connection.close()
        self._idle.clear()

    async def _vet(self, url: str) -> tuple[_Target, Vetted]:
        target = self._targets.get(url)
        if target is not None and target.vetted is not None:
            return target, target.vetted
        if not url.startswith(("http://", "https://")):
            raise InvalidUrl("only http and https URLs can be sent to")
        vetted = await resolve_and_check(url, self._policy, self._resolver)
        if target is None:
            target = _Target(_prefix(url), vetted if _is_literal(vetted.host) else None)
            if len(self._targets) >= _TARGET_CACHE:
                self._targets.clear()
            self._targets[url] = target
        return target, vetted

    def _take_idle(self, key: _Key) -> _Connection | None:
        connections = self._idle.get(key)
        now = time.monotonic()
        while connections:
            connection = connections.pop()
            if connection.usable(now):
                return connection
            connection.close()
        return None

    def _give_back(self, key: _Key, connection: _Connection) -> None:
        connections = self._idle.get(key)
        if connections is None:
            if len(self._idle) >= MAX_TRANSPORTS:
                self._idle = {k: v for k, v in self._idle.items() if v}
            if len(self._idle) >= MAX_TRANSPORTS:
                connection.close()
                return
            connections = self._idle[key] = []
        if len(connections) >= MAX_IDLE_PER_KEY:
            connection.close()
            return
        connection.idle_since = time.monotonic()
        connections.append(connection)

    async def _connect(self, vetted: Vetted) -> _Connection:
        address = vetted.address
        check_address(ipaddress.ip_address(address), self._policy, _shown(vetted))
        tls = self._tls() if vetted.scheme == "https" else None
        try:
            reader, writer = await asyncio.open_connection(
                address,
                vetted.port,
                ssl=tls,
                server_hostname=vetted.host.strip("[]") if tls else None,
                limit=HEAD_LIMIT,
            )
        except OSError as exc:
            raise ConnectFailed(f"cannot connect to {_shown(vetted)}") from exc
        return _Connection(reader, writer)

    def _tls(self) -> ssl.SSLContext:
        if self._ssl is None:
            verify = self._verify
            self._ssl = verify if isinstance(verify, ssl.SSLContext) else _ssl_context(verify)
        return self._ssl

    async def _exchange(
        self,
        connection: _Connection,
        key: _Key,
        request: bytes,
        into: Exchange,
        limit: int,
        *,
        reused: bool,
    ) -> None:
        keep = False
        try:
            connection.writer.write(request)
            if connection.writer.transport.get_write_buffer_size():
                await connection.writer.drain()
            head = await _read_head(connection.reader, reused=reused)
            parsed = parse_head(head, into)
            while parsed.status < 200:  # interim responses (100 Continue): skip
                if parsed.status == 101:
                    raise ProtocolFailure("the server switched protocols")
                parsed = parse_head(await _read_head(connection.reader, reused=False), into)
            keep = await read_body(connection.reader, parsed, into.body, limit)
        except (ConnectionResetError, BrokenPipeError) as exc:
            if reused and into.status_code is None:
                raise _Stale from exc
            raise
        finally:
            if keep:
                self._give_back(key, connection)
            else:
                connection.close()


async def _read_head(reader: asyncio.StreamReader, *, reused: bool) -> bytes:
    try:
        return await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if reused and not exc.partial:
            raise _Stale from exc
        raise ProtocolFailure("the server closed the connection without a response") from exc
    except asyncio.LimitOverrunError as exc:
        raise ProtocolFailure("the response head is too large") from exc


def _prefix(url: str) -> bytes:
    """The request line and Host header of `url` (the Host keeps the name, not the IP)."""
    parsed = httpx.URL(url)
    return b"POST %s HTTP/1.1\r\nHost: %s\r\nAccept-Encoding: identity\r\n" % (
        parsed.raw_path,
        parsed.netloc,
    )


def _is_literal(host: str) -> bool:
    try:
        return parse_ip_literal(host) is not None
    except ValueError:
        return False


def _shown(vetted: Vetted) -> str:
    return display_url(httpx.URL(vetted.url))


def _ssl_context(verify: bool) -> ssl.SSLContext:
    return httpx.create_ssl_context(verify=verify)
