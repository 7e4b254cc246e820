"""What an email provider is: the session interface and its classified failure.

A provider opens a session (one SMTP connection, reused for every recipient of a job)
and sends one `OutgoingEmail` at a time, returning the provider's message id. Failures
are `ProviderError`s classified once, here and in each provider:

* `permanent`: retrying cannot help (SMTP 5xx, HTTP 4xx except 429, a refused URL);
  otherwise the failure passes (SMTP 4xx, HTTP 5xx/429, timeouts, connection errors),
  with `retry_after_s` when the provider said how long to wait;
* `scope`: ``recipient`` when only this message failed (a refused mailbox), ``provider``
  when every further message would fail the same way (down, bad credentials).

Providers import this module, never `providers` (which picks one of them).
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Literal, Protocol

from settler_jobs.errors import SettlerError

if TYPE_CHECKING:
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
