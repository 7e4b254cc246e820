"""The outbound-request guard: every spelling of a non-public address is refused, by rule.

Nothing here opens a connection: addresses are only classified, and DNS is a fake resolver.
"""

from __future__ import annotations

import ipaddress
import pickle
import socket
import sys
from collections.abc import Sequence

import pytest

from settler_jobs.errors import ConfigError, SettlerError
from settler_jobs.net_guard import (
    GuardPolicy,
    Refused,
    check_address,
    parse_ip_literal,
    resolve_and_check,
)

EMBEDDED = "ipv4-embedded-in-ipv6"
OPEN = GuardPolicy(allow_http=True)
PUBLIC_V4 = "93.184.216.34"  # only classified, never contacted
PUBLIC_V6 = "2606:2800:220:1:248:1893:25c8:1946"

# (host as written in a URL, rule, address named in the refusal)
REFUSED_HOSTS = [
    ("127.0.0.1", "loopback", "127.0.0.1"),
    ("127.1", "loopback", "127.0.0.1"),
    ("127.1.", "loopback", "127.0.0.1"),
    ("0x7f.1", "loopback", "127.0.0.1"),
    ("0X7F.0.0.1", "loopback", "127.0.0.1"),
    ("0177.0.0.1", "loopback", "127.0.0.1"),
    ("0177.1", "loopback", "127.0.0.1"),
    ("127.0.1", "loopback", "127.0.0.1"),
    ("2130706433", "loopback", "127.0.0.1"),
    ("0x7f000001", "loopback", "127.0.0.1"),
    ("017700000001", "loopback", "127.0.0.1"),
    ("[::1]", "loopback", "::1"),
    ("[::ffff:127.0.0.1]", EMBEDDED, "::ffff:7f00:1"),
    ("[::ffff:7f00:1]", EMBEDDED, "::ffff:7f00:1"),
    ("[::127.0.0.1]", EMBEDDED, "::7f00:1"),
    ("[2002:7f00:1::]", EMBEDDED, "2002:7f00:1::"),
    ("[64:ff9b::7f00:1]", EMBEDDED, "64:ff9b::7f00:1"),
    ("[64:ff9b::a9fe:a9fe]", EMBEDDED, "64:ff9b::a9fe:a9fe"),
    ("[64:ff9b:1::a00:1]", EMBEDDED, "64:ff9b:1::a00:1"),
    ("[2001:0:4136:e378:8000:63bf:3fff:fdd2]", EMBEDDED, "2001:0:4136:e378:8000:63bf:3fff:fdd2"),
    ("[::ffff:93.184.216.34]", EMBEDDED, "::ffff:5db8:d822"),
    ("169.254.169.254", "metadata", "169.254.169.254"),
    ("0xa9fea9fe", "metadata", "169.254.169.254"),
    ("169.254.170.2", "metadata", "169.254.170.2"),
    ("[fd00:ec2::254]", "metadata", "fd00:ec2::254"),
    ("100.100.100.200", "metadata", "100.100.100.200"),
    ("192.0.0.192", "metadata", "192.0.0.192"),
    ("10.0.0.1", "private", "10.0.0.1"),
    ("012.0.0.1", "private", "10.0.0.1"),
    ("172.16.5.4", "private", "172.16.5.4"),
    ("192.168.1.1", "private", "192.168.1.1"),
    ("[fc00::1]", "private", "fc00::1"),
    ("[fd12:3456::1]", "private", "fd12:3456::1"),
    ("100.64.0.1", "cgnat", "100.64.0.1"),
    ("0.0.0.0", "unspecified", "0.0.0.0"),
    ("0", "unspecified", "0.0.0.0"),
    ("[::]", "unspecified", "::"),
    ("224.0.0.1", "multicast", "224.0.0.1"),
    ("[ff02::1]", "multicast", "ff02::1"),
    ("192.0.2.1", "documentation", "192.0.2.1"),
    ("198.51.100.7", "documentation", "198.51.100.7"),
    ("203.0.113.9", "documentation", "203.0.113.9"),
    ("[2001:db8::1]", "documentation", "2001:db8::1"),
    ("198.18.0.1", "reserved", "198.18.0.1"),
    ("240.0.0.1", "reserved", "240.0.0.1"),
    ("255.255.255.255", "reserved", "255.255.255.255"),
    ("0.1.2.3", "reserved", "0.1.2.3"),
    ("192.0.0.8", "reserved", "192.0.0.8"),
    ("[100::1]", "reserved", "100::1"),
    ("169.254.1.1", "link-local", "169.254.1.1"),
    ("[fe80::1]", "link-local", "fe80::1"),
]


async def no_dns(host: str, port: int) -> list[str]:
    raise AssertionError(f"{host} must not be resolved")


class FakeDns:
    """Answers every name with fixed addresses and records the questions."""

    def __init__(self, *addresses: str) -> None:
        self.addresses = list(addresses)
        self.calls: list[tuple[str, int]] = []

    async def __call__(self, host: str, port: int) -> Sequence[str]:
        self.calls.append((host, port))
        return self.addresses


@pytest.mark.parametrize(("host", "rule", "address"), REFUSED_HOSTS)
async def test_every_spelling_is_refused_with_its_rule(host: str, rule: str, address: str) -> None:
    with pytest.raises(Refused) as caught:
        await resolve_and_check(f"https://{host}/hook", OPEN, no_dns)
    assert (caught.value.rule, caught.value.address) == (rule, address)
    assert f"(rule: {rule})" in str(caught.value)


@pytest.mark.parametrize(("host", "rule", "address"), REFUSED_HOSTS)
def test_check_address_refuses_by_rule(host: str, rule: str, address: str) -> None:
    ip = ipaddress.ip_address(address)
    with pytest.raises(Refused) as caught:
        check_address(ip, GuardPolicy())
    assert caught.value.rule == rule


def test_embedded_refusal_names_the_inner_address_and_its_own_rule() -> None:
    with pytest.raises(Refused) as caught:
        check_address(ipaddress.ip_address("64:ff9b::a9fe:a9fe"), GuardPolicy())
    assert "169.254.169.254" in str(caught.value)
    assert "cloud metadata" in str(caught.value)
    assert caught.value.rule == EMBEDDED


@pytest.mark.parametrize("address", [PUBLIC_V4, PUBLIC_V6, "8.8.8.8", "1.1.1.1"])
def test_public_addresses_pass(address: str) -> None:
    check_address(ipaddress.ip_address(address), GuardPolicy())


async def test_public_literal_is_vetted_without_resolving() -> None:
    vetted = await resolve_and_check(f"https://{PUBLIC_V4}/x", GuardPolicy(), no_dns)
    assert (vetted.host, vetted.port, vetted.scheme) == (PUBLIC_V4, 443, "https")
    assert vetted.addresses == (PUBLIC_V4,)
    decimal = await resolve_and_check("https://1572395042/", GuardPolicy(), no_dns)
    assert decimal.address == PUBLIC_V4


@pytest.mark.parametrize(
    ("spelling", "expected"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("127.1", "127.0.0.1"),
        ("0x7f.1", "127.0.0.1"),
        ("0177.0.0.1", "127.0.0.1"),
        ("00000000000000000177.1", "127.0.0.1"),
        ("2130706433", "127.0.0.1"),
        ("0x7f000001", "127.0.0.1"),
        ("0x00007f.0x0.0.01", "127.0.0.1"),
        ("017700000001", "127.0.0.1"),
        ("1.0xffffff", "1.255.255.255"),
        ("1.2.65535", "1.2.255.255"),
        ("0xffffffff", "255.255.255.255"),
        ("::1", "::1"),
        ("[::ffff:7f00:1]", "::ffff:7f00:1"),
        ("example.com", None),
        ("1.2.3.4.5", None),
        ("256.1", None),
        ("1.0x1000000", None),
        ("4294967296", None),
        ("08.0.0.1", None),
        ("0x.0.0.1", None),
        ("1e3", None),
        ("1..1", None),
        ("", None),
        ("[not:an:address]", None),
    ],
)
def test_parse_ip_literal(spelling: str, expected: str | None) -> None:
    parsed = parse_ip_literal(spelling)
    assert (None if parsed is None else str(parsed)) == expected


@pytest.mark.skipif(sys.platform != "linux", reason="inet_aton edge cases differ by libc")
@pytest.mark.parametrize(
    "spelling",
    ["127.1", "0x7f.1", "0177.0.0.1", "2130706433", "017700000001", "1.0xffffff", "08.1", "0x.1"],
)
def test_ipv4_spellings_agree_with_inet_aton(spelling: str) -> None:
    try:
        expected: str | None = socket.inet_ntoa(socket.inet_aton(spelling))
    except OSError:
        expected = None
    parsed = parse_ip_literal(spelling)
    assert (None if parsed is None else str(parsed)) == expected


def test_zone_ids_are_rejected() -> None:
    with pytest.raises(ValueError, match="zone"):
        parse_ip_literal("fe80::1%eth0")


async def test_zone_id_in_url_is_refused() -> None:
    with pytest.raises(Refused) as caught:
        await resolve_and_check("http://[fe80::1%25eth0]/", OPEN, no_dns)
    assert caught.value.rule == "invalid-url"


async def test_http_is_refused_unless_allowed() -> None:
    with pytest.raises(Refused) as caught:
        await resolve_and_check(f"http://{PUBLIC_V4}/", GuardPolicy(), no_dns)
    assert caught.value.rule == "scheme"
    vetted = await resolve_and_check(f"http://{PUBLIC_V4}/", OPEN, no_dns)
    assert (vetted.scheme, vetted.port) == ("http", 80)


@pytest.mark.parametrize("url", ["ftp://example.com/", "file:///etc/passwd", "gopher://x.test/"])
async def test_other_schemes_are_refused(url: str) -> None:
    with pytest.raises(Refused) as caught:
        await resolve_and_check(url, OPEN, no_dns)
    assert caught.value.rule in {"scheme", "invalid-url"}


@pytest.mark.parametrize("userinfo", ["user:s3cret@", "user@", ":s3cret@"])
async def test_credentials_in_url_are_refused_and_not_shown(userinfo: str) -> None:
    with pytest.raises(Refused) as caught:
        await resolve_and_check(f"https://{userinfo}hooks.example/p?sig=q", GuardPolicy(), no_dns)
    assert caught.value.rule == "credentials-in-url"
    assert "s3cret" not in str(caught.value)
    assert "user" not in str(caught.value)
    assert str(caught.value) == (
        "refused https://hooks.example/: the URL carries credentials (rule: credentials-in-url)"
    )


async def test_message_shows_only_the_origin() -> None:
    url = "https://10.0.0.5:8443/services/T0/B0/tok3n?sig=abc#frag"
    with pytest.raises(Refused) as caught:
        await resolve_and_check(url, GuardPolicy(), no_dns)
    assert str(caught.value) == (
        "refused https://10.0.0.5:8443/: 10.0.0.5 is private address space (rule: private)"
    )
    assert caught.value.address == "10.0.0.5"
    assert isinstance(caught.value, SettlerError)


async def test_allow_list_admits_exactly_the_listed_networks() -> None:
    policy = GuardPolicy.from_strings(True, ["127.0.0.1/32"])
    vetted = await resolve_and_check("http://127.0.0.1:8080/", policy, no_dns)
    assert vetted.address == "127.0.0.1"
    assert (await resolve_and_check("http://0x7f.1:8080/", policy, no_dns)).address == "127.0.0.1"
    for other in ("127.0.0.2", "[::1]", "[::ffff:127.0.0.1]"):
        with pytest.raises(Refused):
            await resolve_and_check(f"http://{other}:8080/", policy, no_dns)


async def test_any_bad_answer_refuses_the_name() -> None:
    dns = FakeDns(PUBLIC_V4, "127.0.0.1")
    with pytest.raises(Refused) as caught:
        await resolve_and_check("https://mixed.example/hook", GuardPolicy(), dns)
    assert (caught.value.rule, caught.value.address) == ("loopback", "127.0.0.1")
    assert dns.calls == [("mixed.example", 443)]


async def test_first_bad_answer_names_the_rule() -> None:
    dns = FakeDns(PUBLIC_V4, "10.1.2.3", "127.0.0.1")
    with pytest.raises(Refused) as caught:
        await resolve_and_check("https://mixed.example/", GuardPolicy(), dns)
    assert caught.value.rule == "private"


async def test_resolved_names_are_vetted_in_order_without_duplicates() -> None:
    dns = FakeDns(PUBLIC_V4, PUBLIC_V6, PUBLIC_V4)
    vetted = await resolve_and_check("https://Hooks.Example:8443/x?y=1", GuardPolicy(), dns)
    assert vetted.addresses == (PUBLIC_V4, PUBLIC_V6)
    assert vetted.address == PUBLIC_V4
    assert (vetted.host, vetted.port) == ("hooks.example", 8443)
    assert dns.calls == [("hooks.example", 8443)]
    assert "y=1" not in repr(vetted)


async def test_no_answers_is_refused() -> None:
    with pytest.raises(Refused) as caught:
        await resolve_and_check("https://empty.example/", GuardPolicy(), FakeDns())
    assert caught.value.rule == "no-addresses"
    assert caught.value.address is None


async def test_resolution_failure_is_refused() -> None:
    async def failing(host: str, port: int) -> list[str]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    with pytest.raises(Refused) as caught:
        await resolve_and_check("https://nowhere.invalid/", GuardPolicy(), failing)
    assert caught.value.rule == "unresolvable"
    garbage = FakeDns("not-an-address")
    with pytest.raises(Refused) as caught:
        await resolve_and_check("https://garbage.example/", GuardPolicy(), garbage)
    assert caught.value.rule == "unresolvable"


@pytest.mark.parametrize("host", ["metadata.google.internal", "METADATA.google.internal."])
async def test_metadata_host_names_are_refused_before_resolving(host: str) -> None:
    with pytest.raises(Refused) as caught:
        await resolve_and_check(f"http://{host}/computeMetadata/v1/", OPEN, no_dns)
    assert caught.value.rule == "metadata"


async def test_port_policy() -> None:
    policy = GuardPolicy(allowed_ports=frozenset({443}))
    assert (await resolve_and_check(f"https://{PUBLIC_V4}/", policy, no_dns)).port == 443
    with pytest.raises(Refused) as caught:
        await resolve_and_check(f"https://{PUBLIC_V4}:8443/", policy, no_dns)
    assert caught.value.rule == "port"
    with pytest.raises(Refused) as caught:
        await resolve_and_check(f"https://{PUBLIC_V4}:0/", GuardPolicy(), no_dns)
    assert caught.value.rule == "port"


@pytest.mark.parametrize("url", ["not a url", "https:///path-only", "https://[::1/"])
async def test_unusable_urls_are_refused_without_echoing_them(url: str) -> None:
    with pytest.raises(Refused) as caught:
        await resolve_and_check(url, GuardPolicy(), no_dns)
    assert caught.value.rule in {"invalid-url", "scheme"}


def test_policy_from_strings() -> None:
    policy = GuardPolicy.from_strings(False, ["127.0.0.1/32", " ::1/128 ", ""], [443, 8443])
    assert policy.allow_networks == (
        ipaddress.ip_network("127.0.0.1/32"),
        ipaddress.ip_network("::1/128"),
    )
    assert policy.allowed_ports == frozenset({443, 8443})
    assert GuardPolicy.from_strings(True, []) == GuardPolicy(allow_http=True)
    with pytest.raises(ConfigError, match="allow-list"):
        GuardPolicy.from_strings(False, ["127.0.0.1/8"])
    with pytest.raises(ConfigError):
        GuardPolicy.from_strings(False, ["localhost"])


def test_refused_survives_pickling() -> None:
    error = Refused("https://x.example/", "private", "10.0.0.5 is private", "10.0.0.5")
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.rule, copy.address, str(copy)) == (error.rule, error.address, str(error))
