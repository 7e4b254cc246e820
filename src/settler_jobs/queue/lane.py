"""The worker side of the adapter: `LaneWorker` runs one lane's jobs through a processor
as `ActiveJob`s; `AttemptFailed` and `where` go with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from dataclasses import dataclass, field, replace
from typing import Any, Final

import bullmq
from redis.asyncio import Redis

from settler_jobs.config import Settings
from settler_jobs.queue.base import _FIRST_FAILED, _record
from settler_jobs.queue.lane_loop import LaneLoop, LaneOptions
from settler_jobs.records import JobRecord

# Lane workers log under the package's name.
log = logging.getLogger("settler_jobs.queue")
_CLOSE_TIMEOUT_S: Final = 10.0


class AttemptFailed(Exception):
    """Raised by a processor: the attempt failed; retry after the delay, or never (None)."""

    def __init__(self, reason: str, retry_delay_s: float | None) -> None:
        super().__init__(reason)
        self.retry_delay_s = retry_delay_s


@dataclass(slots=True)
class ActiveJob:
    """The job a worker slot is running, with the handle to report progress."""

    id: str
    queue: str
    name: str
    data: Any
    attempts_made: int
    max_attempts: int
    created_at_ms: int
    processed_at_ms: int
    backoff_delay_ms: int | None
    _job: Any = field(repr=False)

    async def report_progress(self, value: int | dict[str, Any]) -> None:
        """Store progress on the job (visible to readers while it runs)."""
        await self._job.updateProgress(value)


def _backoff_delay(backoff: Any) -> int | None:
    if isinstance(backoff, dict) and isinstance(backoff.get("delay"), int):
        return int(backoff["delay"])
    return None


Processor = Callable[[ActiveJob], Awaitable[Any]]
FailureHook = Callable[[JobRecord], Awaitable[None]]


class LaneWorker:
    """Runs one queue's jobs through `processor` on our lane loop (queue/lane_loop.py).

    BullMQ's locks, stalled checks and retries, with fetch-next and a pipelined
    connection; `bullmq.Worker` itself is no longer used. The lane owns `client` and
    closes it in `close`.
    """

    def __init__(
        self,
        queue: str,
        kind: str,
        processor: Processor,
        *,
        concurrency: int,
        client: Redis,
        settings: Settings,
        on_dead: FailureHook,
    ) -> None:
        self.queue = queue
        self._kind = kind
        self._client = client
        self._prefix = settings.queue_prefix
        self._processor = processor
        self._on_dead = on_dead
        self._hooks: set[asyncio.Task[None]] = set()
        options = LaneOptions(
            concurrency=concurrency,
            lock_duration_ms=settings.lock_duration_ms,
            stalled_interval_ms=settings.stalled_interval_ms,
            max_stalled_count=settings.max_stalled_count,
            # A worker option, not a job option: it saves ~30 bytes per waiting job.
            # Failed jobs of Node workers are kept until removed (the DLQ has a copy).
            remove_on_fail={"age": settings.keep_failed_s},
            name=f"settler-{kind}",
            tenant_caps=_caps(settings),
        )
        self.loop = LaneLoop(
            queue,
            self._process,
            client=client,
            prefix=settings.queue_prefix,
            options=options,
            on_failed=self._on_failed,
        )

    def start(self) -> None:
        """Begin fetching jobs in the background."""
        self.loop.start()

    async def _process(self, job: Any, token: str) -> Any:
        active = ActiveJob(
            id=str(job.id),
            queue=self.queue,
            name=str(job.name),
            data=job.data,
            attempts_made=int(job.attemptsMade),
            max_attempts=int(job.opts.get("attempts") or 1),
            created_at_ms=int(job.timestamp),
            processed_at_ms=int(job.processedOn) or int(time.time() * 1000),
            backoff_delay_ms=_backoff_delay(job.opts.get("backoff")),
            _job=job,
        )
        try:
            return await self._processor(active)
        except AttemptFailed as failed:
            key = f"{self._prefix}:{self.queue}:{active.id}"
            await self._client.hsetnx(key, _FIRST_FAILED, int(time.time() * 1000))
            if failed.retry_delay_s is None:
                raise bullmq.UnrecoverableError(str(failed)) from failed
            # Only this attempt's local copy changes: the stored options keep the
            # portable exponential backoff that Node workers understand.
            job.opts["backoff"] = {
                "type": "fixed",
                "delay": max(0, round(failed.retry_delay_s * 1000)),
            }
            raise

    def _on_failed(self, job: Any, err: BaseException) -> None:
        """A job failed for good: report it as dead (in the background)."""
        record = _record(job, self.queue, self._kind, "failed")
        task = asyncio.ensure_future(self._report_dead(record))
        self._hooks.add(task)
        task.add_done_callback(self._hooks.discard)

    async def _report_dead(self, record: JobRecord) -> None:
        first = await self._client.hget(f"{self._prefix}:{self.queue}:{record.id}", _FIRST_FAILED)
        await self._on_dead(replace(record, first_failed_at_ms=int(first) if first else None))

    async def pause(self) -> None:
        """Stop fetching (in-flight jobs finish)."""
        await self.loop.pause()

    def resume(self) -> None:
        """Fetch again after `pause`."""
        self.loop.resume()

    def interrupt(self) -> None:
        """Cancel every in-flight job of this lane."""
        self.loop.interrupt()

    async def close(self, grace_s: float) -> bool:
        """Stop fetching, let in-flight jobs finish for `grace_s`, then interrupt them.

        Returns False if jobs had to be interrupted; the stalled-job check hands those
        back to another worker once their locks expire.
        """
        clean = await close_bounded(self.queue, self.loop.close(grace_s), self._hooks, grace_s)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._client.aclose(), _CLOSE_TIMEOUT_S)
        return clean


def _caps(settings: Settings) -> dict[str, int] | None:
    """The tier caps the lane's pop enforces; None (bullmq's own pop) when there are none."""
    caps = {t: n for t, n in settings.tenant_concurrency_caps.items() if n > 0}
    return caps if settings.fair_share and caps else None


async def close_bounded(
    queue: str,
    closing: Coroutine[Any, Any, bool],
    hooks: Iterable[asyncio.Future[Any]],
    grace_s: float,
    *,
    slack_s: float = _CLOSE_TIMEOUT_S,
) -> bool:
    """Await a lane loop's `close` and the lane's failure hooks, every wait bounded (a
    shutdown must end even if a connection hangs); False if anything had to be cut."""
    task = asyncio.ensure_future(closing)
    done, _ = await asyncio.wait({task}, timeout=grace_s + slack_s)
    clean = task.result() if done else False
    _, stuck = await asyncio.wait([task, *hooks], timeout=_CLOSE_TIMEOUT_S)
    for pending in stuck:
        log.warning("lane.close_timeout", extra={"queue": queue, "task": where(pending)})
        pending.cancel()
    if stuck:
        await asyncio.wait(stuck, timeout=_CLOSE_TIMEOUT_S)
        clean = False
    return clean


def where(task: asyncio.Future[Any]) -> str:
    """Where a task is waiting: its innermost frame, for shutdown diagnostics."""
    frames = task.get_stack() if isinstance(task, asyncio.Task) else []
    return " <- ".join(f"{f.f_code.co_name}:{f.f_lineno}" for f in reversed(frames)) or repr(task)
