"""Login and logout.

The login form is CSRF-protected too (double submit: a random pre-login cookie and the
same value in a hidden field), and failed attempts are limited per client address.
"""

from __future__ import annotations

import secrets
from typing import Annotated, Final

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response

from settler_jobs.dashboard.session import COOKIE, Session, revoke, token_matches
from settler_jobs.dashboard.web import (
    PREFIX,
    checked_form,
    context,
    current_session,
    render,
    require_session,
    signer,
    state_redis,
)

router = APIRouter()
PRE_COOKIE: Final = "settler_dash_login"
MAX_FAILURES: Final = 10
FAILURE_WINDOW_S: Final = 300


def _set_cookie(response: Response, request: Request, name: str, value: str, age: int) -> None:
    response.set_cookie(
        name,
        value,
        max_age=age,
        path=PREFIX,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


@router.get("/login")
async def login_page(request: Request) -> Response:
    """The login form (or a notice that operator access is off)."""
    if await current_session(request) is not None:
        return RedirectResponse(f"{PREFIX}/", status_code=303)
    return _form(request, 200, "")


def _form(request: Request, status: int, error: str) -> Response:
    off = signer(request) is None
    nonce = secrets.token_urlsafe(18)
    response = render(request, "login.html", None, status, disabled=off, error=error, csrf=nonce)
    _set_cookie(response, request, PRE_COOKIE, nonce, 600)
    return response


def _failures_key(request: Request) -> str:
    client = request.client.host if request.client else "unknown"
    return f"{context(request).settings.queue_prefix}:settler:dashboard:login-fail:{client}"


@router.post("/login")
async def login(request: Request) -> Response:
    """Exchange the operator token for a session cookie."""
    sign = signer(request)
    if sign is None:
        return _form(request, 403, "")
    form = await request.form()
    field = form.get("csrf")
    pre = request.cookies.get(PRE_COOKIE)
    if pre is None or not token_matches(field if isinstance(field, str) else None, pre):
        return _form(request, 403, "The form expired; try again.")
    redis = state_redis(context(request))
    key = _failures_key(request)
    if int(await redis.get(key) or 0) >= MAX_FAILURES:
        return _form(request, 429, "Too many failed attempts; wait a few minutes.")
    given = form.get("token")
    expected = context(request).settings.operator_token
    assert expected is not None
    if not isinstance(given, str) or not token_matches(given, expected.get_secret_value()):
        pipe = redis.pipeline(transaction=False)
        pipe.incr(key)
        pipe.expire(key, FAILURE_WINDOW_S)
        await pipe.execute()
        return _form(request, 401, "Invalid token.")
    cookie, _ = sign.issue()
    response = RedirectResponse(f"{PREFIX}/", status_code=303)
    _set_cookie(response, request, COOKIE, cookie, sign.lifetime_s)
    response.delete_cookie(PRE_COOKIE, path=PREFIX)
    return response


@router.post("/logout")
async def logout(
    request: Request, session: Annotated[Session, Depends(require_session)]
) -> Response:
    """End the session (the cookie is dropped and its nonce revoked)."""
    await checked_form(request, session)
    ctx = context(request)
    await revoke(state_redis(ctx), ctx.settings.queue_prefix, session)
    response = RedirectResponse(f"{PREFIX}/login", status_code=303)
    response.delete_cookie(COOKIE, path=PREFIX)
    return response
