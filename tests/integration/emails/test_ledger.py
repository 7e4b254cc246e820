"""The sent-ledger and one email job's attempts against real databases (SQLite and
PostgreSQL) and a real SMTP server: per-recipient statuses, and what a crash repeats.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, inspect
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from settler_jobs.emails import ledger
from settler_jobs.emails.ledger import SendStatus
from settler_jobs.emails.message import OutgoingEmail
from settler_jobs.emails.outbox import OutboxProvider
from settler_jobs.emails.send import EmailJob, send_job
from settler_jobs.emails.sender import EmailProvider, EmailSender
from settler_jobs.emails.smtp import SmtpConfig, SmtpProvider
from settler_jobs.storage.db import create_engine
from settler_jobs.storage.tables import Base
from tests.smtp_server import Recorder, smtp_server

Sessions = async_sessionmaker[AsyncSession]
T0 = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
TENANT = "acme"


def now() -> datetime:
    return datetime.now(UTC)


def job(to: tuple[str, ...], *, job_id: str = "j1", is_last: bool = False, **kw: Any) -> EmailJob:
    fields: dict[str, Any] = {
        "tenant_id": TENANT,
        "key": "req-1",
        "template": "welcome",
        "data": {"name": "Ann"},
        "to": to,
        "job_id": job_id,
        "is_last": is_last,
        "sender": "Settler <no-reply@example.com>",
    }
    return EmailJob(**(fields | kw))


def smtp(port: int) -> SmtpProvider:
    return SmtpProvider(SmtpConfig("127.0.0.1", port, starttls=False, timeout_s=10))


class SimulatedCrash(Exception):
    """Stands for the process dying at a chosen point."""


class CrashingProvider:
    """A real provider that 'dies' once: before or after handing `victim`'s email over."""

    def __init__(self, inner: EmailProvider, victim: str, *, after_send: bool) -> None:
        self.inner, self.victim, self.after_send = inner, victim, after_send
        self.name = inner.name
        self.crashed = False

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[EmailSender]:
        async with self.inner.session() as session:
            yield _Crashing(self, session)


class _Crashing:
    def __init__(self, owner: CrashingProvider, inner: EmailSender) -> None:
        self.owner, self.inner = owner, inner

    async def send(self, email: OutgoingEmail) -> str:
        due = email.to == self.owner.victim and not self.owner.crashed
        if due and not self.owner.after_send:
            self.owner.crashed = True
            raise SimulatedCrash("died before sending")
        result = await self.inner.send(email)
        if due:
            self.owner.crashed = True
            raise SimulatedCrash("died after sending, before the ledger update")
        return result


async def statuses(sessions: Sessions, tenant: str = TENANT) -> dict[str, tuple[str, int]]:
    entries = await ledger.list_sends(sessions, tenant_id=tenant, key="req-1")
    return {e.recipient: (e.status.value, e.attempts) for e in entries}


def _schema(connection: Connection) -> tuple[set[str], list[Any]]:
    diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    return set(inspect(connection).get_table_names()), list(diff)


async def test_migration_creates_the_ledger_exactly_as_declared(db_url: str) -> None:
    engine = create_engine(db_url)
    try:
        async with engine.connect() as connection:
            tables, diff = await connection.run_sync(_schema)
    finally:
        await engine.dispose()
    assert "email_sends" in tables
    assert diff == []


async def test_claim_rules(db_session_factory: Sessions) -> None:
    ids = {"tenant_id": TENANT, "key": "k", "recipient": "ann@example.com"}
    claim: dict[str, Any] = {**ids, "template": "welcome", "provider": "smtp", "now": T0}
    first = await ledger.claim(db_session_factory, **claim, job_id="j1")
    assert first.proceed and first.entry.status is SendStatus.SENDING and first.entry.attempts == 1
    again = await ledger.claim(db_session_factory, **claim, job_id="j1")  # left sending: crash
    assert again.proceed and again.entry.attempts == 2

    await ledger.mark(db_session_factory, **ids, status=SendStatus.FAILED, now=T0, error="550")
    assert not (await ledger.claim(db_session_factory, **claim, job_id="j1")).proceed
    retried = await ledger.claim(db_session_factory, **claim, job_id="j2")  # a new job retries
    assert retried.proceed and retried.entry.job_id == "j2"

    await ledger.mark(
        db_session_factory, **ids, status=SendStatus.SENT, now=T0, provider_message_id="m1"
    )
    for job_id in ("j2", "j3"):
        skipped = await ledger.claim(db_session_factory, **claim, job_id=job_id)
        assert not skipped.proceed and skipped.entry.status is SendStatus.SENT
    (entry,) = await ledger.list_sends(db_session_factory, tenant_id=TENANT, key="k")
    assert (entry.provider_message_id, entry.last_error, entry.attempts) == ("m1", None, 3)
    assert await ledger.list_sends(db_session_factory, tenant_id="other", key="k") == []


async def test_one_job_reports_a_status_per_recipient(db_session_factory: Sessions) -> None:
    recorder = Recorder(refuse_rcpt={"gone@example.com": "550 5.1.1 no such user"})
    async with smtp_server(recorder=recorder) as server:
        to = ("ann@example.com", "gone@example.com", "bob@example.org")
        report = await send_job(
            job(to), provider=smtp(server.port), sessions=db_session_factory, now=now
        )
        assert recorder.to() == ["ann@example.com", "bob@example.org"]
    assert report.statuses == {
        "ann@example.com": "sent",
        "gone@example.com": "failed",
        "bob@example.org": "sent",
    }
    assert "550" in report.errors["gone@example.com"] and not report.retry
    assert await statuses(db_session_factory) == {
        "ann@example.com": ("sent", 1),
        "gone@example.com": ("failed", 1),
        "bob@example.org": ("sent", 1),
    }


async def test_a_retry_after_a_crash_does_not_send_twice(db_session_factory: Sessions) -> None:
    async with smtp_server() as server:
        provider = CrashingProvider(smtp(server.port), "bob@example.org", after_send=False)
        to = ("ann@example.com", "bob@example.org")
        with pytest.raises(SimulatedCrash):
            await send_job(job(to), provider=provider, sessions=db_session_factory, now=now)
        assert await statuses(db_session_factory) == {
            "ann@example.com": ("sent", 1),
            "bob@example.org": ("sending", 1),
        }
        report = await send_job(job(to), provider=provider, sessions=db_session_factory, now=now)
        await server.recorder.wait_for(2)
    assert report.statuses == {"ann@example.com": "sent", "bob@example.org": "sent"}
    assert server.recorder.to() == ["ann@example.com", "bob@example.org"]  # ann once


async def test_the_one_commit_window_smtp_repeats_with_the_same_message_id(
    db_session_factory: Sessions,
) -> None:
    # The documented window: the provider accepted the email, the 'sent' commit never ran.
    async with smtp_server() as server:
        provider = CrashingProvider(smtp(server.port), "ann@example.com", after_send=True)
        with pytest.raises(SimulatedCrash):
            await send_job(
                job(("ann@example.com",)), provider=provider, sessions=db_session_factory, now=now
            )
        await send_job(
            job(("ann@example.com",)), provider=provider, sessions=db_session_factory, now=now
        )
        first, second = await server.recorder.wait_for(2)
    assert first.message["Message-ID"] == second.message["Message-ID"]
    assert await statuses(db_session_factory) == {"ann@example.com": ("sent", 2)}


async def test_the_outbox_closes_that_window(db_session_factory: Sessions, tmp_path: Path) -> None:
    outbox = tmp_path / "outbox"
    provider = CrashingProvider(OutboxProvider(outbox), "ann@example.com", after_send=True)
    with pytest.raises(SimulatedCrash):
        await send_job(
            job(("ann@example.com",)), provider=provider, sessions=db_session_factory, now=now
        )
    await send_job(
        job(("ann@example.com",)), provider=provider, sessions=db_session_factory, now=now
    )
    assert len(list(outbox.glob("*.eml"))) == 1
    assert await statuses(db_session_factory) == {"ann@example.com": ("sent", 2)}


async def test_a_passing_failure_stops_the_round_and_the_last_attempt_gives_up(
    db_session_factory: Sessions,
) -> None:
    recorder = Recorder(data_replies=["421 4.3.2 shutting down", "421 4.3.2 shutting down"])
    to = ("ann@example.com", "bob@example.org")
    async with smtp_server(recorder=recorder) as server:
        first = await send_job(
            job(to), provider=smtp(server.port), sessions=db_session_factory, now=now
        )
        assert first.retry and first.statuses == {
            "ann@example.com": "pending",
            "bob@example.org": "pending",
        }
        last = await send_job(
            job(to, is_last=True),
            provider=smtp(server.port),
            sessions=db_session_factory,
            now=now,
        )
    assert not last.retry and last.failed == ["ann@example.com"]
    assert await statuses(db_session_factory) == {"ann@example.com": ("failed", 2)}
    assert recorder.received == []
