"""`PgLaneWorker`: one lane's jobs through a processor on PostgreSQL, with the interface
of the Redis `LaneWorker` (start, pause, resume, interrupt, close) and the same
`ActiveJob`, `AttemptFailed` and dead-job hook.

A failed attempt retries after the delay the processor gives (`AttemptFailed`), never
(None, or attempts used up), or, for other errors, after the job's exponential
backoff. A job the stalled check gave up on fails without running.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import traceback
from collections.abc import Callable
from dataclasses import replace
from typing import Any, Final

import bullmq
from bullmq.job_scheduler import JobScheduler

from settler_jobs.config import Settings
from settler_jobs.domain import JobState
from settler_jobs.queue.lane import (
    ActiveJob,
    AttemptFailed,
    FailureHook,
    Processor,
    close_bounded,
)
from settler_jobs.queue.pg.base import record_of
from settler_jobs.queue.pg.lane_loop import Claimed, PgLaneLoop, PgLaneOptions
from settler_jobs.queue.pg.listen import Listener
from settler_jobs.queue.pg.pool import BROKEN, PgPool
from settler_jobs.records import JobRecord

log = logging.getLogger("settler_jobs.queue")
_RESEND_S: Final = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0)
_STACK_LIMIT: Final = 10


class _Progress:
    """What `ActiveJob.report_progress` calls: bullmq's `Job.updateProgress` shape."""

    def __init__(self, pool: PgPool, queue: str, job_id: str) -> None:
        self._pool, self._queue, self._id = pool, queue, job_id

    async def updateProgress(self, value: int | dict[str, Any]) -> None:
        async with self._pool.connection() as conn:
            await conn.execute(
                "UPDATE job SET progress = %s::jsonb WHERE queue = %s AND id = %s",
                (json.dumps(value), self._queue, self._id),
            )


class PgLaneWorker:
    """Runs one queue's jobs through `processor` on the PostgreSQL lane loop."""

    def __init__(
        self,
        queue: str,
        kind: str,
        processor: Processor,
        *,
        concurrency: int,
        pool: PgPool,
        listener: Listener,
        settings: Settings,
        on_dead: FailureHook,
        queue_handle: Callable[[str], bullmq.Queue] | None = None,
    ) -> None:
        self.queue = queue
        self._kind = kind
        self._pool = pool
        self._processor = processor
        self._on_dead = on_dead
        self._queue_handle = queue_handle
        self._schedulers: JobScheduler | None = None
        self._hooks: set[asyncio.Task[None]] = set()
        self._keep_failed_s = settings.keep_failed_s
        caps = {t: n for t, n in settings.tenant_concurrency_caps.items() if n > 0}
        options = PgLaneOptions(
            concurrency=concurrency,
            lock_duration_ms=settings.lock_duration_ms,
            stalled_interval_ms=settings.stalled_interval_ms,
            max_stalled_count=settings.max_stalled_count,
            keep_completed_s=settings.keep_completed_s,
            keep_completed_count=settings.keep_completed_count,
            keep_failed_s=settings.keep_failed_s,
            name=f"settler-{kind}",
            tenant_caps=caps if settings.fair_share and caps else None,
        )
        self.loop = PgLaneLoop(queue, self._attempt, pool=pool, listener=listener, options=options)

    def start(self) -> None:
        """Begin claiming jobs in the background."""
        self.loop.start()

    async def _attempt(self, job: Claimed) -> None:
        row = job.row
        data, opts = row[4], row[5] if isinstance(row[5], dict) else {}
        if row[19]:
            await self._next_iteration(job, data, opts)
        active = ActiveJob(
            id=job.id,
            queue=self.queue,
            name=str(row[2]),
            data=data,
            attempts_made=int(row[9] or 0),
            max_attempts=int(opts.get("attempts") or row[8] or 1),
            created_at_ms=int(row[14]),
            processed_at_ms=int(row[15] or time.time() * 1000),
            backoff_delay_ms=_backoff_delay(opts.get("backoff")),
            _job=_Progress(self._pool, self.queue, job.id),
        )
        try:
            if row[18]:
                raise AttemptFailed(str(row[18]), None)
            result = await self._processor(active)
            encoded = json.dumps(result, separators=(",", ":"), allow_nan=False)
        except Exception as exc:
            await self._fail(job, active, exc)
            return
        self.loop.completed(job, encoded)

    async def _fail(self, job: Claimed, active: ActiveJob, exc: Exception) -> None:
        reason = str(exc)
        final, delay = _decide(exc, active)
        stack = ["".join(traceback.format_exception(exc)).strip()]
        previous = job.row[13] if isinstance(job.row[13], list) else []
        stacktrace = json.dumps([*previous, *stack][-_STACK_LIMIT:])
        now = int(time.time() * 1000)
        reply = await self._send_failure(job, reason, stacktrace, now, None if final else delay)
        self.loop.released(job)
        if reply is None or reply < 0:
            log.warning(
                "lane.fail_refused",
                extra={"queue": self.queue, "job_id": job.id, "code": reply},
            )
            return
        if final:
            record = replace(
                record_of(job.row[:17], self._kind),
                state=JobState.FAILED,
                attempts_made=active.attempts_made + 1,
                failure_reason=reason,
                finished_at_ms=now,
                stacktrace=tuple(json.loads(stacktrace)),
                first_failed_at_ms=reply,
            )
            task = asyncio.ensure_future(self._report_dead(record))
            self._hooks.add(task)
            task.add_done_callback(self._hooks.discard)

    async def _send_failure(
        self, job: Claimed, reason: str, stacktrace: str, now: int, delay: int | None
    ) -> int | None:
        """settler_fail, resent after a dropped connection (a repeat answers -6/-1)."""
        for attempt, pause in enumerate(_RESEND_S):
            try:
                async with self._pool.connection() as conn:
                    cur = await conn.execute(
                        "SELECT settler_fail(%s, %s, %s, %s, %s::jsonb, %s, %s, false, %s, NULL)",
                        (
                            self.queue,
                            job.id,
                            job.token,
                            reason,
                            stacktrace,
                            now,
                            delay,
                            self._keep_failed_s,
                        ),
                    )
                    row = await cur.fetchone()
                return int(row[0]) if row and row[0] is not None else None
            except BROKEN as exc:
                log.warning(
                    "lane.fail_resend",
                    extra={"queue": self.queue, "job_id": job.id, "error": str(exc), "n": attempt},
                )
                await asyncio.sleep(pause)
        return None

    async def _report_dead(self, record: JobRecord) -> None:
        await self._on_dead(record)

    async def _next_iteration(self, job: Claimed, data: Any, opts: dict[str, Any]) -> None:
        """Materialise the next run of the job scheduler that produced `job`."""
        if self._queue_handle is None:
            return
        try:
            if self._schedulers is None:
                self._schedulers = JobScheduler(self._queue_handle(self.queue))
            await self._schedulers.upsertJobScheduler(
                str(job.row[19]),
                opts.get("repeat"),
                str(job.row[2]),
                data,
                opts,
                override=False,
                producer_id=job.id,
            )
        except Exception:
            log.exception("lane.scheduler_failed", extra={"queue": self.queue, "job_id": job.id})

    async def pause(self) -> None:
        """Stop claiming (jobs in flight finish)."""
        await self.loop.pause()

    def resume(self) -> None:
        """Claim again after `pause`."""
        self.loop.resume()

    def interrupt(self) -> None:
        """Cancel every in-flight job of this lane."""
        self.loop.interrupt()

    async def close(self, grace_s: float) -> bool:
        """Stop claiming, let held jobs finish for `grace_s`, then interrupt them.

        Returns False if jobs had to be interrupted; the stalled check hands those back
        once their locks expire. The pool and listener belong to the caller.
        """
        # The loop may wait up to 10 s more for its driver's last statement.
        return await close_bounded(
            self.queue, self.loop.close(grace_s), self._hooks, grace_s, slack_s=20.0
        )


def _backoff_delay(backoff: Any) -> int | None:
    if isinstance(backoff, dict) and isinstance(backoff.get("delay"), int):
        return int(backoff["delay"])
    return None


def _decide(exc: Exception, active: ActiveJob) -> tuple[bool, int]:
    """(final, retry delay in ms) of a failed attempt, as the Redis lane decides it."""
    if isinstance(exc, AttemptFailed):
        if exc.retry_delay_s is None:
            return True, 0
        delay = max(0, round(exc.retry_delay_s * 1000))
    elif isinstance(exc, bullmq.UnrecoverableError):
        return True, 0
    else:  # bullmq's exponential backoff: 2^(attempts made - 1) x delay
        delay = (2**active.attempts_made) * (active.backoff_delay_ms or 0)
    return active.attempts_made + 1 >= active.max_attempts, delay
