"""What every dashboard page shares: templates, security headers, login and CSRF checks."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final, Protocol

from fastapi import Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from settler_jobs.dashboard.session import COOKIE, Session, SessionSigner, is_revoked, token_matches
from settler_jobs.errors import QueueUnavailable
from settler_jobs.keyring import derived_key
from settler_jobs.redaction import redact

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from settler_jobs.config import Settings
    from settler_jobs.tenants import TenantDirectory
    from settler_jobs.webhooks import Webhooks
    from settler_jobs.wiring import Services

PREFIX: Final = "/dashboard"
CSRF_FIELD: Final = "csrf"
CSRF_HEADER: Final = "X-CSRF-Token"
CSP: Final = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
)
SECURITY_HEADERS: Final = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}


def _ms_time(value: int | None) -> str:
    if not value:
        return "-"
    return datetime.fromtimestamp(value / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _pretty(value: Any) -> str:
    return json.dumps(redact(value), indent=2, sort_keys=True, default=str)


templates = Environment(
    loader=PackageLoader("settler_jobs.dashboard", "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
)
templates.filters["ms_time"] = _ms_time
templates.filters["pretty"] = _pretty
templates.filters["mask"] = lambda value: redact(value)


class DashboardContext(Protocol):
    """What the pages read from the app that mounts them (the API's context satisfies it).

    The dashboard names only this, never the API package: the API mounts the dashboard.
    """

    @property
    def settings(self) -> Settings: ...

    @property
    def services(self) -> Services: ...

    @property
    def redis(self) -> Redis | None: ...

    @property
    def directory(self) -> TenantDirectory: ...

    @property
    def webhooks(self) -> Webhooks: ...


class LoginRequired(Exception):
    """No valid session: the operator is sent to the login page."""


class SecurityHeaders:
    """ASGI middleware: the CSP and friends on every dashboard response.

    Pure ASGI (no BaseHTTPMiddleware), so request bodies stream through untouched.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._headers = [(k.lower().encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not str(scope.get("path", "")).startswith(PREFIX):
            await self.app(scope, receive, send)
            return
        names = {name for name, _ in self._headers}

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                kept = [(k, v) for k, v in message.get("headers", []) if k.lower() not in names]
                message = {**message, "headers": kept + self._headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


async def to_login(request: Request, exc: Exception) -> Response:
    """Redirect (htmx: HX-Redirect) to the login page."""
    target = f"{PREFIX}/login"
    if request.headers.get("HX-Request"):
        return Response(status_code=204, headers={"HX-Redirect": target})
    return RedirectResponse(target, status_code=303)


def context(request: Request) -> DashboardContext:
    """The context opened by the app's lifespan."""
    ctx: DashboardContext = request.app.state.ctx
    return ctx


def state_redis(ctx: DashboardContext) -> Redis:
    """The Redis holding sessions, login throttles, heartbeats and depth samples.

    The seam of the PostgreSQL backend: there is no Redis there, so this answers 503
    until those features read a state store with a PostgreSQL implementation.
    """
    if ctx.redis is None:
        raise QueueUnavailable("this view keeps its state in Redis, unused on this backend")
    return ctx.redis


def signer(request: Request) -> SessionSigner | None:
    """The session signer, or None while no operator token is configured."""
    ctx = context(request)
    token = ctx.settings.operator_token
    if token is None:
        return None
    cached: SessionSigner | None = getattr(request.app.state, "dashboard_signer", None)
    if cached is None:
        key = derived_key(ctx.settings, "dashboard")
        cached = SessionSigner(key, token.get_secret_value(), ctx.settings.dashboard_session_s)
        request.app.state.dashboard_signer = cached
    return cached


async def current_session(request: Request) -> Session | None:
    """The valid, not logged-out session of this request, if any."""
    sign = signer(request)
    if sign is None:
        return None
    found = sign.check(request.cookies.get(COOKIE))
    ctx = context(request)
    if found is None or await is_revoked(state_redis(ctx), ctx.settings.queue_prefix, found):
        return None
    return found


async def require_session(request: Request) -> Session:
    """Dependency: the session, or a redirect to the login page."""
    found = await current_session(request)
    if found is None:
        raise LoginRequired
    return found


async def checked_form(request: Request, session: Session) -> FormData:
    """The posted form, once its CSRF token (field or header) matches the session's."""
    form = await request.form()
    field = form.get(CSRF_FIELD)
    given = request.headers.get(CSRF_HEADER) or (field if isinstance(field, str) else None)
    if not token_matches(given, session.csrf):
        raise HTTPException(403, "missing or invalid CSRF token")
    return form


def text_field(form: FormData, name: str, *, max_len: int = 200) -> str:
    """A text field of a form, stripped; 400 if too long."""
    value = form.get(name)
    text = value.strip() if isinstance(value, str) else ""
    if len(text) > max_len:
        raise HTTPException(400, f"{name} is longer than {max_len} characters")
    return text


def render(
    request: Request,
    name: str,
    session: Session | None,
    status_code: int = 200,
    **values: Any,
) -> HTMLResponse:
    """Render a template with the session's CSRF token (or `csrf=`) and the flash message."""
    csrf = values.pop("csrf", None) or (session.csrf if session else "")
    html = templates.get_template(name).render(
        csrf=csrf,
        logged_in=session is not None,
        prefix=PREFIX,
        flash=request.query_params.get("flash", "")[:200],
        path=request.url.path,
        **values,
    )
    return HTMLResponse(html, status_code=status_code)


def back(url: str, flash: str) -> RedirectResponse:
    """Post/redirect/get with a short message."""
    from urllib.parse import quote

    joiner = "&" if "?" in url else "?"
    return RedirectResponse(f"{url}{joiner}flash={quote(flash[:200])}", status_code=303)
