"""Email end to end in one process: `Emails.send` -> queue -> the worker runtime's
email-sending lane -> a real provider: aiosmtpd, or a loopback Resend stand-in reached
through the SSRF-guarded client. Redis and SQLite are real.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pydantic import SecretStr

from settler_jobs.config import Settings
from settler_jobs.dlq.capture import retry_entry
from settler_jobs.domain import JobState, RetryPolicy, Tier
from settler_jobs.emails.job import default_provider, email_handler
from settler_jobs.emails.sender import EmailProvider
from settler_jobs.emails.service import Emails
from settler_jobs.errors import InvalidJob
from settler_jobs.kinds import Registry
from settler_jobs.records import JobRecord
from settler_jobs.registry import default_registry
from settler_jobs.resources import Resources
from tests.harness import System, system
from tests.helpers import eventually
from tests.integration.emails.test_ledger import CrashingProvider
from tests.smtp_server import Recorder, SmtpServer, smtp_server
from tests.webhook_receiver import Reply, WebhookReceiver

TENANT = "acme"
KIND = "email-sending"


def registry(provider_for: Any = default_provider) -> Registry:
    """The default email kind with quick retries (and, optionally, another provider)."""
    kind = default_registry().get(KIND)
    quick = dataclasses.replace(
        kind,
        handler=email_handler(provider_for),
        retry=RetryPolicy(attempts=3, base_delay_s=0.05, jitter=0),
    )
    return Registry([quick])


def smtp_settings(settings: Settings, server: SmtpServer) -> Settings:
    return settings.model_copy(
        update={
            "email_provider": "smtp",
            "smtp_host": server.host,
            "smtp_port": server.port,
            "smtp_starttls": False,
            "smtp_timeout_s": 10.0,
        }
    )


@pytest.fixture
async def recorder() -> AsyncIterator[tuple[SmtpServer, Recorder]]:
    async with smtp_server() as server:
        yield server, server.recorder


async def finished(sys_: System, job_id: str) -> JobRecord:
    async def probe() -> JobRecord:
        return await sys_.queue.get(job_id)

    return await eventually(
        probe, lambda j: j.state in (JobState.COMPLETED, JobState.FAILED), timeout_s=20
    )


async def test_send_delivers_each_recipient_its_own_email(settings: Settings) -> None:
    async with smtp_server() as server:
        smtp = smtp_settings(settings, server)
        async with system(smtp, registry()) as sys_:
            emails = Emails(sys_.sessions, sys_.queue)
            request = await emails.send(
                TENANT,
                ["ann@example.com", "bob@example.org"],
                "export_ready",
                {"report_name": "<Q3>", "download_url": "https://files.example.com/q3"},
                tier=Tier.GROWTH,
                idempotency_key="export-q3",
            )
            job = await finished(sys_, request.job_id)
            received = await server.recorder.wait_for(2)
            sends = await emails.status(TENANT, "export-q3")
            assert await emails.status("other-tenant", "export-q3") == []
    assert job.state is JobState.COMPLETED and job.tier == "growth"
    assert job.result["recipients"] == {"ann@example.com": "sent", "bob@example.org": "sent"}
    assert [r.rcpt_tos for r in received] == [("ann@example.com",), ("bob@example.org",)]
    html = received[0].message.get_body(("html",))
    assert html is not None and "&lt;Q3&gt;" in html.get_content()
    assert {(s.recipient, s.status.value, s.attempts) for s in sends} == {
        ("ann@example.com", "sent", 1),
        ("bob@example.org", "sent", 1),
    }


async def test_the_same_idempotency_key_is_one_job_and_one_send(settings: Settings) -> None:
    async with smtp_server() as server, system(smtp_settings(settings, server), registry()) as s:
        emails = Emails(s.sessions, s.queue)
        first = await emails.send(TENANT, "ann@example.com", "welcome", {"name": "A"},
                                  idempotency_key="w-1")  # fmt: skip
        await finished(s, first.job_id)
        again = await emails.send(TENANT, "ann@example.com", "welcome", {"name": "A"},
                                  idempotency_key="w-1")  # fmt: skip
        await server.recorder.wait_for(1)
    assert (again.job_id, again.created) == (first.job_id, False)
    assert server.recorder.to() == ["ann@example.com"]


async def test_tier_sets_the_priority_and_enterprise_takes_the_express_lane(
    settings: Settings,
) -> None:
    async with system(settings, registry(), start=False) as s:
        emails = Emails(s.sessions, s.queue)
        jobs = {}
        for tier in (Tier.FREE, Tier.SCALE, Tier.ENTERPRISE):
            # One tenant per tier: fresh tenants are ordered by tier (fair share shares a
            # lane among tenants; one tenant's own jobs stay in submit order).
            request = await emails.send(f"{TENANT}-{tier.value}", "ann@example.com", "welcome",
                                        {"name": "A"}, tier=tier)  # fmt: skip
            jobs[tier] = await s.queue.get(request.job_id)
        with pytest.raises(InvalidJob, match="header injection"):
            await emails.send(TENANT, "a@example.com\r\nBcc: x@example.com", "welcome",
                              {"name": "A"})  # fmt: skip
    assert jobs[Tier.SCALE].bullmq_priority < jobs[Tier.FREE].bullmq_priority
    assert jobs[Tier.ENTERPRISE].queue == "email-sending-express"
    assert jobs[Tier.FREE].payload["idempotencyKey"].startswith("auto-")


async def test_a_provider_5xx_is_retried_with_the_same_idempotency_key(settings: Settings) -> None:
    replies = [Reply("503 Service Unavailable", b"busy", ("Retry-After: 0",))]
    async with WebhookReceiver(replies=replies) as resend:
        resend_settings = settings.model_copy(
            update={
                "email_provider": "resend",
                "resend_api_key": SecretStr("re_key"),
                "resend_base_url": resend.url(""),
                "outbound_allow_http": True,
                "outbound_allow_networks": ["127.0.0.1/32"],
            }
        )
        async with system(resend_settings, registry()) as s:
            emails = Emails(s.sessions, s.queue)
            request = await emails.send(TENANT, "ann@example.com", "welcome", {"name": "A"})
            job = await finished(s, request.job_id)
            (send,) = await emails.status(TENANT, request.idempotency_key)
    assert job.state is JobState.COMPLETED
    keys = [seen.headers["idempotency-key"] for seen in resend.seen]
    assert len(keys) == 2 and keys[0] == keys[1]
    assert json.loads(resend.seen[1].body)["to"] == ["ann@example.com"]
    assert (send.status.value, send.attempts) == ("sent", 2)


async def test_smtp_4xx_backs_off_and_a_crash_mid_job_skips_who_was_sent(
    settings: Settings,
) -> None:
    recorder = Recorder(data_replies=["451 4.3.0 try again later"])
    async with smtp_server(recorder=recorder) as server:
        smtp = smtp_settings(settings, server)
        crashing: list[EmailProvider] = []

        def provider_for(resources: Resources) -> EmailProvider:
            if not crashing:  # one provider for every attempt: it dies once, on bob
                inner = default_provider(resources)
                crashing.append(CrashingProvider(inner, "bob@example.org", after_send=False))
            return crashing[0]

        async with system(smtp, registry(provider_for)) as s:
            emails = Emails(s.sessions, s.queue)
            request = await emails.send(
                TENANT, ["ann@example.com", "bob@example.org"], "welcome", {"name": "A"}
            )
            job = await finished(s, request.job_id)
            sends = await emails.status(TENANT, request.idempotency_key)
    # attempt 1: ann 451 (retry); 2: ann sent, crash on bob; 3: ann skipped, bob sent.
    assert job.state is JobState.COMPLETED
    assert recorder.to() == ["ann@example.com", "bob@example.org"]
    assert {(x.recipient, x.status.value, x.attempts) for x in sends} == {
        ("ann@example.com", "sent", 2),
        ("bob@example.org", "sent", 2),
    }


async def test_a_refused_recipient_dead_letters_the_job_and_its_retry_sends_only_it(
    settings: Settings,
) -> None:
    recorder = Recorder(refuse_rcpt={"gone@example.com": "550 5.1.1 no such user"})
    async with (
        smtp_server(recorder=recorder) as server,
        system(smtp_settings(settings, server), registry()) as s,
    ):
        emails = Emails(s.sessions, s.queue)
        request = await emails.send(
            TENANT, ["gone@example.com", "ann@example.com"], "welcome", {"name": "A"}
        )
        job = await finished(s, request.job_id)

        async def dead() -> list[Any]:
            return await s.dead_letters(kind=KIND)

        (entry,) = await eventually(dead, lambda found: len(found) == 1)
        assert recorder.to() == ["ann@example.com"]

        recorder.refuse_rcpt.clear()  # the mailbox exists now: retry the dead letter
        _, retried = await retry_entry(s.queue, s.sessions, entry.id, actor="ops")
        again = await finished(s, retried.job.id)
        sends = await emails.status(TENANT, request.idempotency_key)
    assert job.state is JobState.FAILED and job.attempts_made == 1
    assert "gone@example.com: SMTP refused the message: 550" in (job.failure_reason or "")
    assert entry.error_type == "PermanentFailure"
    assert again.state is JobState.COMPLETED
    assert recorder.to() == ["ann@example.com", "gone@example.com"]  # ann not again
    assert {(x.recipient, x.status.value, x.attempts) for x in sends} == {
        ("ann@example.com", "sent", 1),
        ("gone@example.com", "sent", 2),
    }


async def test_bad_template_data_fails_permanently_without_sending(settings: Settings) -> None:
    async with smtp_server() as server, system(smtp_settings(settings, server), registry()) as s:
        data = {"report_name": "r", "download_url": "javascript:alert(1)"}
        request = await Emails(s.sessions, s.queue).send(
            TENANT, "ann@example.com", "export_ready", data
        )
        job = await finished(s, request.job_id)
    assert job.state is JobState.FAILED and job.attempts_made == 1
    assert "not an absolute http(s) URL" in (job.failure_reason or "")
    assert server.recorder.received == []


async def test_the_outbox_is_the_default_provider(settings: Settings) -> None:
    async with system(settings, registry()) as s:
        emails = Emails(s.sessions, s.queue)
        request = await emails.notify_endpoint_disabled(
            TENANT,
            "ops@example.com",
            notification_id="n1",
            endpoint_url="https://hooks.example.com/in",
            reason="50 consecutive failed attempts",
        )
        job = await finished(s, request.job_id)
        again = await emails.notify_endpoint_disabled(
            TENANT, "ops@example.com", notification_id="n1", endpoint_url="x", reason="y"
        )
    assert job.state is JobState.COMPLETED and not again.created
    (eml,) = settings.outbox_dir.glob("*.eml")
    text = eml.read_text()
    assert "Subject: Webhook endpoint disabled: https://hooks.example.com/in" in text
    assert "To: ops@example.com" in text
