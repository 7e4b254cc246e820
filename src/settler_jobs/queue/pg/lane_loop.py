"""The worker loop of one lane on PostgreSQL.

One driver coroutine talks to the database for the lane; `concurrency` slot
coroutines run jobs. The driver's one statement per turn (`settler_lane_step`,
sql/0003) completes every job the slots finished since the last turn and claims as
many new jobs as slots are free, so a busy lane costs one round trip per batch of
jobs and completion is fused with fetching. Failures go out at once (`settler_fail`:
retry now, retry after a delay, or fail for good, with bullmq's own functions).

No polling: a drained lane waits for a `bullmq_jobs` notification for its queue
(queue/pg/listen.py), a slot finishing, or the due time of its next delayed job.
Locks are renewed for every job the lane holds; bullmq's `move_stalled_jobs_to_wait`
runs every stalled interval, so a killed worker's jobs run again elsewhere. A dropped
connection is retried with a short backoff; completions are resent (a repeat is a
no-op) and jobs a lost claim reply locked for this lane are adopted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final

from settler_jobs.errors import QueueUnavailable
from settler_jobs.queue.pg.base import JOB_COLUMNS
from settler_jobs.queue.pg.listen import JOBS_CHANNEL, Listener
from settler_jobs.queue.pg.pool import BROKEN, PgPool

log = logging.getLogger("settler_jobs.queue.pg.lane_loop")
_BACKOFF_S: Final = (0.05, 0.1, 0.25, 0.5, 1.0)
_TRIM_EVERY_S: Final = 1.0
COLUMNS: Final = JOB_COLUMNS + ", lock_token, deferred_failure, scheduler_id"
_DRIVER_ERRORS: Final = (*BROKEN, QueueUnavailable)


@dataclass(frozen=True, slots=True)
class PgLaneOptions:
    """Worker options of one lane (bullmq's names where they have one)."""

    concurrency: int
    lock_duration_ms: int = 30_000
    stalled_interval_ms: int = 30_000
    max_stalled_count: int = 1
    keep_completed_s: int = 86_400
    keep_completed_count: int = 10_000
    keep_failed_s: int = 7 * 86_400
    name: str = "settler"
    tenant_caps: dict[str, int] | None = None


@dataclass(slots=True)
class Claimed:
    """A job this lane holds: its row (`COLUMNS`) and lock token."""

    row: tuple[Any, ...]

    @property
    def id(self) -> str:
        return str(self.row[1])

    @property
    def token(self) -> str:
        return str(self.row[17])


def _now_ms() -> int:
    return int(time.time() * 1000)


Runner = Callable[[Claimed], Awaitable[None]]


class PgLaneLoop:
    """The driver, slots, lock renewal and stalled check of one lane."""

    def __init__(
        self, queue: str, run: Runner, *, pool: PgPool, listener: Listener, options: PgLaneOptions
    ) -> None:
        self.queue = queue
        self.id = uuid.uuid4().hex
        self._run = run
        self._pool = pool
        self._listener = listener
        self._o = options
        self._caps = json.dumps(options.tenant_caps or {})
        self._jobs: asyncio.Queue[Claimed | None] = asyncio.Queue()
        self._done: list[tuple[str, str, str]] = []  # id, token, result JSON
        self.held: dict[str, str] = {}  # job id -> token, from claim to finish
        self._signal = asyncio.Event()
        self._new_work = True
        self._drained = False
        self._due_at = 0
        self._busy = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._quiet = asyncio.Event()  # set while no statement of the driver is in flight
        self._quiet.set()
        self._resumed = asyncio.Event()
        self._resumed.set()
        self._closing = False
        self._stopped = False
        self._interrupted = False
        self._adopt = False
        self._trimmed_at = 0.0
        self._tasks: list[asyncio.Task[None]] = []
        self._slots: list[asyncio.Task[None]] = []
        self._driver: asyncio.Task[None] | None = None
        self._unsubscribe: Callable[[], None] | None = None

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Start the driver, the slots, lock renewal and the stalled check."""
        self._unsubscribe = self._listener.subscribe(JOBS_CHANNEL, self._notified)
        self._driver = asyncio.create_task(self._drive(), name=f"pg-drive:{self.queue}")
        self._slots = [
            asyncio.create_task(self._slot(), name=f"pg-slot:{self.queue}:{n}")
            for n in range(self._o.concurrency)
        ]
        self._tasks = [
            asyncio.create_task(self._renew_locks(), name=f"pg-locks:{self.queue}"),
            asyncio.create_task(self._check_stalled(), name=f"pg-stalled:{self.queue}"),
        ]

    @property
    def closing(self) -> bool:
        """True once `close` began: no more claims."""
        return self._closing

    def _notified(self, payload: str | None) -> None:
        if payload is None or payload == self.queue:
            self._new_work = True
            self._signal.set()

    async def pause(self) -> None:
        """Stop claiming and wait until the jobs this lane holds have finished."""
        self._resumed.clear()
        self._signal.set()
        while self._busy or not self._jobs.empty():
            await self._idle.wait()
            await asyncio.sleep(0)

    def resume(self) -> None:
        """Claim again after `pause`."""
        if not self._closing:
            self._resumed.set()
            self._new_work = True
            self._signal.set()

    def interrupt(self) -> None:
        """Cancel every slot now; their jobs stay active until their locks expire."""
        self._interrupted = True
        for task in self._slots:
            task.cancel()

    async def close(self, grace_s: float) -> bool:
        """Stop claiming, run what the lane holds for `grace_s`, interrupt the rest.

        True if every slot ended on its own. Completions are flushed before returning.
        """
        self._closing = True
        self._resumed.set()
        self._signal.set()
        clean = True
        await self._quiet.wait()  # a claim in flight lands before the slots' stop marks
        for _ in self._slots:
            self._jobs.put_nowait(None)  # after the jobs already held: those run first
        if self._slots:
            _, late = await asyncio.wait(self._slots, timeout=grace_s)
            if late:
                clean = False
                self.interrupt()
                await asyncio.wait(self._slots, timeout=5)
        self._stopped = True
        self._signal.set()
        if self._driver is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._driver), 10)
            self._driver.cancel()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(
            *self._tasks, *([self._driver] if self._driver else []), return_exceptions=True
        )
        if self._unsubscribe is not None:
            self._unsubscribe()
        return clean and not self._interrupted

    # ------------------------------------------------------------ slots

    async def _slot(self) -> None:
        while True:
            job = await self._jobs.get()
            if job is None:
                return
            self._busy += 1
            self._idle.clear()
            try:
                await self._run(job)
            except Exception:
                log.exception("lane.slot_error", extra={"queue": self.queue, "job_id": job.id})
            finally:
                self._busy -= 1
                if self._busy == 0:
                    self._idle.set()
                self._signal.set()

    def completed(self, job: Claimed, result_json: str) -> None:
        """Queue a completion for the driver's next statement (it keeps the lock meanwhile)."""
        self._done.append((job.id, job.token, result_json))

    def released(self, job: Claimed) -> None:
        """The lane no longer holds `job` (failed, retried or finished elsewhere)."""
        self.held.pop(job.id, None)

    # ------------------------------------------------------------ driver

    def _want(self) -> int:
        if self._closing or not self._resumed.is_set():
            return 0
        return max(0, self._o.concurrency - self._busy - self._jobs.qsize())

    async def _drive(self) -> None:
        attempt = 0
        while True:
            want = self._want()
            if not self._done:
                if self._stopped:
                    return
                if want == 0 or (self._drained and not self._new_work):
                    await self._wait(want > 0)
                    continue
            done, self._done = self._done, []
            self._new_work = False
            self._quiet.clear()
            try:
                if self._adopt:
                    await self._adopt_orphans()
                rows = await self._step(done, want)
            except _DRIVER_ERRORS as exc:
                self._done = done + self._done  # resent: a repeat is a no-op
                self._adopt = self._adopt or want > 0
                self._new_work = True
                pause = _BACKOFF_S[min(attempt, len(_BACKOFF_S) - 1)]
                attempt += 1
                log.warning("lane.step_failed", extra={"queue": self.queue, "error": str(exc)})
                await asyncio.sleep(pause)
                continue
            except Exception:
                log.exception("lane.step_error", extra={"queue": self.queue})
                await asyncio.sleep(1.0)
                continue
            finally:
                self._quiet.set()
            attempt = 0
            for job_id, _, _ in done:
                self.held.pop(job_id, None)
            for row in sorted(rows, key=lambda r: (r[6], r[-1])):
                self._hold(Claimed(row[:-1]))
            if want > 0:
                self._drained = len(rows) < want
                if self._drained:
                    await self._note_next_delay()

    def _hold(self, job: Claimed) -> None:
        self.held[job.id] = job.token
        self._jobs.put_nowait(job)

    async def _wait(self, claiming: bool) -> None:
        """Until a slot frees, work is notified, or the next delayed job is due."""
        timeout = None
        if claiming and self._due_at:
            timeout = max(0.0, (self._due_at - _now_ms()) / 1000)
        try:
            await asyncio.wait_for(self._signal.wait(), timeout)
        except TimeoutError:
            self._due_at = 0
            self._new_work = True
        self._signal.clear()

    async def _step(self, done: list[tuple[str, str, str]], want: int) -> list[tuple[Any, ...]]:
        now = _now_ms()
        trim = bool(done) and time.monotonic() - self._trimmed_at > _TRIM_EVERY_S
        if trim:
            self._trimmed_at = time.monotonic()
        o = self._o
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                f"SELECT {COLUMNS}, seq FROM settler_lane_step("
                "%s, %s, %s, %s::jsonb, %s, %s, %s, %s, %s, %s, %s, %s, %s::jsonb)".encode(),
                (
                    self.queue,
                    [d[0] for d in done],
                    [d[1] for d in done],
                    "[" + ",".join(d[2] for d in done) + "]",
                    now,
                    trim,
                    o.keep_completed_s,
                    o.keep_completed_count,
                    self.id,
                    o.lock_duration_ms,
                    o.name,
                    want,
                    self._caps,
                ),
            )
            return await cur.fetchall()

    async def _note_next_delay(self) -> None:
        try:
            async with self._pool.connection() as conn:
                cur = await conn.execute("SELECT next_delay(%s)", (self.queue,))
                row = await cur.fetchone()
        except Exception as exc:
            # The horizon is unknown: look again in a second (a notified job still wakes us).
            log.warning("lane.delay_read_failed", extra={"queue": self.queue, "error": str(exc)})
            self._due_at = _now_ms() + 1000
            return
        self._due_at = int(row[0]) if row and row[0] is not None else 0

    async def _adopt_orphans(self) -> None:
        """Take back jobs a lost claim reply locked for this lane (else they would stall)."""
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                f"SELECT {COLUMNS} FROM job WHERE queue = %s AND state = 'active' "
                "AND lock_token LIKE %s".encode(),
                (self.queue, self.id + ":%"),
            )
            rows = await cur.fetchall()
        self._adopt = False
        for row in rows:
            job = Claimed(row)
            if job.id not in self.held:
                log.info("lane.adopted", extra={"queue": self.queue, "job_id": job.id})
                self._hold(job)

    # ------------------------------------------------------------ locks and stalls

    async def _renew_locks(self) -> None:
        every = self._o.lock_duration_ms / 2000
        while True:
            await asyncio.sleep(every)
            if not self.held:
                continue
            ids, tokens = list(self.held), list(self.held.values())
            try:
                async with self._pool.connection() as conn:
                    cur = await conn.execute(
                        "SELECT settler_extend_locks(%s, %s, %s, %s, %s)",
                        (self.queue, ids, tokens, self._o.lock_duration_ms, _now_ms()),
                    )
                    lost = [str(r[0]) for r in await cur.fetchall()]
            except Exception as exc:  # the loop must outlive any one failure
                log.warning("lane.renew_failed", extra={"queue": self.queue, "error": str(exc)})
                continue
            # A completion queued but not yet flushed is still held: only report others.
            lost = [i for i in lost if i in self.held and i not in {d[0] for d in self._done}]
            if lost:
                log.warning("lane.locks_lost", extra={"queue": self.queue, "jobs": lost})

    async def _check_stalled(self) -> None:
        o = self._o
        while True:
            try:
                async with self._pool.connection() as conn:
                    cur = await conn.execute(
                        "SELECT move_stalled_jobs_to_wait(%s, %s, %s, %s)",
                        (self.queue, o.max_stalled_count, _now_ms(), o.stalled_interval_ms),
                    )
                    stalled = [str(r[0]) for r in await cur.fetchall()]
                if stalled:
                    log.warning("lane.stalled", extra={"queue": self.queue, "jobs": stalled})
            except Exception as exc:  # the loop must outlive any one failure
                log.warning(
                    "lane.stalled_check_failed", extra={"queue": self.queue, "error": str(exc)}
                )
            await asyncio.sleep(o.stalled_interval_ms / 1000)
