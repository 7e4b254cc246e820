"""One webhook attempt against a real loopback HTTP/1.1 receiver.

The receiver verifies every request's Standard Webhooks signature and records it, so
each test can check both what the attempt reported and what the receiver saw.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from settler_jobs.domain import RetryPolicy, parse_retry_after
from settler_jobs.guarded_http import GuardedHttp1
from settler_jobs.net_guard import GuardPolicy
from settler_jobs.secrets_box import new_webhook_secret
from settler_jobs.webhooks.attempt import (
    AttemptResult,
    Outcome,
    attempt,
    classify_error,
    next_delay_s,
)
from settler_jobs.webhooks.signing import DEFAULT_USER_AGENT, json_body, sign_headers
from tests.webhook_receiver import Route, WebhookReceiver, respond

SECRET = new_webhook_secret()
BODY = json_body({"type": "export.ready", "data": {"exportId": "exp_1", "note": "naïve ✓"}})
LOCAL = GuardPolicy.from_strings(True, ["127.0.0.1/32"])
HUGE_BYTES = 10 * 1024 * 1024
TRICKLE_PAUSE_S = 0.2


async def _ok(receiver: WebhookReceiver, writer: asyncio.StreamWriter) -> None:
    await respond(writer, "200 OK", b'{"received":true}', "Content-Type: application/json")


async def _gone(receiver: WebhookReceiver, writer: asyncio.StreamWriter) -> None:
    await respond(writer, "410 Gone", b"endpoint removed")


async def _slow_down(receiver: WebhookReceiver, writer: asyncio.StreamWriter) -> None:
    await respond(writer, "429 Too Many Requests", b"", "Retry-After: 7")


async def _unavailable(receiver: WebhookReceiver, writer: asyncio.StreamWriter) -> None:
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=120), usegmt=True)
    await respond(writer, "503 Service Unavailable", b"", f"Retry-After: {when}")


async def _broken(receiver: WebhookReceiver, writer: asyncio.StreamWriter) -> None:
    await respond(writer, "500 Internal Server Error", b"stack trace \xff here")


async def _redirect(receiver: WebhookReceiver, writer: asyncio.StreamWriter) -> None:
    await respond(writer, "302 Found", b"", f"Location: {receiver.url('/elsewhere')}")


async def _trickle(receiver: WebhookReceiver, writer: asyncio.StreamWriter) -> None:
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\nConnection: close\r\n\r\n")
    while True:  # until the client hangs up or the test ends
        await writer.drain()
        await asyncio.sleep(TRICKLE_PAUSE_S)  # the slow receiver under test
        writer.write(b"x")


async def _huge(receiver: WebhookReceiver, writer: asyncio.StreamWriter) -> None:
    writer.write(f"HTTP/1.1 200 OK\r\nContent-Length: {HUGE_BYTES}\r\n\r\n".encode())
    chunk = b"x" * 65536
    for _ in range(HUGE_BYTES // len(chunk)):
        writer.write(chunk)
        await writer.drain()


ROUTES: dict[str, Route] = {
    "/ok": _ok,
    "/gone": _gone,
    "/slow-down": _slow_down,
    "/unavailable": _unavailable,
    "/broken": _broken,
    "/redirect": _redirect,
    "/trickle": _trickle,
    "/huge": _huge,
}


@pytest.fixture
async def receiver() -> AsyncIterator[WebhookReceiver]:
    async with WebhookReceiver([SECRET], ROUTES) as server:
        yield server


@pytest.fixture
async def client() -> AsyncIterator[GuardedHttp1]:
    http = GuardedHttp1(LOCAL)
    yield http
    await http.aclose()


def _signed(*secrets: str) -> dict[str, str]:
    return sign_headers(
        webhook_id="msg_test1",
        timestamp=datetime.now(UTC),
        body=BODY,
        secrets=secrets or (SECRET,),
        user_agent=DEFAULT_USER_AGENT,
    )


async def _post(client: GuardedHttp1, url: str, deadline_s: float = 5.0) -> AttemptResult:
    return await attempt(client, url=url, headers=_signed(), body=BODY, deadline_s=deadline_s)


async def test_success_is_signed_verified_and_identified(
    receiver: WebhookReceiver, client: GuardedHttp1
) -> None:
    headers = _signed(new_webhook_secret(), SECRET)  # mid-rotation: new secret first
    result = await attempt(
        client, url=receiver.url("/ok"), headers=headers, body=BODY, deadline_s=5.0
    )
    assert result.outcome is Outcome.SUCCEEDED
    assert (result.status_code, result.error_class) == (200, None)
    assert result.response_excerpt == '{"received":true}'
    assert result.retry_after_s is None and result.latency_ms >= 0
    [seen] = receiver.seen
    assert seen.verified and seen.body == BODY and seen.path == "/ok"
    assert "Settler" in seen.headers["user-agent"]
    assert seen.headers["webhook-id"] == "msg_test1"


async def test_gone(receiver: WebhookReceiver, client: GuardedHttp1) -> None:
    result = await _post(client, receiver.url("/gone"))
    assert (result.outcome, result.status_code) == (Outcome.GONE, 410)
    assert result.response_excerpt == "endpoint removed"


async def test_429_retry_after_seconds(receiver: WebhookReceiver, client: GuardedHttp1) -> None:
    result = await _post(client, receiver.url("/slow-down"))
    assert (result.outcome, result.status_code) == (Outcome.RETRY, 429)
    assert (result.error_class, result.retry_after_s) == ("http_4xx", 7.0)


async def test_503_retry_after_http_date(receiver: WebhookReceiver, client: GuardedHttp1) -> None:
    result = await _post(client, receiver.url("/unavailable"))
    assert (result.outcome, result.error_class) == (Outcome.RETRY, "http_5xx")
    assert result.retry_after_s is not None and 115 <= result.retry_after_s <= 120


async def test_5xx_retries_with_a_lossy_excerpt(
    receiver: WebhookReceiver, client: GuardedHttp1
) -> None:
    result = await _post(client, receiver.url("/broken"))
    assert (result.outcome, result.error_class, result.status_code) == (
        Outcome.RETRY,
        "http_5xx",
        500,
    )
    assert result.response_excerpt == "stack trace \ufffd here"
    assert result.retry_after_s is None


async def test_redirects_are_not_followed(receiver: WebhookReceiver, client: GuardedHttp1) -> None:
    result = await _post(client, receiver.url("/redirect"))
    assert (result.outcome, result.error_class, result.status_code) == (
        Outcome.RETRY,
        "redirect",
        302,
    )
    assert [seen.path for seen in receiver.seen] == ["/redirect"]


async def test_a_trickling_receiver_hits_the_deadline(
    receiver: WebhookReceiver, client: GuardedHttp1
) -> None:
    deadline_s = 1.0
    started = time.monotonic()
    result = await _post(client, receiver.url("/trickle"), deadline_s=deadline_s)
    elapsed = time.monotonic() - started
    assert (result.outcome, result.error_class) == (Outcome.RETRY, "timeout")
    assert result.status_code == 200  # headers arrived; the body never finished
    assert deadline_s <= elapsed < deadline_s + 0.5
    assert 0 < len(result.response_excerpt) <= deadline_s / TRICKLE_PAUSE_S


async def test_a_huge_body_is_cut_to_the_excerpt(
    receiver: WebhookReceiver, client: GuardedHttp1
) -> None:
    result = await _post(client, receiver.url("/huge"))
    assert (result.outcome, result.status_code) == (Outcome.SUCCEEDED, 200)
    assert result.response_excerpt == "x" * 1024
    small = await attempt(
        client,
        url=receiver.url("/huge"),
        headers=_signed(),
        body=BODY,
        deadline_s=5.0,
        excerpt_bytes=10,
    )
    assert small.response_excerpt == "x" * 10


async def test_a_refused_connection_is_retried(client: GuardedHttp1) -> None:
    with socket.socket() as closed:  # bound but not listening: connections are refused
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        result = await _post(client, f"http://127.0.0.1:{port}/hook")
    assert (result.outcome, result.error_class, result.status_code) == (
        Outcome.RETRY,
        "connect",
        None,
    )


async def test_a_tls_failure_is_classified(client: GuardedHttp1) -> None:
    async def plain_http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(plain_http, "127.0.0.1", 0)
    async with server:
        port = server.sockets[0].getsockname()[1]
        result = await _post(client, f"https://127.0.0.1:{port}/hook")
    assert (result.outcome, result.error_class) == (Outcome.RETRY, "tls")


async def test_a_guard_refusal_fails_permanently(receiver: WebhookReceiver) -> None:
    guarded = GuardedHttp1(GuardPolicy(allow_http=True))  # loopback not allow-listed
    result = await _post(guarded, receiver.url("/ok"))
    assert (result.outcome, result.error_class) == (Outcome.FAILED_PERMANENT, "refused")
    assert "127.0.0.1 is loopback" in result.response_excerpt
    assert "(rule: loopback)" in result.response_excerpt
    assert receiver.seen == []


async def test_an_unusable_url_fails_permanently(client: GuardedHttp1) -> None:
    result = await _post(client, "ftp://127.0.0.1/hook")
    assert (result.outcome, result.error_class) == (Outcome.FAILED_PERMANENT, "invalid_url")


async def test_arguments_are_checked(client: GuardedHttp1) -> None:
    with pytest.raises(ValueError):
        await _post(client, "http://127.0.0.1:9/hook", deadline_s=0)


NOW = datetime(2030, 6, 1, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("7", 7.0),
        (" 120 ", 120.0),
        ("1.5", 1.5),
        ("-5", 0.0),
        ("99999999", 3600.0),
        ("Sat, 01 Jun 2030 12:01:30 GMT", 90.0),
        ("Sat, 01 Jun 2030 11:00:00 GMT", 0.0),
        ("Sat, 01 Jun 2030 12:00:10 -0000", 10.0),
        ("soon", None),
        ("", None),
        ("1e9", None),
        ("nan", None),
        (None, None),
    ],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value, now=NOW, cap_s=3600.0) == expected


def _retry(retry_after_s: float | None) -> AttemptResult:
    return AttemptResult(Outcome.RETRY, 503, 5, "http_5xx", "", retry_after_s)


def test_next_delay_prefers_retry_after_capped_by_the_policy() -> None:
    policy = RetryPolicy(attempts=5, base_delay_s=2.0, max_delay_s=60.0, jitter=0.5)
    rng = random.Random(1)
    assert next_delay_s(_retry(7.0), 1, policy, rng) == 7.0
    assert next_delay_s(_retry(600.0), 1, policy, rng) == 60.0
    assert next_delay_s(_retry(0.0), 1, policy, rng) == 0.0
    delays = [next_delay_s(_retry(None), n, policy, rng) for n in (1, 2, 3)]
    assert 1.0 <= delays[0] <= 2.0 and 2.0 <= delays[1] <= 4.0 and 4.0 <= delays[2] <= 8.0
    with pytest.raises(ValueError):
        next_delay_s(AttemptResult(Outcome.GONE, 410, 5, "http_4xx", ""), 1, policy, rng)


@pytest.mark.parametrize(
    ("rule", "outcome", "error_class"),
    [
        ("unresolvable", Outcome.RETRY, "dns"),
        ("no-addresses", Outcome.RETRY, "dns"),
        ("loopback", Outcome.FAILED_PERMANENT, "refused"),
    ],
)
def test_dns_failures_retry_but_guard_refusals_are_permanent(
    rule: str, outcome: Outcome, error_class: str
) -> None:
    from settler_jobs.net_guard import Refused

    refused = Refused("https://x.test/", rule, "test")
    assert classify_error(refused) == (outcome, error_class)
