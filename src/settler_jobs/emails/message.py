"""One outgoing email: checked addresses and headers, and its MIME form (no I/O).

Header injection is refused, not repaired: a CR, LF or NUL in any header value or
address raises `UnsafeEmail` naming the header. Addresses are a sane RFC 5322 subset
checked by `email-validator` without DNS: a bare ``local@domain`` (ASCII local part,
internationalised domains sent in IDNA form, no special-use domains), at most
`MAX_ADDRESS_CHARS`. Only the From address may carry a display name.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, getaddresses, parseaddr
from typing import Final

import email_validator

from settler_jobs.emails.templates import Rendered

MAX_ADDRESS_CHARS: Final = 254
MAX_SUBJECT_CHARS: Final = 255
MAX_DISPLAY_NAME_CHARS: Final = 128
_FORBIDDEN: Final = {"\r": "CR", "\n": "LF", "\x00": "NUL"}


class UnsafeEmail(ValueError):
    """An address or header value that must not be sent."""


def check_header(name: str, value: str, *, limit: int = MAX_SUBJECT_CHARS) -> str:
    """Return `value` if it is one safe header line; UnsafeEmail naming what is wrong."""
    found = [label for char, label in _FORBIDDEN.items() if char in value]
    if found:
        raise UnsafeEmail(
            f"{name} contains {'/'.join(found)}: line breaks and NUL are refused in "
            "headers (header injection)"
        )
    if len(value) > limit:
        raise UnsafeEmail(f"{name} is {len(value)} characters, over the limit of {limit}")
    return value


def check_address(value: str, *, header: str = "address") -> str:
    """The normalised form of a bare address (``local@domain``); UnsafeEmail if unusable."""
    if not isinstance(value, str):
        raise UnsafeEmail(f"{header} must be a string")
    check_header(header, value, limit=MAX_ADDRESS_CHARS)
    try:
        checked = email_validator.validate_email(
            value, check_deliverability=False, allow_smtputf8=False, allow_display_name=False
        )
    except email_validator.EmailNotValidError as exc:
        raise UnsafeEmail(f"{header} {value!r} is not a usable email address: {exc}") from None
    return str(checked.ascii_email)


def check_sender(value: str) -> str:
    """A From value, ``addr`` or ``Name <addr>``, normalised; UnsafeEmail if unusable."""
    check_header("From", value, limit=MAX_ADDRESS_CHARS + MAX_DISPLAY_NAME_CHARS + 3)
    found = getaddresses([value])
    name, addr = found[0] if len(found) == 1 else ("", "")
    if not addr:
        raise UnsafeEmail(f"From {value!r} is not an address or 'Name <address>'")
    addr = check_address(addr, header="From")
    if not name:
        return addr
    check_header("From display name", name, limit=MAX_DISPLAY_NAME_CHARS)
    local, domain = addr.rsplit("@", 1)
    return str(Address(display_name=name, username=local, domain=domain))


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
