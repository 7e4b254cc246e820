"""How errors become HTTP answers: one JSON shape, ``{"error": code, "detail": text}``.

NotFound is 404 (another tenant's object answers exactly like a missing one), a
state conflict 409, bad input 422, a backlog quota refusal 429 with Retry-After, Redis
down 503 with Retry-After.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Final

import sqlalchemy.exc
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException

from settler_jobs.errors import (
    InvalidJob,
    InvalidState,
    NotFound,
    QueueUnavailable,
    QuotaExceeded,
)
from settler_jobs.net_guard import Refused

RETRY_AFTER_UNAVAILABLE_S: Final = 2

_MAPPING: Final[tuple[tuple[type[Exception], int, str], ...]] = (
    (NotFound, 404, "not_found"),
    (InvalidState, 409, "invalid_state"),
    (InvalidJob, 422, "invalid_input"),
    (Refused, 422, "refused_url"),
    (QueueUnavailable, 503, "unavailable"),
    (ValueError, 422, "invalid_input"),
)


class ErrorOut(BaseModel):
    """The body of every error answer except 422s from request validation."""

    error: str
    detail: str


def error_response(
    status: int, code: str, detail: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    """A JSON error answer."""
    return JSONResponse({"error": code, "detail": detail}, status_code=status, headers=headers)


Handler = Callable[[Request, Exception], Awaitable[JSONResponse]]


def _handler(status: int, code: str) -> Handler:
    async def handle(request: Request, exc: Exception) -> JSONResponse:
        headers = {"Retry-After": str(RETRY_AFTER_UNAVAILABLE_S)} if status == 503 else None
        return error_response(status, code, str(exc), headers)

    return handle


_HTTP_CODES: Final[dict[int, str]] = {
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
    422: "invalid_input",
    429: "rate_limited",
}


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    return error_response(exc.status_code, code, str(exc.detail), dict(exc.headers or {}))


async def _quota_exceeded(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, QuotaExceeded)
    headers = {"Retry-After": str(exc.retry_after_s)}
    return error_response(429, "quota_exceeded", str(exc), headers)


# The database unreachable (the whole store on the PostgreSQL backend): 503, not 500.
_DATABASE_DOWN: Final = (
    ConnectionError,
    TimeoutError,
    sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.InterfaceError,
)


async def _database_down(request: Request, exc: Exception) -> JSONResponse:
    headers = {"Retry-After": str(RETRY_AFTER_UNAVAILABLE_S)}
    # The driver's text may name hosts and statements: keep it out of the answer.
    return error_response(503, "unavailable", "the database is unreachable; retry later", headers)


def install(app: FastAPI) -> None:
    """Register the handlers of our error tree (and of HTTP errors) on `app`."""
    app.add_exception_handler(HTTPException, _http_error)
    for down in _DATABASE_DOWN:
        app.add_exception_handler(down, _database_down)
    app.add_exception_handler(QuotaExceeded, _quota_exceeded)
    for exc_type, status, code in _MAPPING:
        app.add_exception_handler(exc_type, _handler(status, code))


ERROR_RESPONSES: Final[dict[int | str, dict[str, object]]] = {
    401: {"model": ErrorOut, "description": "Missing, invalid or revoked credentials."},
    404: {"model": ErrorOut, "description": "Not found (or not the caller's)."},
    429: {
        "model": ErrorOut,
        "description": "Rate limited or over the backlog quota; see Retry-After.",
    },
    503: {"model": ErrorOut, "description": "Queue or database unreachable; see Retry-After."},
}
