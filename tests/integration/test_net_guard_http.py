"""The guarded HTTP client against a real loopback server (no other address is ever contacted).

The server listens on 127.0.0.1 only and records every connection, request head and TLS
server name it sees. Names are answered by fake resolvers; "*.test" names do not exist in
real DNS, so a request that reaches the server proves the client connected to the vetted
address instead of resolving the name again.
"""

from __future__ import annotations

import asyncio
import datetime
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from settler_jobs import net_guard
from settler_jobs.net_guard import GuardPolicy, Refused, guarded_client

TIMEOUT = httpx.Timeout(5.0)
LOCAL = GuardPolicy.from_strings(True, ["127.0.0.1/32"])


@dataclass
class Server:
    """What a loopback HTTP/1.1 server saw."""

    port: int = 0
    connections: int = 0
    heads: list[str] = field(default_factory=list)
    server_names: list[str | None] = field(default_factory=list)

    def host_headers(self) -> list[str]:
        return [
            line.split(":", 1)[1].strip()
            for head in self.heads
            for line in head.split("\r\n")
            if line.lower().startswith("host:")
        ]


async def _serve(
    server: Server, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    server.connections += 1
    try:
        while head := (await reader.readuntil(b"\r\n\r\n")).decode("latin-1"):
            server.heads.append(head)
            path = head.split(" ", 2)[1]
            if path.startswith("/redirect"):
                location = path.removeprefix("/redirect?to=")
                status, extra = "302 Found", f"Location: {location}\r\n"
            else:
                status, extra = "200 OK", ""
            writer.write(f"HTTP/1.1 {status}\r\n{extra}Content-Length: 2\r\n\r\nok".encode())
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
        pass
    finally:
        writer.close()


@asynccontextmanager
async def loopback_server(tls: ssl.SSLContext | None = None) -> AsyncIterator[Server]:
    """A keep-alive HTTP/1.1 server on 127.0.0.1 that answers "ok" (or 302 on /redirect)."""
    seen = Server()
    if tls is not None:
        tls.sni_callback = lambda _sock, name, _ctx: seen.server_names.append(name)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _serve(seen, reader, writer)

    listener = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=tls)
    seen.port = listener.sockets[0].getsockname()[1]
    async with listener:
        yield seen


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    async with loopback_server() as seen:
        yield seen


class FakeDns:
    """Answers the n-th question with the n-th list (the last one repeats); logs questions."""

    def __init__(self, *rounds: Sequence[str]) -> None:
        self.rounds = list(rounds)
        self.calls: list[str] = []

    async def __call__(self, host: str, port: int) -> Sequence[str]:
        self.calls.append(host)
        return self.rounds[min(len(self.calls), len(self.rounds)) - 1]


@pytest.fixture
async def system_lookups(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Hosts the event loop's getaddrinfo is asked about (which httpcore would use)."""
    loop = asyncio.get_running_loop()
    original: Callable[..., Awaitable[Any]] = loop.getaddrinfo
    asked: list[str] = []

    async def recording(host: Any, *args: Any, **kwargs: Any) -> Any:
        asked.append(str(host))
        return await original(host, *args, **kwargs)

    monkeypatch.setattr(loop, "getaddrinfo", recording)
    return asked


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "0x7f.1", "[::ffff:127.0.0.1]"])
async def test_local_receivers_are_unreachable_without_an_allow_list(
    server: Server, host: str
) -> None:
    async with guarded_client(GuardPolicy(allow_http=True), timeout=TIMEOUT) as client:
        with pytest.raises(Refused) as caught:
            await client.get(f"http://{host}:{server.port}/")
    assert caught.value.rule in {"loopback", "ipv4-embedded-in-ipv6"}
    assert server.connections == 0


async def test_allow_listed_receiver_is_reached_with_the_original_host_header(
    server: Server, system_lookups: list[str]
) -> None:
    dns = FakeDns(["127.0.0.1"])
    async with guarded_client(LOCAL, timeout=TIMEOUT, resolver=dns) as client:
        response = await client.post(f"http://rebind.test:{server.port}/hook?x=1", json={"a": 1})
    assert (response.status_code, response.text) == (200, "ok")
    assert str(response.request.url) == f"http://rebind.test:{server.port}/hook?x=1"
    assert server.host_headers() == [f"rebind.test:{server.port}"]
    assert server.heads[0].startswith("POST /hook?x=1 HTTP/1.1\r\n")
    assert dns.calls == ["rebind.test"]
    assert "rebind.test" not in system_lookups


async def test_a_rebinding_answer_is_never_connected_to(
    server: Server, system_lookups: list[str]
) -> None:
    """Each request resolves exactly once and connects only to what that answer vetted."""
    dns = FakeDns(["127.0.0.1"], ["10.0.0.1"])
    url = f"http://rebind.test:{server.port}/"
    async with guarded_client(LOCAL, timeout=TIMEOUT, resolver=dns) as client:
        first = await client.get(url)
        assert first.status_code == 200
        with pytest.raises(Refused) as caught:
            await client.get(url)
    assert (caught.value.rule, caught.value.address) == ("private", "10.0.0.1")
    assert dns.calls == ["rebind.test", "rebind.test"]
    assert (server.connections, len(server.heads)) == (1, 1)
    assert "rebind.test" not in system_lookups


async def test_a_name_with_any_local_answer_is_refused(server: Server) -> None:
    dns = FakeDns(["127.0.0.1", "127.0.0.2"])
    async with guarded_client(LOCAL, timeout=TIMEOUT, resolver=dns) as client:
        with pytest.raises(Refused) as caught:
            await client.get(f"http://rebind.test:{server.port}/")
    assert (caught.value.rule, caught.value.address) == ("loopback", "127.0.0.2")
    assert server.connections == 0


async def test_redirects_are_not_followed(server: Server) -> None:
    url = f"http://127.0.0.1:{server.port}/redirect?to=http://169.254.169.254/latest/meta-data/"
    async with guarded_client(LOCAL, timeout=TIMEOUT) as client:
        response = await client.get(url)
    assert response.status_code == 302
    assert response.headers["location"] == "http://169.254.169.254/latest/meta-data/"
    assert (server.connections, len(server.heads)) == (1, 1)


async def test_a_followed_redirect_is_still_vetted(server: Server) -> None:
    """Even a caller that opts into redirects cannot leave the allow-list (127.0.0.2 here)."""
    target = f"http://127.0.0.2:{server.port}/"
    async with guarded_client(LOCAL, timeout=TIMEOUT) as client:
        with pytest.raises(Refused) as caught:
            await client.get(
                f"http://127.0.0.1:{server.port}/redirect?to={target}", follow_redirects=True
            )
    assert (caught.value.rule, caught.value.address) == ("loopback", "127.0.0.2")
    assert len(server.heads) == 1


async def test_slow_resolution_obeys_the_connect_timeout(server: Server) -> None:
    never = asyncio.Event()

    async def hanging(host: str, port: int) -> list[str]:
        await never.wait()
        return ["127.0.0.1"]

    timeout = httpx.Timeout(5.0, connect=0.05)
    async with guarded_client(LOCAL, timeout=timeout, resolver=hanging) as client:
        with pytest.raises(httpx.ConnectTimeout):
            await client.get(f"http://slow.test:{server.port}/")
    assert server.connections == 0


@dataclass
class Pki:
    ca: ssl.SSLContext  # client side: trusts the test CA only
    server: ssl.SSLContext  # serves a certificate for "a.test" (no IP address in it)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    folder = tmp_path_factory.mktemp("pki")
    now = datetime.datetime.now(datetime.UTC)
    ca_key, leaf_key = (
        ec.generate_private_key(ec.SECP256R1()),
        ec.generate_private_key(ec.SECP256R1()),
    )
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "net-guard test CA")])
    ca = (
        _cert_builder(ca_name, ca_name, ca_key.public_key(), now)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    leaf_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "a.test")])
    leaf = (
        _cert_builder(leaf_name, ca_name, leaf_key.public_key(), now)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("a.test")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    (folder / "ca.pem").write_bytes(ca.public_bytes(pem))
    (folder / "leaf.pem").write_bytes(leaf.public_bytes(pem))
    key = leaf_key.private_bytes(
        pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    (folder / "leaf.key").write_bytes(key)
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(folder / "leaf.pem", folder / "leaf.key")
    return Pki(ca=ssl.create_default_context(cafile=str(folder / "ca.pem")), server=server)


def _cert_builder(
    subject: x509.Name, issuer: x509.Name, key: ec.EllipticCurvePublicKey, now: datetime.datetime
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
    )


async def test_tls_is_verified_against_the_host_name_not_the_ip(pki: Pki) -> None:
    dns = FakeDns(["127.0.0.1"])
    async with loopback_server(pki.server) as seen:
        policy = GuardPolicy.from_strings(False, ["127.0.0.1/32"])
        async with guarded_client(policy, timeout=TIMEOUT, resolver=dns, verify=pki.ca) as client:
            response = await client.get(f"https://a.test:{seen.port}/")
            again = await client.get(f"https://a.test:{seen.port}/")
            with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                # Same IP, other name: a new TLS connection, verified for b.test (and failing),
                # never the kept-alive connection that was verified for a.test.
                await client.get(f"https://b.test:{seen.port}/")
    assert (response.status_code, again.status_code) == (200, 200)
    assert seen.server_names == ["a.test", "b.test"]
    assert seen.host_headers() == [f"a.test:{seen.port}"] * 2


async def test_tls_to_a_bare_ip_is_verified_against_the_ip(pki: Pki) -> None:
    async with loopback_server(pki.server) as seen:
        policy = GuardPolicy.from_strings(False, ["127.0.0.1/32"])
        async with guarded_client(policy, timeout=TIMEOUT, verify=pki.ca) as client:
            with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                await client.get(f"https://127.0.0.1:{seen.port}/")
    assert seen.server_names == [None]


async def test_hosts_beyond_the_pool_limit_share_a_pool_without_keep_alive(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(net_guard, "MAX_TRANSPORTS", 1)
    dns = FakeDns(["127.0.0.1"])
    async with guarded_client(LOCAL, timeout=TIMEOUT, resolver=dns) as client:
        for host in ("one.test", "one.test", "two.test", "two.test"):
            assert (await client.get(f"http://{host}:{server.port}/")).status_code == 200
    assert server.host_headers() == [
        f"{host}:{server.port}" for host in ("one.test", "one.test", "two.test", "two.test")
    ]
    assert server.connections == 3  # one kept-alive connection for one.test, two for two.test
