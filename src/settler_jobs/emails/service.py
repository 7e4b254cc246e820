"""The Python API of email: queue a template for one or many recipients, read their status.

A request is checked whole before anything is enqueued (known template, its data, every
address; CR/LF/NUL refused) and becomes ONE `email-sending` job whose priority comes
from the tenant's tier. Every recipient gets its own email and its own row in the
sent-ledger, keyed by (tenant, idempotency key, recipient), so retries never send to a
recipient twice (see `email_ledger` for the one-commit window that remains).

    emails = services.emails
    request = await emails.send("acme", ["ann@example.com"], "welcome", {"name": "Ann"},
                                tier=Tier.GROWTH, idempotency_key="welcome-ann")
    statuses = await emails.status("acme", request.idempotency_key)
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from settler_jobs.domain import Tier, validate_tenant_id
from settler_jobs.emails import ledger as email_ledger
from settler_jobs.emails.job import EmailPayload
from settler_jobs.emails.ledger import LedgerEntry
from settler_jobs.errors import InvalidJob
from settler_jobs.ports import Submitter
from settler_jobs.records import Submission

KIND: Final = "email-sending"


@dataclass(frozen=True)
class EmailRequest:
    """The job an email request became; `created` is False for an idempotent repeat."""

    job_id: str
    idempotency_key: str
    recipients: tuple[str, ...]
    created: bool


def build_payload(
    to: str | Sequence[str],
    template: str,
    data: Mapping[str, Any] | None,
    *,
    idempotency_key: str,
    reply_to: str | None = None,
) -> dict[str, Any]:
    """The job data of a request, checked; InvalidJob naming the first problem."""
    raw: dict[str, Any] = {
        "to": [to] if isinstance(to, str) else list(to),
        "template": template,
        "data": dict(data or {}),
        "idempotencyKey": idempotency_key,
    }
    if reply_to is not None:
        raw["replyTo"] = reply_to
    try:
        payload = EmailPayload.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'email'}: {e['msg']}" for e in exc.errors()
        )
        raise InvalidJob(f"invalid email: {problems}") from None
    return payload.model_dump(exclude_none=True)


async def send_email(
    submitter: Submitter,
    tenant_id: str,
    to: str | Sequence[str],
    template: str,
    data: Mapping[str, Any] | None = None,
    *,
    tier: Tier = Tier.STARTER,
    idempotency_key: str | None = None,
    reply_to: str | None = None,
    delay_s: float = 0.0,
) -> EmailRequest:
    """Queue `template` rendered with `data` for every address in `to` (one job).

    With `idempotency_key`, repeating the call returns the same job and, whatever
    happens to jobs, no recipient of that key is sent the email twice. Without one, a
    random key is made, so retries of the job (dead-letter retries included) still skip
    recipients already sent. Raises InvalidJob for bad input, QueueUnavailable when
    Redis is down.
    """
    try:
        validate_tenant_id(tenant_id)
    except ValueError as exc:
        raise InvalidJob(str(exc)) from None
    key = idempotency_key if idempotency_key is not None else f"auto-{uuid.uuid4().hex}"
    payload = build_payload(to, template, data, idempotency_key=key, reply_to=reply_to)
    submission = Submission(
        kind=KIND,
        data=payload,
        tenant_id=tenant_id,
        tier=tier,
        idempotency_key=idempotency_key,
        delay_s=delay_s,
    )
    (submitted,) = await submitter.submit_bulk([submission])
    return EmailRequest(submitted.job.id, key, tuple(payload["to"]), submitted.created)


class Emails:
    """Tenant-scoped email operations over the job queue and the sent-ledger."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], submitter: Submitter) -> None:
        self._sessions = sessions
        self._submitter = submitter

    async def send(
        self,
        tenant_id: str,
        to: str | Sequence[str],
        template: str,
        data: Mapping[str, Any] | None = None,
        *,
        tier: Tier = Tier.STARTER,
        idempotency_key: str | None = None,
        reply_to: str | None = None,
    ) -> EmailRequest:
        """Queue one email job (see `send_email`)."""
        return await send_email(
            self._submitter,
            tenant_id,
            to,
            template,
            data,
            tier=tier,
            idempotency_key=idempotency_key,
            reply_to=reply_to,
        )

    async def status(
        self, tenant_id: str, idempotency_key: str | None = None, *, limit: int = 100
    ) -> Sequence[LedgerEntry]:
        """Per-recipient sends of the tenant (of one request, given its key), newest first.

        A recipient not yet tried has no entry; another tenant's key answers nothing.
        """
        return await email_ledger.list_sends(
            self._sessions, tenant_id=tenant_id, key=idempotency_key, limit=limit
        )

    async def notify_endpoint_disabled(
        self,
        tenant_id: str,
        contact: str,
        *,
        notification_id: str,
        endpoint_url: str,
        reason: str,
        disabled_at: datetime | None = None,
        tier: Tier = Tier.STARTER,
    ) -> EmailRequest:
        """Email the tenant's `contact` that a webhook endpoint was auto-disabled.

        Meant for the `Notification` the webhook handler gets back when it disables an
        endpoint (`result.notification`); keyed by the notification id, so calling it
        again for the same notification sends nothing more. Pass the endpoint's display
        URL (no credentials or query), as the notification subject shows it.
        """
        data: dict[str, Any] = {"endpoint_url": endpoint_url, "reason": reason}
        if disabled_at is not None:
            data["disabled_at"] = disabled_at.isoformat(timespec="seconds")
        return await self.send(
            tenant_id,
            contact,
            "webhook_endpoint_disabled",
            data,
            tier=tier,
            idempotency_key=f"notification:{notification_id}",
        )
