"""Which provider sends: the outbox, SMTP or Resend, chosen by settings.

Each provider module imports only `sender` (the interface); this module imports them
lazily, so choosing one never loads the others.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from settler_jobs.errors import ConfigError

if TYPE_CHECKING:
    import httpx

    from settler_jobs.config import Settings
    from settler_jobs.emails.sender import EmailProvider


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
