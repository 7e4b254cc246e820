"""Send one email job: render once, then per recipient claim -> send -> record.

Everything is rendered and every header checked before the first email leaves, so bad
input sends nothing. Each recipient gets its own email (recipients never see each
other) and its own ledger row; see `email_ledger` for what a crash can repeat. A
passing failure of the provider stops the round (the next recipients would fail the
same way) and the job retries; recipients already sent are skipped then.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from settler_jobs.emails import ledger
from settler_jobs.emails.ledger import SendStatus, Sessions
from settler_jobs.emails.message import OutgoingEmail, compose, ledger_digest
from settler_jobs.emails.sender import EmailProvider, EmailSender, ProviderError
from settler_jobs.emails.templates import render

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EmailJob:
    """What one job asks for, and which attempt of which job this is."""

    tenant_id: str
    key: str
    """The ledger's idempotency key: the caller's, else one made at submit time."""
    template: str
    data: Mapping[str, Any]
    to: tuple[str, ...]
    job_id: str
    is_last: bool
    sender: str
    reply_to: str | None = None


@dataclass
class JobReport:
    """Per-recipient statuses after one attempt, and why the job is not done if it is not."""

    statuses: dict[str, str] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    retry: bool = False
    retry_after_s: float | None = None
    fatal: ProviderError | None = None
    """A provider-wide permanent failure: nothing further can be sent."""

    @property
    def failed(self) -> list[str]:
        return [r for r, s in self.statuses.items() if s == SendStatus.FAILED]


async def send_job(
    job: EmailJob,
    *,
    provider: EmailProvider,
    sessions: Sessions,
    now: Callable[[], datetime],
) -> JobReport:
    """One attempt of `job`. Raises TemplateError / UnsafeEmail (ValueError) for bad input."""
    rendered = render(job.template, job.data)
    emails = [
        compose(
            rendered,
            sender=job.sender,
            to=to,
            digest=ledger_digest(job.tenant_id, job.key, to),
            date=now(),
            reply_to=job.reply_to,
        )
        for to in job.to
    ]
    report = JobReport({email.to: SendStatus.PENDING.value for email in emails})
    async with provider.session() as sender:
        for email in emails:
            if not await _send_one(job, email, sender, provider.name, sessions, now, report):
                break
    return report


async def _send_one(
    job: EmailJob,
    email: OutgoingEmail,
    sender: EmailSender,
    provider: str,
    sessions: Sessions,
    now: Callable[[], datetime],
    report: JobReport,
) -> bool:
    """Send to one recipient and record it; False when the round must stop."""
    ids = {"tenant_id": job.tenant_id, "key": job.key, "recipient": email.to}
    claimed = await ledger.claim(
        sessions, **ids, template=job.template, job_id=job.job_id, provider=provider, now=now()
    )
    if not claimed.proceed:
        report.statuses[email.to] = claimed.entry.status.value
        return True
    try:
        message_id = await sender.send(email)
    except ProviderError as exc:
        return await _failed(job, email.to, exc, sessions, now, report)
    await ledger.mark(
        sessions, **ids, status=SendStatus.SENT, now=now(), provider_message_id=message_id
    )
    report.statuses[email.to] = SendStatus.SENT.value
    return True


async def _failed(
    job: EmailJob,
    recipient: str,
    exc: ProviderError,
    sessions: Sessions,
    now: Callable[[], datetime],
    report: JobReport,
) -> bool:
    give_up = exc.permanent or job.is_last
    status = SendStatus.FAILED if give_up else SendStatus.PENDING
    await ledger.mark(
        sessions,
        tenant_id=job.tenant_id,
        key=job.key,
        recipient=recipient,
        status=status,
        now=now(),
        error=str(exc),
    )
    report.statuses[recipient] = status.value
    report.errors[recipient] = str(exc)
    log.warning(
        "email to a recipient of job %s %s: %s",
        job.job_id,
        "failed" if give_up else "will retry",
        exc,
    )
    if not give_up:
        report.retry = True
        if exc.retry_after_s is not None:
            report.retry_after_s = max(report.retry_after_s or 0.0, exc.retry_after_s)
    if exc.scope == "provider":
        if exc.permanent:
            report.fatal = exc
        return False
    return True
