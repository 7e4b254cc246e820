"""Dashboard session cookies: signed, expiring, bound to the key and the operator token."""

from __future__ import annotations

import time

from settler_jobs.dashboard.session import SessionSigner

KEY = b"k" * 32


def test_a_fresh_cookie_checks_and_carries_a_csrf_token() -> None:
    signer = SessionSigner(KEY, "op-token", 60)
    cookie, session = signer.issue()
    assert signer.check(cookie) == session
    assert session.csrf and session.csrf != session.nonce


def test_tampered_expired_or_foreign_cookies_are_refused() -> None:
    signer = SessionSigner(KEY, "op-token", 60)
    cookie, _ = signer.issue()
    expires, nonce, mac = cookie.split(".")
    assert signer.check(f"{int(expires) + 3600}.{nonce}.{mac}") is None
    assert signer.check(f"{expires}.other.{mac}") is None
    assert signer.check("garbage") is None
    assert signer.check(None) is None
    assert SessionSigner(KEY, "new-token", 60).check(cookie) is None
    assert SessionSigner(b"x" * 32, "op-token", 60).check(cookie) is None
    old = SessionSigner(KEY, "op-token", 1)
    body = f"{int(time.time()) - 1}.{nonce}"
    stale = f"{body}.{old._mac(body)}"
    assert old.check(stale) is None
