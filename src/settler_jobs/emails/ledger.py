"""The sent-ledger: what happened to each (tenant, idempotency key, recipient).

A send is claimed (`sending`, committed) before the provider is called and marked
`sent` (committed) after it answered, so a retry after a crash skips what was sent.
The window that remains, stated plainly: if the process dies after the provider
accepted an email and before `sent` is committed, the row stays `sending` and the next
attempt sends it again. The repeat keeps its Message-ID; the outbox writes nothing
twice (the file name is the digest) and Resend drops it (Idempotency-Key), but an SMTP
server delivers it a second time. That is at-least-once, with a window of one
database commit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from settler_jobs.storage.email_tables import EmailSendRow

Sessions = async_sessionmaker[AsyncSession]
_MAX_ERROR_CHARS = 2000


class SendStatus(StrEnum):
    """Where one recipient's email is."""

    PENDING = "pending"
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """One recipient's send, as callers see it."""

    tenant_id: str
    idempotency_key: str
    recipient: str
    template: str
    status: SendStatus
    attempts: int
    job_id: str
    provider: str
    provider_message_id: str | None
    last_error: str | None
    created_at: datetime
    updated_at: datetime


def _entry(row: EmailSendRow) -> LedgerEntry:
    return LedgerEntry(
        tenant_id=row.tenant_id,
        idempotency_key=row.idempotency_key,
        recipient=row.recipient,
        template=row.template,
        status=SendStatus(row.status),
        attempts=row.attempts,
        job_id=row.job_id,
        provider=row.provider,
        provider_message_id=row.provider_message_id,
        last_error=row.last_error,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


@dataclass(frozen=True, slots=True)
class Claim:
    """The outcome of `claim`: `proceed` False means skip (already sent, or given up)."""

    entry: LedgerEntry
    proceed: bool


def _key(tenant_id: str, key: str, recipient: str) -> tuple[str, str, str]:
    return (tenant_id, key, recipient)


async def claim(
    sessions: Sessions,
    *,
    tenant_id: str,
    key: str,
    recipient: str,
    template: str,
    job_id: str,
    provider: str,
    now: datetime,
) -> Claim:
    """Mark the send `sending` (one more attempt) unless it must be skipped.

    Skipped: `sent`, or `failed` by this same job (a new job, such as a dead-letter
    retry, tries a failed recipient again). A row left `sending` is claimed again.
    """
    for _ in range(2):  # a concurrent first claim loses the insert race once, then updates
        try:
            return await _claim_once(
                sessions, tenant_id, key, recipient, template, job_id, provider, now
            )
        except IntegrityError:
            continue
    raise RuntimeError("email ledger claim kept conflicting")


async def _claim_once(
    sessions: Sessions,
    tenant_id: str,
    key: str,
    recipient: str,
    template: str,
    job_id: str,
    provider: str,
    now: datetime,
) -> Claim:
    async with sessions() as session, session.begin():
        row = await session.get(EmailSendRow, _key(tenant_id, key, recipient), with_for_update=True)
        if row is None:
            row = EmailSendRow(
                tenant_id=tenant_id,
                idempotency_key=key,
                recipient=recipient,
                template=template,
                status=SendStatus.SENDING.value,
                attempts=1,
                job_id=job_id,
                provider=provider,
                created_at=now,
                updated_at=now,
            )
            session.add(row)
            await session.flush()
            return Claim(_entry(row), True)
        done = row.status == SendStatus.SENT or (
            row.status == SendStatus.FAILED and row.job_id == job_id
        )
        if done:
            return Claim(_entry(row), False)
        row.status, row.attempts, row.job_id = SendStatus.SENDING.value, row.attempts + 1, job_id
        row.provider, row.updated_at = provider, now
        await session.flush()
        return Claim(_entry(row), True)


async def mark(
    sessions: Sessions,
    *,
    tenant_id: str,
    key: str,
    recipient: str,
    status: SendStatus,
    now: datetime,
    provider_message_id: str | None = None,
    error: str | None = None,
) -> None:
    """Record the outcome of a claimed send."""
    values: dict[str, object] = {"status": status.value, "updated_at": now}
    if provider_message_id is not None:
        values["provider_message_id"] = provider_message_id[:255]
    values["last_error"] = None if error is None else error[:_MAX_ERROR_CHARS]
    async with sessions() as session, session.begin():
        await session.execute(
            update(EmailSendRow)
            .where(
                EmailSendRow.tenant_id == tenant_id,
                EmailSendRow.idempotency_key == key,
                EmailSendRow.recipient == recipient,
            )
            .values(**values)
        )


async def list_sends(
    sessions: Sessions, *, tenant_id: str, key: str | None = None, limit: int = 100
) -> Sequence[LedgerEntry]:
    """The tenant's sends (of one idempotency key, when given), newest first."""
    query = select(EmailSendRow).where(EmailSendRow.tenant_id == tenant_id)
    if key is not None:
        query = query.where(EmailSendRow.idempotency_key == key)
    query = query.order_by(EmailSendRow.created_at.desc(), EmailSendRow.recipient).limit(
        max(1, min(limit, 1000))
    )
    async with sessions() as session:
        return [_entry(row) for row in (await session.scalars(query)).all()]
