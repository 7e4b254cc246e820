"""Each provider against a real server: aiosmtpd (plain, STARTTLS + AUTH, implicit TLS),
a loopback HTTP stand-in for Resend behind the SSRF guard, and the file outbox.
"""

from __future__ import annotations

import asyncio
import json
import socket
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from settler_jobs.config import Settings
from settler_jobs.emails.message import OutgoingEmail, compose
from settler_jobs.emails.outbox import OutboxProvider, list_outbox, read_outbox
from settler_jobs.emails.providers import provider_from_settings
from settler_jobs.emails.resend import ResendProvider
from settler_jobs.emails.sender import ProviderError
from settler_jobs.emails.smtp import SmtpConfig, SmtpProvider
from settler_jobs.emails.templates import render
from settler_jobs.errors import NotFound
from settler_jobs.net_guard import GuardPolicy, guarded_client
from tests.smtp_server import Recorder, self_signed, smtp_server
from tests.webhook_receiver import Reply, WebhookReceiver

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
LOCAL = GuardPolicy.from_strings(True, ["127.0.0.1/32"])
TIMEOUT = httpx.Timeout(10.0)


def email(to: str = "ann@example.com", digest: str = "0123456789abcdef") -> OutgoingEmail:
    rendered = render("welcome", {"name": "Ann <admin>"})
    return compose(
        rendered, sender="Settler <no-reply@example.com>", to=to, digest=digest, date=NOW
    )


def plain(port: int, **extra: object) -> SmtpProvider:
    return SmtpProvider(SmtpConfig("127.0.0.1", port, starttls=False, timeout_s=10, **extra))  # type: ignore[arg-type]


async def test_smtp_sends_multipart_mail_and_reuses_one_connection() -> None:
    async with smtp_server() as server:
        provider = plain(server.port)
        async with provider.session() as session:
            first = await session.send(email("ann@example.com", "a" * 16))
            await session.send(email("bob@example.org", "b" * 16))
        received = await server.recorder.wait_for(2)
    assert first == "<aaaaaaaaaaaaaaaa@example.com>"
    assert server.recorder.to() == ["ann@example.com", "bob@example.org"]
    message = received[0].message
    assert received[0].mail_from == "no-reply@example.com"
    assert message["Message-ID"] == first and message["To"] == "ann@example.com"
    html = message.get_body(("html",))
    assert html is not None and "Ann &lt;admin&gt;" in html.get_content()


async def test_smtp_starttls_with_auth_against_a_self_signed_certificate(tmp_path: Path) -> None:
    context, cert = self_signed(tmp_path)
    async with smtp_server(starttls=context, users={"mailer": "s3cret"}) as server:
        good = SmtpProvider(
            SmtpConfig("127.0.0.1", server.port, "mailer", "s3cret", ca_file=cert, timeout_s=10)
        )
        async with good.session() as session:
            await session.send(email())
        (received,) = await server.recorder.wait_for(1)
        assert received.authenticated_as == "mailer"

        wrong = SmtpProvider(
            SmtpConfig("127.0.0.1", server.port, "mailer", "nope", ca_file=cert, timeout_s=10)
        )
        with pytest.raises(ProviderError) as refused:
            async with wrong.session() as session:
                await session.send(email())
        assert refused.value.permanent and refused.value.code == 535
        assert "nope" not in str(refused.value)

        untrusted = SmtpProvider(SmtpConfig("127.0.0.1", server.port, "mailer", "s3cret"))
        with pytest.raises(ProviderError, match="SMTP connection failed") as unverified:
            async with untrusted.session() as session:
                await session.send(email())
        assert not unverified.value.permanent
        assert len(server.recorder.received) == 1


async def test_smtp_implicit_tls(tmp_path: Path) -> None:
    context, cert = self_signed(tmp_path)
    async with smtp_server(implicit_tls=context) as server:
        settings = Settings(
            email_provider="smtp",
            smtp_host="127.0.0.1",
            smtp_port=server.port,
            smtp_tls=True,
            smtp_ca_file=cert,
        )
        provider = provider_from_settings(settings, lambda: httpx.AsyncClient())
        async with provider.session() as session:
            await session.send(email())
        await server.recorder.wait_for(1)


async def test_smtp_refusals_are_classified_by_code() -> None:
    recorder = Recorder(
        refuse_rcpt={"gone@example.com": "550 5.1.1 no such user"},
        data_replies=["451 4.3.0 try again later"],
    )
    async with smtp_server(recorder=recorder) as server:
        async with plain(server.port).session() as session:
            with pytest.raises(ProviderError) as gone:
                await session.send(email("gone@example.com"))
            with pytest.raises(ProviderError) as later:
                await session.send(email("ann@example.com"))
            await session.send(email("ann@example.com"))  # the same session still works
        await recorder.wait_for(1)
    assert (gone.value.permanent, gone.value.scope, gone.value.code) == (True, "recipient", 550)
    assert (later.value.permanent, later.value.code) == (False, 451)


async def test_smtp_server_down_is_a_passing_failure() -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(ProviderError) as caught:
        async with plain(port).session() as session:
            await session.send(email())
    assert not caught.value.permanent and caught.value.scope == "provider"


async def test_resend_posts_json_with_bearer_key_and_idempotency_key() -> None:
    replies = [Reply("200 OK", b'{"id":"re_1"}', ("Content-Type: application/json",))]
    async with (
        WebhookReceiver(replies=replies) as stand_in,
        guarded_client(LOCAL, timeout=TIMEOUT) as client,
    ):
        provider = ResendProvider(client, "re_test_key", base_url=stand_in.url(""))
        async with provider.session() as session:
            assert await session.send(email()) == "re_1"
    (seen,) = stand_in.seen
    assert seen.path == "/emails"
    assert seen.headers["authorization"] == "Bearer re_test_key"
    assert seen.headers["idempotency-key"] == "0123456789abcdef"
    body = json.loads(seen.body)
    assert body["to"] == ["ann@example.com"] and body["from"] == "Settler <no-reply@example.com>"
    assert "Ann &lt;admin&gt;" in body["html"] and "Ann <admin>" in body["text"]


async def test_resend_errors_keep_the_key_out_and_honour_retry_after() -> None:
    replies = [
        Reply("503 Service Unavailable", b"busy", ("Retry-After: 3",)),
        Reply("422 Unprocessable Entity", b'{"message":"invalid to"}'),
    ]
    async with (
        WebhookReceiver(replies=replies) as stand_in,
        guarded_client(LOCAL, timeout=TIMEOUT) as client,
    ):
        provider = ResendProvider(client, "re_secret_key", base_url=stand_in.url(""))
        with pytest.raises(ProviderError) as busy:
            await provider.send(email())
        with pytest.raises(ProviderError) as invalid:
            await provider.send(email())
    assert (busy.value.permanent, busy.value.retry_after_s) == (False, 3.0)
    assert (invalid.value.permanent, invalid.value.scope) == (True, "recipient")
    assert "re_secret_key" not in str(busy.value) + str(invalid.value)


async def test_resend_through_the_guard_refuses_loopback_unless_allowed() -> None:
    async with (
        WebhookReceiver() as stand_in,
        guarded_client(GuardPolicy(), timeout=TIMEOUT) as client,
    ):
        provider = ResendProvider(client, "k", base_url=stand_in.url(""))
        with pytest.raises(ProviderError, match="refused") as caught:
            await provider.send(email())
    assert caught.value.permanent and stand_in.seen == []


async def test_resend_needs_an_api_key() -> None:
    from settler_jobs.errors import ConfigError

    with pytest.raises(ConfigError, match="SETTLER_RESEND_API_KEY"):
        provider_from_settings(Settings(email_provider="resend"), lambda: httpx.AsyncClient())


async def test_outbox_writes_each_send_once_atomically_and_lists_it(tmp_path: Path) -> None:
    outbox = tmp_path / "outbox"
    provider = OutboxProvider(outbox)
    async with provider.session() as session:
        name = await session.send(email("ann@example.com", "aa" * 10))
        again = await session.send(email("ann@example.com", "aa" * 10))
        await session.send(email("bob@example.org", "bb" * 10))
    assert name == again == "aa" * 10 + ".eml"
    assert sorted(p.name for p in outbox.iterdir()) == ["aa" * 10 + ".eml", "bb" * 10 + ".eml"]
    (outbox / ".tmp-partial.eml").write_bytes(b"half a mess")  # an interrupted write
    listed = list_outbox(outbox, limit=10)
    assert {e.to for e in listed} == {"ann@example.com", "bob@example.org"}
    assert all(e.subject == "Welcome to Settler, Ann <admin>" for e in listed)
    assert "Message-ID: <" + "aa" * 10 + "@example.com>" in read_outbox(outbox, name)
    for bad in ("../secret.eml", ".tmp-partial.eml", "missing0000.eml"):
        with pytest.raises(NotFound):
            read_outbox(outbox, bad)


async def test_outbox_write_failure_is_a_passing_failure(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    with pytest.raises(ProviderError) as caught:
        await OutboxProvider(blocker / "outbox").send(email())
    assert not caught.value.permanent


async def test_concurrent_smtp_sessions() -> None:
    async with smtp_server() as server:
        provider = plain(server.port)

        async def one(i: int) -> None:
            async with provider.session() as session:
                await session.send(email(f"u{i}@example.com", f"{i:016x}"))

        await asyncio.gather(*(one(i) for i in range(5)))
        await server.recorder.wait_for(5)
    assert sorted(server.recorder.to()) == sorted(f"u{i}@example.com" for i in range(5))
