"""Operator sessions of the dashboard: signed cookies, CSRF tokens, revocation on logout.

A cookie reads ``<expiry s>.<nonce>.<HMAC-SHA256>``; the key is derived from the
application key and the operator token, so changing either ends every session. The CSRF
token of a session is an HMAC of its nonce. Logout records the nonce in the shared state
until the cookie would have expired.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from typing import Final

from settler_jobs.shared_state import SharedState

COOKIE: Final = "settler_dash"


@dataclass(frozen=True, slots=True)
class Session:
    """A valid operator session."""

    nonce: str
    expires_at: int
    csrf: str


class SessionSigner:
    """Issues and checks session cookies with one key."""

    def __init__(self, key: bytes, operator_token: str, lifetime_s: int) -> None:
        token_digest = hashlib.sha256(operator_token.encode()).digest()
        self._key = hmac.new(key, b"dashboard-session:" + token_digest, hashlib.sha256).digest()
        self.lifetime_s = lifetime_s

    def _mac(self, text: str) -> str:
        digest = hmac.new(self._key, text.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")

    def issue(self) -> tuple[str, Session]:
        """A fresh cookie value and its session."""
        nonce = secrets.token_urlsafe(18)
        expires = int(time.time()) + self.lifetime_s
        body = f"{expires}.{nonce}"
        return f"{body}.{self._mac(body)}", self._session(nonce, expires)

    def check(self, cookie: str | None) -> Session | None:
        """The session of a well-signed, unexpired cookie; None otherwise."""
        if not cookie or len(cookie) > 200:
            return None
        parts = cookie.split(".")
        if len(parts) != 3 or not parts[0].isdigit():
            return None
        expires, nonce, mac = int(parts[0]), parts[1], parts[2]
        if not hmac.compare_digest(mac, self._mac(f"{parts[0]}.{nonce}")):
            return None
        if expires <= time.time():
            return None
        return self._session(nonce, expires)

    def _session(self, nonce: str, expires: int) -> Session:
        return Session(nonce, expires, self._mac(f"csrf:{nonce}"))


def _revoked_key(prefix: str, nonce: str) -> str:
    return f"{prefix}:settler:dashboard:revoked:{nonce}"


async def revoke(state: SharedState, prefix: str, session: Session) -> None:
    """End a session before its expiry."""
    ttl = max(1, session.expires_at - int(time.time()))
    await state.put(_revoked_key(prefix, session.nonce), "1", ttl * 1000)


async def is_revoked(state: SharedState, prefix: str, session: Session) -> bool:
    """Whether the session was logged out."""
    return await state.get(_revoked_key(prefix, session.nonce)) is not None


def token_matches(given: str | None, expected: str) -> bool:
    """Constant-time comparison of a presented token."""
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())
