"""Where emails go: one small interface over the outbox, SMTP and Resend.

A provider opens a session (one SMTP connection, reused for every recipient of a job)
and sends one `OutgoingEmail` at a time, returning the provider's message id. Failures
are `ProviderError`s classified once, here and in each provider:

* `permanent`: retrying cannot help (SMTP 5xx, HTTP 4xx except 429, a refused URL);
  otherwise the failure passes (SMTP 4xx, HTTP 5xx/429, timeouts, connection errors),
  with `retry_after_s` when the provider said how long to wait;
* `scope`: ``recipient`` when only this message failed (a refused mailbox), ``provider``
  when every further message would fail the same way (down, bad credentials).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Literal, Protocol

from settler_jobs.errors import ConfigError, SettlerError

if TYPE_CHECKING:
    import httpx

    from settler_jobs.config import Settings
    from settler_jobs.emails.message import OutgoingEmail

Scope = Literal["recipient", "provider"]


class ProviderError(SettlerError):
    """The email provider did not accept the message."""

    def __init__(
        self,
        message: str,
        *,
        permanent: bool,
        scope: Scope = "provider",
        retry_after_s: float | None = None,
        code: int | None = None,
    ) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.scope: Scope = scope
        self.retry_after_s = retry_after_s
        self.code = code


class EmailSender(Protocol):
    """An open session with a provider."""

    async def send(self, email: OutgoingEmail) -> str:
        """Hand one email over; its provider message id. Raises ProviderError."""
        ...


class EmailProvider(Protocol):
    """A configured provider; `session()` opens an `EmailSender` for one job."""

    name: str

    def session(self) -> AbstractAsyncContextManager[EmailSender]: ...


def provider_from_settings(
    settings: Settings, http_client: Callable[[], httpx.AsyncClient]
) -> EmailProvider:
    """The provider SETTLER_EMAIL_PROVIDER names; ConfigError if its settings are incomplete.

    `http_client` gives the SSRF-guarded client (only the Resend provider asks for it).
    """
    if settings.email_provider == "smtp":
        from settler_jobs.emails.smtp import SmtpProvider

        return SmtpProvider.from_settings(settings)
    if settings.email_provider == "resend":
        from settler_jobs.emails.resend import ResendProvider

        if settings.resend_api_key is None:
            raise ConfigError("SETTLER_EMAIL_PROVIDER=resend needs SETTLER_RESEND_API_KEY")
        return ResendProvider(
            http_client(),
            settings.resend_api_key.get_secret_value(),
            base_url=settings.resend_base_url,
            deadline_s=settings.email_timeout_s,
        )
    from settler_jobs.emails.outbox import OutboxProvider

    return OutboxProvider(settings.outbox_dir)
