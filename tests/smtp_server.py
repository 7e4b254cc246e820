"""A real SMTP server for tests and benchmarks: aiosmtpd on the running event loop.

Serves on 127.0.0.1 at a free port; plain, STARTTLS (required when a TLS context is
given) or implicit TLS; optional AUTH (PLAIN/LOGIN, only over TLS). It records every
message it accepted and can refuse recipients or answer the next DATA commands with
scripted replies (``"451 4.3.0 try later"``). `self_signed` makes a certificate for
127.0.0.1 with `cryptography`.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import ssl
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


@dataclass(frozen=True)
class Received:
    """One accepted message."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    content: bytes
    authenticated_as: str | None
    at: float
    """`time.monotonic()` on arrival."""

    @property
    def message(self) -> EmailMessage:
        parsed = message_from_bytes(self.content, policy=default)
        assert isinstance(parsed, EmailMessage)
        return parsed


@dataclass
class Recorder:
    """The aiosmtpd handler: records messages, refuses what it is told to."""

    refuse_rcpt: dict[str, str] = field(default_factory=dict)
    """Recipient -> reply to its RCPT TO, e.g. ``"550 5.1.1 no such user"``."""
    data_replies: list[str] = field(default_factory=list)
    """Replies to the next DATA commands, in order (then 250)."""
    received: list[Received] = field(default_factory=list)
    _arrived: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        if address in self.refuse_rcpt:
            return self.refuse_rcpt[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.data_replies:
            return self.data_replies.pop(0)
        content = envelope.original_content or b""
        user = str(session.auth_data) if session.authenticated else None
        async with self._arrived:
            self.received.append(
                Received(
                    str(envelope.mail_from),
                    tuple(envelope.rcpt_tos),
                    content,
                    user,
                    time.monotonic(),
                )
            )
            self._arrived.notify_all()
        return "250 OK"

    async def wait_for(self, count: int, timeout: float = 15.0) -> list[Received]:
        """Wait until at least `count` messages arrived; returns them all."""
        async with asyncio.timeout(timeout), self._arrived:
            await self._arrived.wait_for(lambda: len(self.received) >= count)
        return list(self.received)

    def to(self) -> list[str]:
        """The envelope recipient of every message, in arrival order."""
        return [r for message in self.received for r in message.rcpt_tos]


@dataclass
class SmtpServer:
    host: str
    port: int
    recorder: Recorder


def _authenticator(users: dict[str, str]) -> Any:
    def check(
        server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        if isinstance(auth_data, LoginPassword):
            login, password = auth_data.login.decode(), auth_data.password.decode()
            if users.get(login) == password:
                return AuthResult(success=True, auth_data=login)
        return AuthResult(success=False, handled=False)

    return check


@contextlib.asynccontextmanager
async def smtp_server(
    *,
    starttls: ssl.SSLContext | None = None,
    implicit_tls: ssl.SSLContext | None = None,
    users: dict[str, str] | None = None,
    recorder: Recorder | None = None,
) -> AsyncIterator[SmtpServer]:
    """Serve SMTP on 127.0.0.1 until the block ends."""
    handler = recorder or Recorder()
    options: dict[str, Any] = {"hostname": "settler-test", "ident": "settler test SMTP"}
    if starttls is not None:
        options |= {"tls_context": starttls, "require_starttls": True}
    if users is not None:
        options |= {
            "authenticator": _authenticator(users),
            "auth_required": True,
            "auth_require_tls": starttls is not None or implicit_tls is not None,
        }
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(handler, loop=loop, **options), "127.0.0.1", 0, ssl=implicit_tls
    )
    port = server.sockets[0].getsockname()[1]
    try:
        yield SmtpServer("127.0.0.1", port, handler)
    finally:
        server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(server.wait_closed(), 5)


def self_signed(folder: Path) -> tuple[ssl.SSLContext, Path]:
    """A server TLS context with a fresh certificate for 127.0.0.1, and the cert's PEM path."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "smtp-cert.pem", folder / "smtp-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_path, key_path)
    return context, cert_path
