"""One outgoing email: checked addresses and headers, and its MIME form (no I/O).

Every header value and address goes through `settler_jobs.addresses` (header injection
is refused there, not repaired).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, parseaddr

from settler_jobs.addresses import check_address, check_header, check_sender
from settler_jobs.emails.templates import Rendered


def ledger_digest(tenant_id: str, key: str, recipient: str) -> str:
    """A stable hex digest of (tenant, idempotency key, recipient): names one send."""
    framed = json.dumps([tenant_id, key, recipient], ensure_ascii=True)
    return hashlib.sha256(framed.encode()).hexdigest()[:40]


@dataclass(frozen=True, slots=True)
class OutgoingEmail:
    """One email to one recipient, every header already checked (see `compose`)."""

    sender: str
    to: str
    subject: str
    html: str
    text: str
    message_id: str
    """``<digest@sender-domain>``: the same on every retry of the same send."""
    idempotency_key: str
    """The ledger digest; providers that dedupe (Resend) receive it."""
    date: datetime
    reply_to: str | None = None

    def to_mime(self) -> EmailMessage:
        """The multipart/alternative message (text first, then HTML), CRLF line ends."""
        message = EmailMessage(policy=SMTP)
        message["From"] = self.sender
        message["To"] = self.to
        if self.reply_to:
            message["Reply-To"] = self.reply_to
        message["Subject"] = self.subject
        message["Date"] = format_datetime(self.date)
        message["Message-ID"] = self.message_id
        message.set_content(self.text)
        message.add_alternative(self.html, subtype="html")
        return message


def compose(
    rendered: Rendered,
    *,
    sender: str,
    to: str,
    digest: str,
    date: datetime,
    reply_to: str | None = None,
) -> OutgoingEmail:
    """Check every header value and address, then build the email; UnsafeEmail if any fails."""
    from_value = check_sender(sender)
    domain = parseaddr(from_value)[1].rsplit("@", 1)[1]
    return OutgoingEmail(
        sender=from_value,
        to=check_address(to, header="To"),
        subject=check_header("Subject", rendered.subject),
        html=rendered.html,
        text=rendered.text,
        message_id=f"<{digest}@{domain}>",
        idempotency_key=digest,
        date=date,
        reply_to=None if reply_to is None else check_address(reply_to, header="Reply-To"),
    )
