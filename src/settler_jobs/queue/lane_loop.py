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

The loop's wiring and shared state are in lane_base.py, its fetching in lane_fetch.py,
its per-job bullmq plumbing (job build, finish arguments) in lane_jobs.py.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any, Final

from bullmq import UnrecoverableError
from bullmq.backoffs import Backoffs
from bullmq.custom_errors import DelayedError, WaitingChildrenError
from redis.exceptions import ConnectionError, RedisError

from settler_jobs.queue.fair import lua
from settler_jobs.queue.lane_base import _RETRY_S, LaneOptions, _now_ms, _PipeScript
from settler_jobs.queue.lane_fetch import LaneFetcher
from settler_jobs.queue.lane_jobs import next_job_data
from settler_jobs.queue.pipe import Arg, Head

__all__ = ["FINISHED_ELSEWHERE", "LaneLoop", "LaneOptions"]

log = logging.getLogger(__name__)
# Finish-script codes meaning "not ours any more": no job, no lock, not active, other lock.
FINISHED_ELSEWHERE: Final = frozenset({-1, -2, -3, -6})


class LaneLoop(LaneFetcher):
    """Runs one queue's jobs through `processor(job, token)` in `concurrency` slots."""

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
            keys, args = self._completion_args(job, result, keep, token, fetch)
        except (TypeError, ValueError) as exc:  # a result JSON cannot hold
            await self._fail(job, token, exc)
            return None
        # Its keys start with the lane's 11 fixed finish keys (bullmq's builder's too),
        # packed once in `_finish_head`.
        reply = await self._finish(self._finish_script, job, keys, args, 5, self._finish_head)
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
            return await self._next(next_job_data(reply), token)
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
        head: Head | None = None,
    ) -> Any:
        """Run a finishing script; resend after a dropped connection (without fetch-next).

        None if the job was finished elsewhere; other negative codes are returned.
        """
        attempt = 0
        while True:
            try:
                reply = await script(keys, args, head=head)
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

    # ------------------------------------------------------------ stalled jobs

    async def _publish_caps(self) -> None:
        """Write the lane's per-tier caps where the patched pop reads them (none: delete)."""
        caps = {t: n for t, n in (self._o.tenant_caps or {}).items() if n > 0}
        key = self._keys[""] + "sf:caps"
        try:
            await self.pipe.execute("DEL", key)
            if caps:
                await self.pipe.execute("HSET", key, *(x for kv in caps.items() for x in kv))
            else:
                base = self._keys[""]
                keys = (self._keys["prioritized"], base + "sf:parked")
                await self.pipe.execute("EVAL", lua("unpark_all"), 2, *keys, base)
        except (RedisError, OSError) as exc:
            log.warning("lane.caps_failed", extra={"queue": self.queue, "error": str(exc)})
        finally:
            self._caps_ready.set()  # fetch either way; the pop then runs uncapped

    async def _check_stalled(self) -> None:
        """bullmq's stalled-jobs script now and every stalledInterval (as Node's worker)."""
        o = self._o
        await self._publish_caps()  # none: deleted, so other workers' pops run uncapped too
        self._caps_ready.set()
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
