"""One LISTEN connection per process for the PostgreSQL queue: `bullmq_jobs` wakes the
lanes (payload: the queue name), `settler_cancel` carries cancel requests
(payload: "<queue>\\t<job id>").

When the connection drops (server restart, `pg_terminate_backend`), it reconnects with
a short backoff and tells every subscriber, since notifications sent meanwhile are
lost: lanes then look for work again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Final

from settler_jobs.errors import QueueUnavailable
from settler_jobs.queue.pg.pool import BROKEN, PgPool

log = logging.getLogger("settler_jobs.queue.pg")
JOBS_CHANNEL: Final = "bullmq_jobs"
CANCEL_CHANNEL: Final = "settler_cancel"
_BACKOFF_S: Final = (0.05, 0.1, 0.25, 0.5, 1.0)

Callback = Callable[[str | None], None]  # the payload; None after a reconnect


class Listener:
    """Dispatches notifications of both channels to in-process subscribers."""

    def __init__(self, pool: PgPool) -> None:
        self._pool = pool
        self._subs: dict[str, set[Callback]] = {JOBS_CHANNEL: set(), CANCEL_CHANNEL: set()}
        self._task: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()
        self.reconnects = 0

    def subscribe(self, channel: str, callback: Callback) -> Callable[[], None]:
        """Call `callback(payload)` for each notification on `channel`; returns unsubscribe."""
        self._subs[channel].add(callback)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="pg-listen")
        return lambda: self._subs[channel].discard(callback)

    async def wait_connected(self, timeout_s: float) -> bool:
        """True once the LISTEN connection is up (within `timeout_s`)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._connected.wait(), timeout_s)
        return self._connected.is_set()

    async def _run(self) -> None:
        attempt = 0
        while True:
            try:
                conn = await self._pool.connect(keepalive=True)
            except QueueUnavailable as exc:
                log.warning("pg.listen_connect_failed", extra={"error": str(exc)})
                await asyncio.sleep(_BACKOFF_S[min(attempt, len(_BACKOFF_S) - 1)])
                attempt += 1
                continue
            try:
                for channel in self._subs:
                    await conn.execute(f"LISTEN {channel}".encode())
                attempt = 0
                self._connected.set()
                self._broadcast(None)  # notifications may have been missed meanwhile
                self.reconnects += 1
                async for note in conn.notifies():
                    for callback in list(self._subs.get(note.channel, ())):
                        callback(note.payload)
            except Exception as exc:  # lost, or anything else: listen again, never go deaf
                self._connected.clear()
                if isinstance(exc, BROKEN):
                    log.warning("pg.listen_lost", extra={"error": str(exc)})
                else:
                    log.exception("pg.listen_failed")
                await asyncio.sleep(_BACKOFF_S[min(attempt, len(_BACKOFF_S) - 1)])
                attempt += 1
            finally:
                self._connected.clear()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(conn.close(), 2.0)

    def _broadcast(self, payload: str | None) -> None:
        for subs in self._subs.values():
            for callback in list(subs):
                callback(payload)

    async def cancellation_requests(self) -> AsyncIterator[tuple[str, str]]:
        """Yield (queue, job id) for every cancel request sent on `settler_cancel`."""
        inbox: asyncio.Queue[str] = asyncio.Queue()
        unsubscribe = self.subscribe(
            CANCEL_CHANNEL, lambda p: inbox.put_nowait(p) if p is not None else None
        )
        try:
            while True:
                payload = await inbox.get()
                queue, sep, job_id = payload.partition("\t")
                if sep and queue and job_id:
                    yield queue, job_id
        finally:
            unsubscribe()

    async def close(self) -> None:
        """Stop listening."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
