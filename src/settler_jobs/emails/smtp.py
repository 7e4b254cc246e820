"""The SMTP provider (aiosmtplib): STARTTLS or implicit TLS, optional AUTH.

A session connects on its first email and reuses the connection for the job's other
recipients; after a connection-level failure the next email reconnects. Replies are
classified by their code: 5xx permanent, 4xx passing; refusals of the recipient or of
the message's content only concern that email (scope ``recipient``), except 421 (the
server is closing the channel).
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from email.utils import parseaddr
from pathlib import Path

import aiosmtplib

from settler_jobs.config import Settings
from settler_jobs.emails.message import OutgoingEmail
from settler_jobs.emails.sender import EmailSender, ProviderError
from settler_jobs.errors import ConfigError


@dataclass(frozen=True)
class SmtpConfig:
    """Where and how to reach the SMTP server."""

    host: str
    port: int
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    starttls: bool = True
    """Require STARTTLS (ignored with `implicit_tls`)."""
    implicit_tls: bool = False
    ca_file: Path | None = None
    timeout_s: float = 30.0

    def __post_init__(self) -> None:
        if self.starttls and self.implicit_tls:
            raise ConfigError("SMTP: choose STARTTLS or implicit TLS, not both")
        if (self.username is None) != (self.password is None):
            raise ConfigError("SMTP: set both the username and the password, or neither")


class SmtpProvider:
    """Sends through one SMTP server."""

    name = "smtp"

    def __init__(self, config: SmtpConfig) -> None:
        self.config = config
        self._tls: ssl.SSLContext | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> SmtpProvider:
        """The provider for SETTLER_SMTP_* settings."""
        password = settings.smtp_password.get_secret_value() if settings.smtp_password else None
        return cls(
            SmtpConfig(
                host=settings.smtp_host,
                port=settings.smtp_port,
                username=settings.smtp_username,
                password=password,
                starttls=settings.smtp_starttls and not settings.smtp_tls,
                implicit_tls=settings.smtp_tls,
                ca_file=settings.smtp_ca_file,
                timeout_s=settings.smtp_timeout_s,
            )
        )

    def tls_context(self) -> ssl.SSLContext:
        """Verifying TLS context (system CAs, or only `ca_file` when set); made once."""
        if self._tls is None:
            cafile = str(self.config.ca_file) if self.config.ca_file else None
            self._tls = ssl.create_default_context(cafile=cafile)
        return self._tls

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[EmailSender]:
        session = _SmtpSession(self)
        try:
            yield session
        finally:
            await session.close()


class _SmtpSession:
    def __init__(self, provider: SmtpProvider) -> None:
        self._provider = provider
        self._client: aiosmtplib.SMTP | None = None

    async def _connect(self) -> aiosmtplib.SMTP:
        c = self._provider.config
        uses_tls = c.implicit_tls or c.starttls
        client = aiosmtplib.SMTP(
            hostname=c.host,
            port=c.port,
            username=c.username,
            password=c.password,
            use_tls=c.implicit_tls,
            start_tls=c.starttls if not c.implicit_tls else False,
            tls_context=self._provider.tls_context() if uses_tls else None,
            timeout=c.timeout_s,
        )
        await client.connect()
        return client

    async def send(self, email: OutgoingEmail) -> str:
        try:
            if self._client is None:
                self._client = await self._connect()
            await self._client.send_message(
                email.to_mime(), sender=parseaddr(email.sender)[1], recipients=[email.to]
            )
        except (aiosmtplib.SMTPException, OSError) as exc:
            error = classify(exc)
            if error.scope == "provider":
                await self.close()
            raise error from exc
        return email.message_id

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        with contextlib.suppress(aiosmtplib.SMTPException, OSError):
            if client.is_connected:
                await client.quit()
        client.close()


def classify(exc: BaseException) -> ProviderError:
    """A ProviderError for an aiosmtplib failure (see the module docstring)."""
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused) and exc.recipients:
        exc = exc.recipients[0]
    if isinstance(exc, aiosmtplib.SMTPRecipientRefused | aiosmtplib.SMTPDataError):
        return ProviderError(
            f"SMTP refused the message: {exc.code} {exc.message}",
            permanent=exc.code >= 500,
            # 421: the server is closing the connection, whatever the recipient.
            scope="provider" if exc.code == 421 else "recipient",
            code=exc.code,
        )
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return ProviderError(
            f"SMTP server answered {exc.code} {exc.message}",
            permanent=exc.code >= 500,
            code=exc.code,
        )
    if isinstance(exc, aiosmtplib.SMTPNotSupported):
        return ProviderError(f"SMTP server cannot do what is configured: {exc}", permanent=True)
    return ProviderError(f"SMTP connection failed: {type(exc).__name__}: {exc}", permanent=False)
