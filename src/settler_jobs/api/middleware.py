"""ASGI middleware: the request body limit and request metrics.

The body limit counts the bytes actually received, so a chunked body (no
Content-Length) is cut off as soon as it passes the limit, not after it was buffered.
The same pass refuses JSON strings holding NUL (U+0000, `\\u0000` in the text): neither
PostgreSQL's text nor its json types can store one, so every endpoint answers 422 up front
instead of failing halfway on one database and not the other.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from settler_jobs.envelope import NUL_ESCAPE

_LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)


class BodyTooLarge(HTTPException):
    """The request body is over the limit (413)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body is larger than {limit} bytes")


class NulInBody(HTTPException):
    """A JSON string of the request body holds U+0000 (422)."""

    def __init__(self) -> None:
        super().__init__(422, "request strings must not contain NUL characters (U+0000)")


_NUL_ESCAPE = re.compile(NUL_ESCAPE.pattern.encode())  # the job data check, on bytes
_CARRY = 64  # bytes of the previous chunk kept, for an escape split between chunks


class NulScan:
    """Finds an escaped NUL in a body read chunk by chunk."""

    def __init__(self) -> None:
        self._tail = b""

    def found(self, chunk: bytes) -> bool:
        """True if the body so far, ending with `chunk`, holds an escaped NUL."""
        if b"\\" not in chunk and b"\\" not in self._tail:
            self._tail = b""
            return False
        window = self._tail + chunk
        self._tail = window[-_CARRY:]
        return _NUL_ESCAPE.search(window) is not None


def _is_json(scope: Scope) -> bool:
    for name, value in scope.get("headers", ()):
        if name == b"content-type":
            media = bytes(value).split(b";", 1)[0].strip().lower()
            return media == b"application/json" or media.endswith(b"+json")
    return False


def _declared_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _send_too_large(send: Send, limit: int) -> None:
    detail = f"request body is larger than {limit} bytes"
    await _send_error(send, 413, "body_too_large", detail)


async def _send_error(send: Send, status: int, code: str, detail: str) -> None:
    body = json.dumps({"error": code, "detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class BodyLimit:
    """Answer 413 to requests whose body is (declared or turns out) larger than `limit`,
    and 422 to JSON bodies with an escaped NUL in them."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _declared_length(scope)
        if declared is not None and declared > self.limit:
            await _send_too_large(send, self.limit)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, self._checked(receive, _is_json(scope)), tracking_send)
        except BodyTooLarge:
            if started:
                raise
            await _send_too_large(send, self.limit)
        except NulInBody as exc:
            if started:
                raise
            await _send_error(send, 422, "invalid_input", exc.detail)

    def _checked(self, receive: Receive, json_body: bool) -> Receive:
        """`receive` that raises once the body passes the limit or (JSON) holds a NUL."""
        received = 0
        nul = NulScan()

        async def checked_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                chunk = message.get("body", b"")
                received += len(chunk)
                # HTTPExceptions: FastAPI's body reader re-raises them unchanged.
                if received > self.limit:
                    raise BodyTooLarge(self.limit)
                if json_body and nul.found(chunk):
                    raise NulInBody()
            return message

        return checked_receive


class ApiMetrics:
    """Request counters and latencies of the API, labelled by route template."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "api_requests_total",
            "HTTP API requests by method, route and status.",
            ["method", "route", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            "api_request_duration_seconds",
            "HTTP API request latency.",
            ["method", "route"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )


class RequestMetrics:
    """Record every HTTP request's status and duration in `ApiMetrics`."""

    def __init__(self, app: ASGIApp, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def recording_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        finally:
            route = _route_of(scope)
            method = str(scope.get("method", ""))
            self.metrics.requests.labels(method, route, str(status)).inc()
            self.metrics.latency.labels(method, route).observe(time.perf_counter() - started)


def _route_of(scope: Scope) -> str:
    # The template, not the raw path: ids in paths would make unbounded label sets.
    route: Any = scope.get("route")
    path = getattr(route, "path", None)
    return str(path) if path else "unmatched"


_CHANGES = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class AuditTrail:
    """Record every successful state-changing request in the audit log.

    Who acted comes from the auth dependencies (`scope["state"]["audit"]`: actor and
    tenant); the action is the method and route template (`POST /v1/jobs/{job_id}/cancel`),
    the target the first path parameter. Only requests answered below 400 are recorded;
    a failure to record is logged, never turned into an error for the caller.
    """

    def __init__(self, app: ASGIApp, record: Any, prefix: str = "") -> None:
        self.app = app
        self.record = record
        self.prefix = prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in _CHANGES:
            await self.app(scope, receive, send)
            return
        status = 500

        async def watch(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        await self.app(scope, receive, watch)
        who = scope.get("state", {}).get("audit")
        route = scope.get("route")
        if status >= 400 or who is None or route is None:
            return
        params = scope.get("path_params") or {}
        target = next(iter(params.items()), None)
        # Routes of included routers report their path without the mount prefix.
        path = str(route.path)
        if str(scope.get("path", "")).startswith(self.prefix + "/") and not path.startswith(
            self.prefix + "/"
        ):
            path = self.prefix + path
        await self.record(
            actor=who[0],
            tenant_id=who[1],
            action=f"{scope['method']} {path}"[:64],
            target=(target[0], str(target[1])) if target else None,
        )
