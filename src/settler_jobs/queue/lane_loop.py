"""The worker loop of one lane, on bullmq's own scripts, argument builders, Job and locks.

Part of the bullmq adapter (with queue.py). It does what `bullmq.Worker` does, the way
BullMQ for Node does it:

* fetch-next: finishing a job (`moveToFinished`) hands back the next one, locked with
  the same token, so a busy slot costs one script call per job;
* one long-lived coroutine per concurrency slot instead of a task per fetch and per job;
* every script goes through a pipelined connection (redis_pipe.py): one socket, many
  commands in flight, written in batches;
* idle slots fetch one at a time (Node's sequential fetch); the one in front blocks on
  the queue's marker (BZPOPMIN) on a second connection, so a new job starts at once and
  a delayed one when it is due.

Locks are renewed by bullmq's LockManager, stalled jobs moved by its stalled-jobs
script (at start, then every stalledInterval), failures and retries decided as in
bullmq's `Job.moveToFailed`. A finish script answering "no lock / not active / no job"
means the job was finished elsewhere (its lock expired, or our own earlier send went
through before the connection dropped): it is logged, never failed. When a dropped
connection loses a reply that may have carried the slot's next job, the slot looks for
a job locked with its token and runs it (`_adopt`), rather than leave it to stall.
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

from bullmq import Job, UnrecoverableError
from bullmq.backends.redis_backend import RedisBackend
from bullmq.backoffs import Backoffs
from bullmq.custom_errors import DelayedError, WaitingChildrenError
from bullmq.job_scheduler import JobScheduler
from bullmq.lock_manager import LockManager
from bullmq.redis_connection import RedisConnection
from bullmq.scripts import array2obj, raw2NextJobData
from redis.asyncio import Redis
from redis.exceptions import ConnectionError, RedisError

from settler_jobs.queue.pipe import Address, Arg, PipelinedConnection

log = logging.getLogger(__name__)
# Finish-script codes meaning "not ours any more": no job, no lock, not active, other lock.
FINISHED_ELSEWHERE: Final = frozenset({-1, -2, -3, -6})
_MAX_BLOCK_S: Final = 10.0  # as bullmq: a BZPOPMIN never blocks longer (reconnects)
_MIN_BLOCK_S: Final = 0.002  # Redis < 7.0.8 turns 1 ms blocks into "forever"
_RETRY_S: Final = (0.05, 0.1, 0.25, 0.5, 1.0)  # pauses between resends after a drop

Processor = Callable[[Any, str], Awaitable[Any]]
FailedHook = Callable[[Any, BaseException], None]


@dataclass(frozen=True, slots=True)
class LaneOptions:
    """Worker options of one lane (bullmq's names in comments)."""

    concurrency: int
    lock_duration_ms: int = 30_000  # lockDuration
    stalled_interval_ms: int = 30_000  # stalledInterval
    max_stalled_count: int = 1  # maxStalledCount
    remove_on_fail: Any = False  # removeOnFail, for jobs that do not set it
    name: str | None = None  # the worker name in CLIENT LIST
    drain_delay_s: float = 5.0  # drainDelay: longest idle block without a delayed job
    retry_s: float = 1.0  # runRetryDelay: pause after a failed fetch


def _now_ms() -> int:
    return int(time.time() * 1000)


class _PipeScript:
    """A bullmq script, called the way `Scripts` calls it, run on the pipelined connection."""

    def __init__(self, pipe: PipelinedConnection, script: Any) -> None:
        self._pipe = pipe
        self.sha: str = script.sha
        self.script: str = script.script

    def __call__(
        self, keys: list[Arg] | None = None, args: list[Arg] | None = None, client: Any = None
    ) -> Awaitable[Any]:
        return self._pipe.evalsha(self.sha, self.script, keys or [], args or [])


class _QueueView:
    """What bullmq's Job, LockManager and JobScheduler read from their worker or queue."""

    def __init__(self, backend: RedisBackend, opts: dict[str, Any]) -> None:
        self.backend = backend
        self.qualifiedName = backend.qualifiedName
        self.opts = opts
        self.name = backend.name

    def emit(self, event: str, *args: Any) -> None:
        if event in ("error", "lockRenewalFailed"):
            log.warning("lane.%s", event, extra={"queue": self.name, "detail": repr(args)})


class LaneLoop:
    """Runs one queue's jobs through `processor(job, token)` in `concurrency` slots."""

    def __init__(
        self,
        queue: str,
        processor: Processor,
        *,
        client: Redis,
        prefix: str,
        options: LaneOptions,
        on_failed: FailedHook | None = None,
    ) -> None:
        self.queue = queue
        self.id = uuid.uuid4().hex
        self._processor = processor
        self._on_failed = on_failed
        self._o = options
        self._backend = RedisBackend(queue, RedisConnection(client), None, prefix, False)
        self._name = self._backend.clientName(f":w:{options.name}" if options.name else "")
        address = Address.of(client)
        self.pipe = PipelinedConnection(address, name=self._name)
        self.blocking = PipelinedConnection(address, name=self._name)
        scripts = self._backend.scripts
        scripts.commands = {n: _PipeScript(self.pipe, s) for n, s in scripts.commands.items()}
        self._scripts = scripts
        self._keys = scripts.keys
        self._finish_script = scripts.commands["moveToFinished"]
        self._view = _QueueView(
            self._backend,
            {"prefix": prefix, "lockDuration": options.lock_duration_ms, "limiter": None},
        )
        self._locks = LockManager(
            self._view, options.lock_duration_ms // 2, options.lock_duration_ms, self.id
        )
        self._schedulers = JobScheduler(self._view)
        self._fetch_lock = asyncio.Lock()
        self._wake = asyncio.Event()  # set to stop an idle wait (pause, close)
        self._resumed = asyncio.Event()
        self._resumed.set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._closing = False
        self._interrupted = False
        self._drained = False
        self._block_until = 0
        self._limit_until = 0
        self._marker_wait: asyncio.Future[Any] | None = None
        self._busy = 0
        self._slots: list[asyncio.Task[None]] = []
        self._stalled_task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Start the slots, the lock renewal and the stalled-jobs check."""
        self._locks.start()
        self._stalled_task = asyncio.create_task(
            self._check_stalled(), name=f"stalled:{self.queue}"
        )
        self._slots = [
            asyncio.create_task(self._slot(f"{self.id}:{n}"), name=f"slot:{self.queue}:{n}")
            for n in range(self._o.concurrency)
        ]

    async def pause(self) -> None:
        """Stop fetching and wait until the jobs in flight have finished."""
        self._resumed.clear()
        self._wake.set()
        await self._idle.wait()

    def resume(self) -> None:
        """Fetch again after `pause`."""
        if not self._closing:
            self._wake.clear()
            self._resumed.set()

    def interrupt(self) -> None:
        """Cancel every slot now; its job stays active until its lock expires."""
        self._interrupted = True
        for task in self._slots:
            task.cancel()

    async def close(self, grace_s: float) -> bool:
        """Stop fetching, give jobs in flight `grace_s`, interrupt the rest, disconnect.

        True if every slot ended on its own. No job fetched is left unstarted: a job that
        arrives with the last finish reply still runs (within the grace period).
        """
        self._closing = True
        self._wake.set()
        self._resumed.set()
        clean = True
        if self._slots:
            _, late = await asyncio.wait(self._slots, timeout=grace_s)
            if late:
                clean = False
                self.interrupt()
                await asyncio.wait(self._slots, timeout=grace_s + 5)
        if self._stalled_task is not None:
            self._stalled_task.cancel()
            await asyncio.gather(self._stalled_task, return_exceptions=True)
        await self._locks.close()
        if self._marker_wait is not None:
            self._marker_wait.cancel()
            await asyncio.gather(self._marker_wait, return_exceptions=True)
        await self.blocking.close()
        await self.pipe.close()
        return clean and not self._interrupted

    @property
    def slots(self) -> list[asyncio.Task[None]]:
        """The slot tasks (for diagnostics)."""
        return list(self._slots)

    # ------------------------------------------------------------ slots

    def _fetching(self) -> bool:
        return not self._closing and self._resumed.is_set()

    async def _slot(self, token: str) -> None:
        job = None
        while True:
            try:
                if job is not None:
                    job = await self._run(job, token)
                elif self._closing:
                    return
                elif not self._resumed.is_set():
                    await self._resumed.wait()
                else:
                    job = await self._fetch(token)
            except Exception:
                # A bug or a reply we cannot read: keep the slot alive. A job we could
                # not finish stays active until the stalled check hands it back.
                log.exception("lane.slot_error", extra={"queue": self.queue})
                job = None
                await self._nap(self._o.retry_s)

    async def _run(self, job: Any, token: str) -> Any:
        """Process one job and finish it; the next job if the finish reply carried one."""
        self._busy += 1
        self._idle.clear()
        self._locks.track_job(job.id, token, _now_ms())
        try:
            try:
                if job.deferredFailure:
                    raise UnrecoverableError(job.deferredFailure)
                result = await self._processor(job, token)
            except (DelayedError, WaitingChildrenError):
                return None  # the processor moved the job itself
            except Exception as exc:
                await self._fail(job, token, exc)
                return None
            return await self._complete(job, token, result)
        finally:
            self._locks.untrack_job(job.id)
            self._busy -= 1
            if self._busy == 0:
                self._idle.set()

    async def _complete(self, job: Any, token: str, result: Any) -> Any:
        keep = job.opts.get("removeOnComplete", False)
        fetch = self._fetching()
        try:
            keys, args = self._scripts.moveToCompletedArgs(job, result, keep, token, fetch)
        except (TypeError, ValueError) as exc:  # a result JSON cannot hold
            await self._fail(job, token, exc)
            return None
        reply = await self._finish(self._finish_script, job, keys, args, fetch_next_at=5)
        if isinstance(reply, int) and reply < 0:
            error = self._scripts.finishedErrors({"code": reply, "jobId": job.id})
            await self._fail(job, token, error)
            return None
        job.returnvalue = result
        job.attemptsMade += 1
        if fetch and not args[5]:  # resent after a drop: the lost reply may have held a job
            orphan = await self._adopt(token)
            if orphan is not None:
                return orphan
        if reply:
            return await self._next(raw2NextJobData(reply), token)
        if fetch and reply == 0:
            self._drained = True
        return None

    async def _fail(self, job: Any, token: str, exc: BaseException) -> None:
        """Retry later, retry now or fail for good, as bullmq's Job.moveToFailed decides."""
        job.failedReason = str(exc)
        job.updateStacktrace()  # first, while the exception is being handled
        fields = {
            "failedReason": job.failedReason,
            "stacktrace": json.dumps(job.stacktrace, separators=(",", ":"), allow_nan=False),
        }
        attempts = int(job.opts.get("attempts") or 1)
        final = (
            isinstance(exc, UnrecoverableError) or job.discarded or job.attemptsMade + 1 >= attempts
        )
        delay = 0
        if not final:
            backoff = job.opts.get("backoff")
            delay = await Backoffs.calculate(backoff, job.attemptsMade + 1, exc, job, None) or 0
            final = delay == -1
        scripts = self._scripts
        if final:
            remove = job.opts.get("removeOnFail", self._o.remove_on_fail)
            keys, args = scripts.moveToFailedArgs(
                job, job.failedReason, remove, token, False, fields
            )
            script = self._finish_script
        elif delay:
            keys, args = scripts.moveToDelayedArgs(
                job.id, _now_ms(), token, delay, {"fieldsToUpdate": fields}
            )
            script = scripts.commands["moveToDelayed"]
        else:
            lifo = job.opts.get("lifo", False)
            keys, args = scripts.retryJobArgs(job.id, lifo, token, {"fieldsToUpdate": fields})
            script = scripts.commands["retryJob"]
        reply = await self._finish(script, job, keys, args)
        if isinstance(reply, int) and reply < 0:
            log.error(
                "lane.fail_refused", extra={"queue": self.queue, "job_id": job.id, "code": reply}
            )
            return
        job.attemptsMade += 1
        if final:
            job.finishedOn = int(args[1])  # the failure time the script stored
        else:
            job.delay = delay
        if final and self._on_failed is not None:
            self._on_failed(job, exc)

    async def _finish(
        self,
        script: _PipeScript,
        job: Any,
        keys: list[Arg],
        args: list[Arg],
        fetch_next_at: int = -1,
    ) -> Any:
        """Run a finishing script; resend after a dropped connection (without fetch-next).

        None if the job was finished elsewhere; other negative codes are returned.
        """
        attempt = 0
        while True:
            try:
                reply = await script(keys, args)
                break
            except (ConnectionError, OSError) as exc:
                # Unknown whether it ran: resend. A repeat answers "finished elsewhere";
                # a job its lost reply carried is adopted by the caller (see _adopt).
                if fetch_next_at >= 0:
                    args[fetch_next_at] = ""
                pause = _RETRY_S[min(attempt, len(_RETRY_S) - 1)]
                attempt += 1
                log.warning(
                    "lane.finish_resend",
                    extra={"queue": self.queue, "job_id": job.id, "error": str(exc)},
                )
                await asyncio.sleep(pause)
        if isinstance(reply, int) and reply in FINISHED_ELSEWHERE:
            level = logging.INFO if attempt else logging.WARNING
            log.log(
                level,
                "lane.finished_elsewhere",
                extra={"queue": self.queue, "job_id": job.id, "code": reply},
            )
            return None
        return reply

    # ------------------------------------------------------------ fetching

    async def _fetch(self, token: str) -> Any:
        """The next job for an idle slot (one slot fetches at a time); None to re-check."""
        async with self._fetch_lock:
            while self._fetching():
                limit_s = (self._limit_until - _now_ms()) / 1000
                if limit_s > 0:
                    await self._nap(limit_s)
                    continue
                if self._drained and not await self._wait_for_marker():
                    continue
                try:
                    raw = await self._scripts.moveToActive(token, self._view.opts)
                except (RedisError, OSError) as exc:
                    log.warning("lane.fetch_failed", extra={"queue": self.queue, "error": str(exc)})
                    await self._nap(self._o.retry_s)
                    if isinstance(exc, ConnectionError | OSError):
                        orphan = await self._adopt(token)
                        if orphan is not None:
                            return orphan
                    continue
                job = await self._next(raw, token)
                if job is not None:
                    return job
        return None

    async def _adopt(self, token: str) -> Any:
        """The job a lost fetch reply moved to active for this slot, if any.

        It is locked with the slot's token and no slot runs it. Without this it would
        wait for its lock to expire and come back through the stalled check (one stall).
        """
        for attempt, pause in enumerate(_RETRY_S * 2):
            try:
                return await self._find_orphan(token)
            except (RedisError, OSError) as exc:
                log.warning(
                    "lane.adopt_failed",
                    extra={"queue": self.queue, "error": str(exc), "attempt": attempt},
                )
                await asyncio.sleep(pause)
        return None

    async def _find_orphan(self, token: str) -> Any:
        base = self._keys[""]
        ids = await self.pipe.execute("LRANGE", self._keys["active"], 0, -1)
        for start in range(0, len(ids), 1000):
            chunk = ids[start : start + 1000]
            locks = await self.pipe.execute("MGET", *(f"{base}{i}:lock" for i in chunk))
            for job_id, lock in zip(chunk, locks, strict=True):
                if lock != token or job_id in self._locks.tracked_jobs:
                    continue
                raw = await self.pipe.execute("HGETALL", base + job_id)
                if raw:
                    log.info("lane.adopted", extra={"queue": self.queue, "job_id": job_id})
                    return await self._next([array2obj(raw), job_id, 0, 0], token)
        return None

    async def _next(self, raw: list[Any], token: str) -> Any:
        """The job of a fetch reply (moveToActive or fetch-next), noting limits and delays."""
        job_data, job_id, limit_ms, delay_until = raw
        limit_ms = max(int(limit_ms or 0), 0)
        self._limit_until = _now_ms() + limit_ms if limit_ms else 0
        if not job_data:
            if not self._drained and not limit_ms:
                self._drained = True
                self._block_until = 0
            if delay_until:
                self._block_until = max(int(delay_until), 0)
            return None
        self._drained = False
        job = Job.fromJSON(self._view, job_data, job_id)
        job.token = token
        if job.repeatJobKey:
            await self._next_iteration(job)
        return job

    async def _next_iteration(self, job: Any) -> None:
        """Materialise the next run of the job scheduler that produced `job`."""
        try:
            await self._schedulers.upsertJobScheduler(
                job.repeatJobKey,
                (job.opts or {}).get("repeat"),
                job.name,
                job.data,
                job.opts,
                override=False,
                producer_id=job.id,
            )
        except Exception:
            log.exception("lane.scheduler_failed", extra={"queue": self.queue, "job_id": job.id})

    async def _wait_for_marker(self) -> bool:
        """Block on the queue's marker; True when it is time to fetch."""
        now = _now_ms()
        if self._block_until and self._block_until <= now:
            self._block_until = 0
            return True
        if self._block_until:
            timeout = min(max((self._block_until - now) / 1000, _MIN_BLOCK_S), _MAX_BLOCK_S)
        else:
            timeout = max(self._o.drain_delay_s, _MIN_BLOCK_S)
        if self._marker_wait is None:
            command = ("BZPOPMIN", self._keys["marker"], round(timeout, 3))
            self._marker_wait = asyncio.ensure_future(self.blocking.execute(*command))
        waiting = self._marker_wait
        woken = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait(
                {waiting, woken}, timeout=timeout + 5, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            woken.cancel()
        if not waiting.done():
            if self._fetching():  # no answer long past the timeout: a dead socket
                self.blocking.drop()
            return False
        self._marker_wait = None
        try:
            reply = waiting.result()
        except (RedisError, OSError) as exc:
            if self._fetching():
                log.warning("lane.wait_failed", extra={"queue": self.queue, "error": str(exc)})
                await self._nap(self._o.retry_s)
            return False
        self._block_until = int(float(reply[2])) if reply and reply[1] else 0
        return self._block_until <= _now_ms()

    async def _nap(self, seconds: float) -> None:
        """Sleep, but wake early on pause or close."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)

    # ------------------------------------------------------------ stalled jobs

    async def _check_stalled(self) -> None:
        """bullmq's stalled-jobs script now and every stalledInterval (as Node's worker)."""
        o = self._o
        while True:
            try:
                stalled = await self._scripts.moveStalledJobsToWait(
                    o.max_stalled_count, o.stalled_interval_ms
                )
                if stalled:
                    log.warning("lane.stalled", extra={"queue": self.queue, "jobs": stalled})
            except (RedisError, OSError) as exc:
                log.warning(
                    "lane.stalled_check_failed", extra={"queue": self.queue, "error": str(exc)}
                )
            await asyncio.sleep(o.stalled_interval_ms / 1000)
