"""The lean guarded HTTP/1.1 client against a real loopback server.

The server listens on 127.0.0.1 only, counts connections and records each request; the
path picks the answer (framing, keep-alive, misbehaviour). Names are answered by fake
resolvers: "*.test" names do not exist in real DNS, so a request that arrives proves
the client connected to the vetted address.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import pytest

from settler_jobs.guarded_http import (
    ConnectFailed,
    Exchange,
    GuardedHttp1,
    InvalidUrl,
    ProtocolFailure,
)
from settler_jobs.http1_wire import DRAIN_LIMIT
from settler_jobs.net_guard import GuardPolicy, Refused
from tests.integration.test_net_guard_http import FakeDns, Pki, pki  # noqa: F401

LOCAL = GuardPolicy.from_strings(True, ["127.0.0.1/32"])
BODY = b'{"type":"test","data":{}}'
Answer = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[bool]]
"""Writes the response; False closes the connection afterwards."""


@dataclass
class Request:
    head: str
    body: bytes

    def header(self, name: str) -> str | None:
        for line in self.head.split("\r\n")[1:]:
            key, _, value = line.partition(":")
            if key.strip().lower() == name:
                return value.strip()
        return None


@dataclass
class Server:
    port: int = 0
    connections: int = 0
    requests: list[Request] = field(default_factory=list)
    server_names: list[str | None] = field(default_factory=list)

    def url(self, path: str, host: str = "127.0.0.1", scheme: str = "http") -> str:
        return f"{scheme}://{host}:{self.port}{path}"


def _sized(body: bytes, *headers: str) -> Answer:
    async def answer(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        head = ["HTTP/1.1 200 OK", f"Content-Length: {len(body)}", *headers]
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
        return not any(h.lower() == "connection: close" for h in headers)

    return answer


async def _chunked(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
    writer.write(b"HTTP/1.1 202 Accepted\r\nTransfer-Encoding: chunked\r\n\r\n")
    writer.write(b"5;ext=1\r\nhello\r\n7\r\n, world\r\n0\r\nX-Trailer: t\r\n\r\n")
    return True


async def _interim(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
    writer.write(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n")
    return True


async def _to_end(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
    writer.write(b"HTTP/1.1 200 OK\r\n\r\nread until the end")
    return False


async def _trickle(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n")
    while True:  # until the client hangs up
        writer.write(b"x")
        await writer.drain()
        await asyncio.sleep(0.05)  # the slow receiver under test


async def _garbage(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
    writer.write(b"HTTP/9 what\r\n\r\n")
    return True


async def _hang_up(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
    return False  # no response at all


async def _redirect(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
    writer.write(b"HTTP/1.1 302 Found\r\nLocation: /elsewhere\r\nContent-Length: 0\r\n\r\n")
    return True


async def _idle_close(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
    # Keep-alive announced, then the connection dropped as an idle timeout would.
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    return False


ROUTES: dict[str, Answer] = {
    "/ok": _sized(b"ok", "Retry-After: 7", "X-Twice: a", "X-Twice: b"),
    "/close": _sized(b"bye", "Connection: close"),
    "/chunked": _chunked,
    "/interim": _interim,
    "/to-end": _to_end,
    "/small-excess": _sized(b"y" * 100),
    "/big-excess": _sized(b"z" * (DRAIN_LIMIT + 1000)),
    "/trickle": _trickle,
    "/garbage": _garbage,
    "/hang-up": _hang_up,
    "/redirect": _redirect,
    "/idle-close": _idle_close,
}


async def _serve(seen: Server, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    seen.connections += 1
    try:
        while True:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
            request = Request(head, b"")
            request.body = await reader.readexactly(int(request.header("content-length") or 0))
            seen.requests.append(request)
            path = head.split(" ", 2)[1].split("?")[0]
            if not await ROUTES[path](reader, writer):
                await writer.drain()
                return
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
        pass
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            await writer.wait_closed()


@asynccontextmanager
async def loopback(tls: ssl.SSLContext | None = None) -> AsyncIterator[Server]:
    seen = Server()
    if tls is not None:
        tls.sni_callback = lambda _sock, name, _ctx: seen.server_names.append(name)
    tasks: set[asyncio.Task[None]] = set()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)
        with contextlib.suppress(asyncio.CancelledError):  # torn down with the test
            await _serve(seen, reader, writer)

    listener = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=tls)
    seen.port = listener.sockets[0].getsockname()[1]
    async with listener:
        yield seen
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    async with loopback() as seen:
        yield seen


@pytest.fixture
async def client() -> AsyncIterator[GuardedHttp1]:
    http = GuardedHttp1(LOCAL)
    yield http
    await http.aclose()


async def _post(client: GuardedHttp1, url: str, *, limit: int = 1024) -> Exchange:
    exchange = Exchange()
    async with asyncio.timeout(5):
        await client.post(
            url, {"Content-Type": "application/json"}, BODY, into=exchange, limit=limit
        )
    return exchange


async def test_a_sized_response_and_keep_alive_reuse(server: Server, client: GuardedHttp1) -> None:
    first = await _post(client, server.url("/ok?a=1"))
    second = await _post(client, server.url("/ok"))
    assert (first.status_code, bytes(first.body)) == (200, b"ok")
    assert first.headers["retry-after"] == "7" and first.headers["x-twice"] == "a, b"
    assert bytes(second.body) == b"ok"
    assert server.connections == 1  # the second request reused the first connection
    request = server.requests[0]
    assert request.head.startswith("POST /ok?a=1 HTTP/1.1\r\n")
    assert request.body == BODY and request.header("content-length") == str(len(BODY))
    assert request.header("host") == f"127.0.0.1:{server.port}"
    assert request.header("accept-encoding") == "identity"


async def test_connection_close_is_obeyed(server: Server, client: GuardedHttp1) -> None:
    assert bytes((await _post(client, server.url("/close"))).body) == b"bye"
    await _post(client, server.url("/ok"))
    assert server.connections == 2


async def test_a_chunked_body_is_decoded_and_the_connection_kept(
    server: Server, client: GuardedHttp1
) -> None:
    exchange = await _post(client, server.url("/chunked"))
    assert (exchange.status_code, bytes(exchange.body)) == (202, b"hello, world")
    assert bytes((await _post(client, server.url("/chunked"), limit=3)).body) == b"hel"
    await _post(client, server.url("/ok"))
    assert server.connections == 1


async def test_interim_responses_are_skipped(server: Server, client: GuardedHttp1) -> None:
    exchange = await _post(client, server.url("/interim"))
    assert (exchange.status_code, bytes(exchange.body)) == (204, b"")
    await _post(client, server.url("/ok"))
    assert server.connections == 1


async def test_a_body_without_framing_runs_to_the_end(server: Server, client: GuardedHttp1) -> None:
    assert bytes((await _post(client, server.url("/to-end"))).body) == b"read until the end"
    await _post(client, server.url("/ok"))
    assert server.connections == 2


async def test_an_oversized_body_is_cut_drained_when_short_dropped_when_long(
    server: Server, client: GuardedHttp1
) -> None:
    assert bytes((await _post(client, server.url("/small-excess"), limit=10)).body) == b"y" * 10
    await _post(client, server.url("/ok"))
    assert server.connections == 1  # the short rest was drained: the connection lives
    assert bytes((await _post(client, server.url("/big-excess"), limit=10)).body) == b"z" * 10
    await _post(client, server.url("/ok"))
    assert server.connections == 2  # too much left to drain: that connection was closed


async def test_the_callers_deadline_cuts_a_trickle_and_keeps_what_arrived(
    server: Server, client: GuardedHttp1
) -> None:
    exchange = Exchange()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.5):
            await client.post(server.url("/trickle"), {}, BODY, into=exchange, limit=1024)
    assert exchange.status_code == 200 and 0 < len(exchange.body) < 1024
    await _post(client, server.url("/ok"))
    assert server.connections == 2  # the cut connection is never reused


async def test_protocol_errors_close_the_connection(server: Server, client: GuardedHttp1) -> None:
    with pytest.raises(ProtocolFailure):
        await _post(client, server.url("/garbage"))
    with pytest.raises(ProtocolFailure):
        await _post(client, server.url("/hang-up"))
    await _post(client, server.url("/ok"))
    assert server.connections == 3


async def test_a_dropped_idle_connection_is_replaced_once(
    server: Server, client: GuardedHttp1
) -> None:
    await _post(client, server.url("/idle-close"))
    assert bytes((await _post(client, server.url("/ok"))).body) == b"ok"
    assert [r.head.split(" ")[1] for r in server.requests] == ["/idle-close", "/ok"]
    assert server.connections == 2


async def test_redirects_are_not_followed(server: Server, client: GuardedHttp1) -> None:
    exchange = await _post(client, server.url("/redirect"))
    assert (exchange.status_code, exchange.headers["location"]) == (302, "/elsewhere")
    assert len(server.requests) == 1


async def test_a_private_address_is_refused_before_any_connect(server: Server) -> None:
    public_only = GuardedHttp1(GuardPolicy(allow_http=True))
    with pytest.raises(Refused, match="rule: loopback"):
        await _post(public_only, server.url("/ok"))
    named = GuardedHttp1(GuardPolicy(allow_http=True), resolver=FakeDns(["127.0.0.1"]))
    with pytest.raises(Refused, match="rule: loopback"):
        await _post(named, server.url("/ok", host="inside.test"))
    assert server.connections == 0


async def test_names_go_to_the_vetted_ip_and_are_vetted_on_every_request(
    server: Server,
) -> None:
    dns = FakeDns(["127.0.0.1"], ["127.0.0.1"], ["10.0.0.1"])  # then it rebinds inside
    client = GuardedHttp1(LOCAL, resolver=dns)
    for _ in range(2):
        await _post(client, server.url("/ok", host="receiver.test"))
    with pytest.raises(Refused, match="rule: private"):
        await _post(client, server.url("/ok", host="receiver.test"))
    assert dns.calls == ["receiver.test"] * 3
    assert [r.header("host") for r in server.requests] == [f"receiver.test:{server.port}"] * 2
    assert server.connections == 1
    await client.aclose()


async def test_connect_and_url_failures(server: Server, client: GuardedHttp1) -> None:
    with pytest.raises(InvalidUrl):
        await _post(client, "ftp://127.0.0.1/hook")
    with pytest.raises(Refused, match="rule: scheme"):
        await _post(GuardedHttp1(GuardPolicy()), server.url("/ok"))  # http not allowed
    listener = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    listener.close()
    await listener.wait_closed()
    with pytest.raises(ConnectFailed) as refused:
        await _post(client, f"http://127.0.0.1:{port}/")
    assert isinstance(refused.value.__cause__, ConnectionRefusedError)


async def test_unsendable_headers_are_refused(server: Server, client: GuardedHttp1) -> None:
    for headers in ({"X-Bad": "a\r\nInjected: 1"}, {"Bad Name": "x"}, {"Host": "elsewhere"}):
        with pytest.raises(ValueError):
            await client.post(server.url("/ok"), headers, BODY, into=Exchange(), limit=10)
    assert server.requests == []


async def test_tls_is_verified_against_the_name_and_kept_per_name(pki: Pki) -> None:  # noqa: F811
    async with loopback(pki.server) as seen:
        policy = GuardPolicy.from_strings(False, ["127.0.0.1/32"])
        client = GuardedHttp1(policy, resolver=FakeDns(["127.0.0.1"]), verify=pki.ca)
        for _ in range(2):
            exchange = await _post(client, seen.url("/ok", host="a.test", scheme="https"))
            assert exchange.status_code == 200
        with pytest.raises(ConnectFailed) as failed:
            # Same IP, other name: a new connection verified for b.test (and failing).
            await _post(client, seen.url("/ok", host="b.test", scheme="https"))
        assert isinstance(failed.value.__cause__, ssl.SSLCertVerificationError)
        with pytest.raises(ConnectFailed):  # a bare IP is verified against the IP
            await _post(client, seen.url("/ok", scheme="https"))
        await client.aclose()
    assert seen.server_names == ["a.test", "b.test", None]
    assert (seen.connections, len(seen.requests)) == (1, 2)  # failed handshakes serve none
