"""The Resend provider: ``POST {base_url}/emails`` with a bearer key, through the guarded client.

Each email carries ``Idempotency-Key`` (its ledger digest), so Resend itself drops a
repeat of a send whose answer was lost. Answers: 2xx sent (the body's ``id``); 429 and
5xx pass (``Retry-After`` honoured); 401/403/404/405 are provider-wide and permanent
(key or URL wrong); other 4xx refuse only this email. The API key is only ever in the
Authorization header: never in errors or logs.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any, Final

import httpx

from settler_jobs.domain import parse_retry_after
from settler_jobs.emails.message import OutgoingEmail
from settler_jobs.emails.sender import EmailSender, ProviderError, Scope
from settler_jobs.errors import SettlerError

_PROVIDER_WIDE: Final = frozenset({401, 403, 404, 405})
_EXCERPT_CHARS: Final = 300
_MAX_RETRY_AFTER_S: Final = 3600.0


class ResendProvider:
    """Sends through the Resend HTTP API."""

    name = "resend"

    def __init__(
        self,
        client: httpx.AsyncClient,
        api_key: str,
        *,
        base_url: str = "https://api.resend.com",
        deadline_s: float = 20.0,
    ) -> None:
        self._client = client
        self._api_key = api_key
        self._url = base_url.rstrip("/") + "/emails"
        self._deadline_s = deadline_s

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[EmailSender]:
        yield self

    async def send(self, email: OutgoingEmail) -> str:
        headers = {
            "Authorization": f"Bearer {self._api_key}",
            "Idempotency-Key": email.idempotency_key,
            "Content-Type": "application/json",
        }
        try:
            async with asyncio.timeout(self._deadline_s):
                response = await self._client.post(
                    self._url, json=_body(email), headers=headers, timeout=self._deadline_s
                )
        except SettlerError as exc:  # the SSRF guard refused the configured URL
            raise ProviderError(f"Resend URL refused: {exc}", permanent=True) from exc
        except (TimeoutError, httpx.TimeoutException) as exc:
            raise ProviderError("Resend did not answer in time", permanent=False) from exc
        except httpx.HTTPError as exc:
            raise ProviderError(
                f"Resend unreachable: {type(exc).__name__}", permanent=False
            ) from exc
        return _outcome(response)


def _body(email: OutgoingEmail) -> dict[str, Any]:
    body: dict[str, Any] = {
        "from": email.sender,
        "to": [email.to],
        "subject": email.subject,
        "html": email.html,
        "text": email.text,
        "headers": {"Message-ID": email.message_id},
    }
    if email.reply_to:
        body["reply_to"] = email.reply_to
    return body


def _outcome(response: httpx.Response) -> str:
    status = response.status_code
    if 200 <= status < 300:
        try:
            message_id = response.json().get("id")
        except (ValueError, AttributeError):
            message_id = None
        return str(message_id or "")
    excerpt = response.text[:_EXCERPT_CHARS]
    if status == 429 or status >= 500:
        retry_after = parse_retry_after(
            response.headers.get("retry-after"), now=datetime.now(UTC), cap_s=_MAX_RETRY_AFTER_S
        )
        raise ProviderError(
            f"Resend answered {status}: {excerpt}",
            permanent=False,
            retry_after_s=retry_after,
            code=status,
        )
    scope: Scope = "provider" if status in _PROVIDER_WIDE or status < 400 else "recipient"
    raise ProviderError(
        f"Resend answered {status}: {excerpt}", permanent=True, scope=scope, code=status
    )
