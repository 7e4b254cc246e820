"""A real loopback HTTP/1.1 webhook receiver for tests and benchmarks.

It verifies every request's Standard Webhooks signature with the `standardwebhooks`
package against each secret it knows, records what it saw (with the arrival time),
and answers scripted replies in order (then 200 OK), or runs a custom route for
misbehaving-receiver cases (trickling, huge bodies, redirects). Keep-alive is served,
so a client may reuse connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from standardwebhooks import Webhook, WebhookVerificationError

Route = Callable[["WebhookReceiver", asyncio.StreamWriter], Awaitable[None]]
"""A custom answer for one path; the connection closes after it."""


@dataclass(frozen=True)
class Reply:
    """A scripted answer; `echo` answers with the request headers as a JSON body."""

    status: str = "200 OK"
    body: bytes = b'{"ok":true}'
    headers: tuple[str, ...] = ()
    echo: bool = False


@dataclass(frozen=True)
class Seen:
    """One request as the receiver got it."""

    path: str
    headers: dict[str, str]
    body: bytes
    verified_by: tuple[int, ...]
    """Indexes of the known secrets whose signature verifies the request."""
    at: float
    """`time.monotonic()` on arrival."""

    @property
    def verified(self) -> bool:
        return bool(self.verified_by)

    @property
    def webhook_id(self) -> str:
        return self.headers.get("webhook-id", "")

    def json(self) -> Any:
        return json.loads(self.body)


async def respond(
    writer: asyncio.StreamWriter, status: str, body: bytes = b"", *headers: str
) -> None:
    """Write a whole response that closes the connection."""
    head = [f"HTTP/1.1 {status}", f"Content-Length: {len(body)}", "Connection: close", *headers]
    writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
    await writer.drain()


@dataclass
class WebhookReceiver:
    """Serves on 127.0.0.1; `url()` may name it by another host (resolved in the test)."""

    secrets: list[str] = field(default_factory=list)
    routes: Mapping[str, Route] = field(default_factory=dict)
    host_name: str = "127.0.0.1"
    replies: list[Reply] = field(default_factory=list)
    seen: list[Seen] = field(default_factory=list)
    port: int = 0
    _server: asyncio.Server | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _arrived: asyncio.Condition = field(default_factory=asyncio.Condition)

    def url(self, path: str = "/hooks") -> str:
        return f"http://{self.host_name}:{self.port}{path}"

    async def start(self) -> WebhookReceiver:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def __aenter__(self) -> WebhookReceiver:
        return await self.start()

    async def __aexit__(self, *_: object) -> None:
        await self.stop()

    async def wait_for(self, count: int, timeout: float = 15.0) -> list[Seen]:
        """Wait until at least `count` requests arrived; returns them all."""
        async with asyncio.timeout(timeout), self._arrived:
            await self._arrived.wait_for(lambda: len(self.seen) >= count)
        return list(self.seen)

    def ids(self) -> list[str]:
        """The webhook-id of every request, in arrival order."""
        return [seen.webhook_id for seen in self.seen]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            while not reader.at_eof():
                path = await self._read_request(reader)
                if path in self.routes:
                    await self.routes[path](self, writer)
                    return
                if not await self._reply(writer):
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client hung up first, which some tests expect
        except asyncio.CancelledError:
            pass  # stop(): end quietly instead of logging a cancelled connection task
        finally:
            self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _read_request(self, reader: asyncio.StreamReader) -> str:
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        request_line, *lines = head.strip().split("\r\n")
        headers = {}
        for line in lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        path = request_line.split(" ")[1]
        seen = Seen(path, headers, body, self._verified_by(body, headers), time.monotonic())
        async with self._arrived:
            self.seen.append(seen)
            self._arrived.notify_all()
        return path

    async def _reply(self, writer: asyncio.StreamWriter) -> bool:
        """Answer the next scripted reply; True if the connection stays open."""
        reply = self.replies.pop(0) if self.replies else Reply()
        content = json.dumps(self.seen[-1].headers).encode() if reply.echo else reply.body
        lines = [f"HTTP/1.1 {reply.status}", f"Content-Length: {len(content)}", *reply.headers]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + content)
        await writer.drain()
        return not any(h.lower() == "connection: close" for h in reply.headers)

    def _verified_by(self, body: bytes, headers: dict[str, str]) -> tuple[int, ...]:
        verified = []
        for index, secret in enumerate(self.secrets):
            with contextlib.suppress(WebhookVerificationError):
                Webhook(secret).verify(body, headers)
                verified.append(index)
        return tuple(verified)


def receiver(
    secrets: Iterable[str] = (), *, routes: Mapping[str, Route] | None = None, host: str = ""
) -> WebhookReceiver:
    """A receiver not yet started (use `async with`)."""
    return WebhookReceiver(list(secrets), dict(routes or {}), host or "127.0.0.1")
