"""The outbound-request guard (SSRF): public addresses only, checked at registration and connect.

`resolve_and_check` parses the URL, resolves its host and refuses it (`Refused`, naming the
rule) if any answer is not a public unicast address. `GuardedTransport` runs that check for
every request and connects to the vetted IP itself, so a second DNS answer is never used
(no rebinding): the URL host becomes the IP, the `Host` header stays, and TLS is verified
against the original host name (`sni_hostname`). Redirects are never followed, and proxies
from the environment are never used. Only `GuardPolicy.allow_networks` opens local space.

Order of `check_address` (the first match decides the rule):
    1. allow-list (`allow_networks`, exact family: ::ffff:127.0.0.1 is not 127.0.0.1);
    2. IPv6 with an embedded IPv4 address (mapped, compatible, 6to4, NAT64, Teredo);
    3. cloud metadata addresses;
    4. the explicit tables in `_TABLES`, top to bottom;
    5. anything else `ipaddress` does not call global, or calls reserved -> "reserved".
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
import ssl
import urllib.parse
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import httpx

from settler_jobs.errors import ConfigError, SettlerError

if TYPE_CHECKING:
    from settler_jobs.config import Settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], Awaitable[Sequence[str]]]
"""`(host, port) -> addresses`: a stand-in for DNS (tests); the default is getaddrinfo."""

EMBEDDED = "ipv4-embedded-in-ipv6"
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in ("169.254.169.254", "169.254.170.2", "fd00:ec2::254", "100.100.100.200", "192.0.0.192")
)
METADATA_HOSTS = frozenset({"metadata.google.internal"})
DEFAULT_PORTS = {"https": 443, "http": 80}
MAX_TRANSPORTS = 64


def _nets(*cidrs: str) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(c) for c in cidrs)


# (rule, description, networks): checked top to bottom after the allow-list, embedded IPv4
# and metadata checks. 0.0.0.0 is "unspecified" because that row precedes "reserved".
_TABLES: tuple[tuple[str, str, tuple[IPNetwork, ...]], ...] = (
    ("loopback", "is loopback", _nets("127.0.0.0/8", "::1/128")),
    ("unspecified", "is the unspecified address", _nets("0.0.0.0/32", "::/128")),
    ("link-local", "is link-local", _nets("169.254.0.0/16", "fe80::/10")),
    ("multicast", "is multicast", _nets("224.0.0.0/4", "ff00::/8")),
    ("private", "is private address space",
     _nets("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7", "fec0::/10")),
    ("cgnat", "is carrier-grade NAT space", _nets("100.64.0.0/10")),
    ("documentation", "is documentation space",
     _nets("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32", "3fff::/20")),
    ("reserved", "is reserved address space",
     _nets("0.0.0.0/8", "192.0.0.0/24", "192.88.99.0/24", "198.18.0.0/15", "240.0.0.0/4",
           "100::/64", "2001:2::/48", "2001:10::/28", "5f00::/16")),
)  # fmt: skip
_NAT64 = _nets("64:ff9b::/96", "64:ff9b:1::/48")
_V4_PART = re.compile(r"0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*")


class Refused(SettlerError):
    """The outbound request was refused by the network guard."""

    def __init__(self, url: str, rule: str, detail: str, address: str | None = None) -> None:
        super().__init__(f"refused {url}: {detail} (rule: {rule})")
        self.url, self.rule, self.detail, self.address = url, rule, detail, address

    def __reduce__(self) -> tuple[type[Refused], tuple[str, str, str, str | None]]:
        return (type(self), (self.url, self.rule, self.detail, self.address))


@dataclass(frozen=True)
class GuardPolicy:
    """What the guard lets through beyond public https: plain http, listed networks, ports."""

    allow_http: bool = False
    allow_networks: tuple[IPNetwork, ...] = ()
    allowed_ports: frozenset[int] | None = None  # None: any port

    @classmethod
    def from_strings(
        cls, allow_http: bool, networks: Iterable[str], allowed_ports: Iterable[int] | None = None
    ) -> GuardPolicy:
        """Build from settings strings such as "127.0.0.1/32"; a bad CIDR is a ConfigError."""
        try:
            nets = tuple(ipaddress.ip_network(n.strip()) for n in networks if n.strip())
        except ValueError as exc:
            raise ConfigError(f"bad network in the outbound allow-list: {exc}") from exc
        ports = None if allowed_ports is None else frozenset(allowed_ports)
        return cls(allow_http=allow_http, allow_networks=nets, allowed_ports=ports)


def outbound_policy(settings: Settings) -> GuardPolicy:
    """The SSRF guard policy for outbound requests (webhooks, HTTP sources, alerts)."""
    return GuardPolicy.from_strings(settings.outbound_allow_http, settings.outbound_allow_networks)


@dataclass(frozen=True)
class Vetted:
    """A URL whose host resolved only to allowed addresses; connect to `address`."""

    url: str = field(repr=False)  # may carry secrets in its path or query
    host: str
    port: int
    scheme: str
    addresses: tuple[str, ...]

    @property
    def address(self) -> str:
        """The vetted address to connect to (the first answer)."""
        return self.addresses[0]


def parse_ip_literal(host: str) -> IPAddress | None:
    """The address `host` spells, else None (a name to resolve).

    IPv4 in every form inet_aton accepts (1-4 parts of decimal, 0-octal or 0x-hex; the last
    part fills the remaining bytes), plus one trailing dot; IPv6 with or without brackets.
    Raises ValueError for an IPv6 zone id (`fe80::1%eth0`), which is never allowed.
    """
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if ":" in host:
        if "%" in host:
            raise ValueError("IPv6 zone ids are not allowed")
        try:
            return ipaddress.IPv6Address(host)
        except ValueError:
            return None
    return _parse_ipv4(host.removesuffix("."))


def _parse_ipv4(host: str) -> ipaddress.IPv4Address | None:
    parts = host.split(".") if len(host) <= 255 else []  # a longer one is no IP (nor a name)
    if not 1 <= len(parts) <= 4 or not all(_V4_PART.fullmatch(p) for p in parts):
        return None
    values = [int(p, 16) if p[:2] in ("0x", "0X") else int(p, 8 if p[0] == "0" else 10)
              for p in parts]  # fmt: skip
    *head, last = values
    if any(v > 0xFF for v in head) or last >= 1 << (8 * (5 - len(values))):
        return None
    number = last
    for i, value in enumerate(head):
        number |= value << (24 - 8 * i)
    return ipaddress.IPv4Address(number)


def embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address inside a mapped, compatible, 6to4, NAT64 or Teredo address."""
    for inner in (ip.ipv4_mapped, ip.sixtofour, ip.teredo[1] if ip.teredo else None):
        if inner is not None:
            return inner
    number = int(ip)
    if number >> 32 == 0 and number > 1:  # ::a.b.c.d (not :: or ::1)
        return ipaddress.IPv4Address(number)
    if any(ip in net for net in _NAT64):  # RFC 6052; the /96 layout is assumed
        return ipaddress.IPv4Address(number & 0xFFFFFFFF)
    return None


def classify(ip: IPAddress) -> tuple[str, str] | None:
    """`(rule, description)` refusing `ip` regardless of any allow-list, or None if public."""
    if isinstance(ip, ipaddress.IPv6Address) and (inner := embedded_ipv4(ip)) is not None:
        why = classify(inner)
        suffix = f", which {why[1]}" if why else ""
        return EMBEDDED, f"embeds the IPv4 address {inner}{suffix}"
    if ip in METADATA_ADDRESSES:
        return "metadata", "is a cloud metadata address"
    for rule, description, networks in _TABLES:
        if any(ip in net for net in networks):
            return rule, description
    if ip.is_reserved or not ip.is_global:
        return "reserved", "is not global unicast address space"
    return None


def check_address(ip: IPAddress, policy: GuardPolicy, url: str = "<address>") -> None:
    """Raise Refused unless `ip` is in the allow-list or public; `url` is only for messages."""
    if any(ip in net for net in policy.allow_networks):
        return
    refusal = classify(ip)
    if refusal is not None:
        raise Refused(url, refusal[0], f"{ip} {refusal[1]}", str(ip))


def display_url(url: httpx.URL) -> str:
    """`scheme://host[:port]/`: no userinfo, path, query or fragment (any may hold secrets)."""
    return str(httpx.URL(scheme=url.scheme, host=url.host, port=url.port, path="/"))


async def _system_resolve(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


def _refuse_spelled_address(url: str, policy: GuardPolicy) -> None:
    """httpx rejects some spellings getaddrinfo accepts (0177.0.0.1): refuse those by rule."""
    try:
        split = urllib.parse.urlsplit(url)
        literal = parse_ip_literal(split.hostname or "")
    except ValueError:
        return
    if literal is not None:
        check_address(literal, policy, f"{split.scheme}://{split.hostname}/")


def _parse_url(url: str, policy: GuardPolicy) -> tuple[httpx.URL, str, int]:
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        _refuse_spelled_address(url, policy)
        raise Refused("<invalid URL>", "invalid-url", "the URL cannot be parsed") from exc
    if not parsed.host:
        raise Refused("<invalid URL>", "invalid-url", "the URL has no host")
    shown = display_url(parsed)
    allowed = ("https", "http") if policy.allow_http else ("https",)
    if parsed.scheme not in allowed:
        raise Refused(shown, "scheme", f"scheme {parsed.scheme!r} is not allowed")
    if parsed.userinfo:
        raise Refused(shown, "credentials-in-url", "the URL carries credentials")
    port = DEFAULT_PORTS[parsed.scheme] if parsed.port is None else parsed.port
    if port == 0 or (policy.allowed_ports is not None and port not in policy.allowed_ports):
        raise Refused(shown, "port", f"port {port} is not allowed")
    return parsed, shown, port


async def resolve_and_check(
    url: str, policy: GuardPolicy, resolver: Resolver | None = None
) -> Vetted:
    """Vet `url`: scheme, no credentials, port, and every address its host resolves to.

    IP literals (any spelling) are checked without resolving. A name is refused if any of
    its answers is refused (the rule of the first bad one) or if there are none.
    """
    parsed, shown, port = _parse_url(url, policy)
    host = parsed.host
    if host.removesuffix(".") in METADATA_HOSTS:
        raise Refused(shown, "metadata", f"{host} is a cloud metadata host name")
    try:
        literal = parse_ip_literal(host)
    except ValueError as exc:
        raise Refused(shown, "invalid-url", str(exc)) from exc
    if literal is not None:
        addresses: tuple[str, ...] = (str(literal),)
    else:
        try:
            answers = await (resolver or _system_resolve)(host, port)
            addresses = tuple(dict.fromkeys(str(ipaddress.ip_address(a)) for a in answers))
        except (OSError, UnicodeError, ValueError) as exc:
            raise Refused(shown, "unresolvable", f"{host} cannot be resolved") from exc
    if not addresses:
        raise Refused(shown, "no-addresses", f"{host} resolved to no addresses")
    for address in addresses:
        check_address(ipaddress.ip_address(address), policy, shown)
    return Vetted(url, host, port, parsed.scheme, addresses)


class GuardedTransport(httpx.AsyncBaseTransport):
    """Vets every request, then connects to the vetted IP, never to a fresh DNS answer.

    Each request is resolved and checked exactly once, just before it is sent; keep-alive
    connections are pooled by IP, so a reused connection always goes to an address vetted
    for this very request. Pools are kept per (scheme, host, port), so an https connection
    verified for one host name is never reused for another; past MAX_TRANSPORTS hosts, the
    rest share a pool without keep-alive. Resolution obeys the request's connect timeout.
    """

    def __init__(
        self,
        policy: GuardPolicy,
        *,
        resolver: Resolver | None = None,
        verify: ssl.SSLContext | bool = True,
    ) -> None:
        self._policy, self._resolver = policy, resolver
        self._ssl = httpx.create_ssl_context(verify=verify)
        self._pools: dict[tuple[str, str, int], httpx.AsyncHTTPTransport] = {}
        self._overflow = self._new_pool(httpx.Limits(max_keepalive_connections=0))

    def _new_pool(self, limits: httpx.Limits) -> httpx.AsyncHTTPTransport:
        return httpx.AsyncHTTPTransport(
            verify=self._ssl, trust_env=False, http2=False, retries=0, limits=limits
        )

    def _pool_for(self, vetted: Vetted) -> httpx.AsyncHTTPTransport:
        key = (vetted.scheme, vetted.host, vetted.port)
        if key not in self._pools and len(self._pools) < MAX_TRANSPORTS:
            self._pools[key] = self._new_pool(httpx.Limits())
        return self._pools.get(key, self._overflow)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Check `request` (Refused if not allowed), then send it to the vetted address."""
        timeout = request.extensions.get("timeout", {}).get("connect")
        try:
            async with asyncio.timeout(timeout):
                vetted = await resolve_and_check(str(request.url), self._policy, self._resolver)
        except TimeoutError as exc:
            raise httpx.ConnectTimeout("resolving the host timed out", request=request) from exc
        extensions = dict(request.extensions)
        if vetted.scheme == "https" and parse_ip_literal(vetted.host) is None:
            extensions["sni_hostname"] = vetted.host
        headers = request.headers.copy()
        headers.setdefault("Host", request.url.netloc.decode("ascii"))
        pinned = httpx.Request(
            request.method,
            request.url.copy_with(host=vetted.address),
            headers=headers,
            stream=request.stream,
            extensions=extensions,
        )
        return await self._pool_for(vetted).handle_async_request(pinned)

    async def aclose(self) -> None:
        """Close every pool."""
        for pool in [*self._pools.values(), self._overflow]:
            await pool.aclose()
        self._pools.clear()


def guarded_client(
    policy: GuardPolicy,
    *,
    timeout: httpx.Timeout,
    resolver: Resolver | None = None,
    verify: ssl.SSLContext | bool = True,
) -> httpx.AsyncClient:
    """An AsyncClient that sends only through the guard, never follows redirects, no proxies."""
    transport = GuardedTransport(policy, resolver=resolver, verify=verify)
    return httpx.AsyncClient(
        transport=transport, timeout=timeout, follow_redirects=False, trust_env=False
    )
