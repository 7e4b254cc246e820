"""One attempt of a job: parse the envelope, run the handler, record the outcome.

The handler runs on the loop, in a thread, or in a process under the attempt's timeout;
a cancel request cuts it short. Failures become a retry delay or a dead letter, and
every outcome is counted in the metrics and the per-tenant stats.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from settler_jobs import envelope
from settler_jobs.context import JobContext, new_context
from settler_jobs.dlq import record_dead_letter
from settler_jobs.domain import RetryPolicy, failure_reason, retry_after_s
from settler_jobs.errors import JobCancelled, PermanentFailure
from settler_jobs.kinds import Execution, JobKind
from settler_jobs.metrics import Metrics
from settler_jobs.queue import ActiveJob, AttemptFailed
from settler_jobs.records import JobRecord
from settler_jobs.resources import Resources
from settler_jobs.tenants import TenantStats
from settler_jobs.worker.deadlines import Deadline, Deadlines

log = logging.getLogger("settler_jobs.worker.runtime")  # the runtime's log lines, as before


class Attempts:
    """Runs the attempts of the lanes' jobs and tracks the ones in flight."""

    def __init__(
        self,
        resources: Resources,
        sessions: async_sessionmaker[AsyncSession],
        metrics: Metrics,
        stats: TenantStats,
        rng: random.Random,
        threads: int,
    ) -> None:
        self.resources = resources
        self.metrics = metrics
        self._sessions = sessions
        self._stats = stats
        self._rng = rng
        self._inflight: dict[tuple[str, str], Deadline] = {}
        self._deadlines = Deadlines()
        self._cancel_requested: set[tuple[str, str]] = set()
        self._tally = metrics.tally
        self._threads = ThreadPoolExecutor(threads, "settler-handler")

    @property
    def running(self) -> int:
        """How many attempts are in flight."""
        return len(self._inflight)

    def close(self) -> None:
        """Stop the handler threads without waiting for them."""
        self._threads.shutdown(wait=False, cancel_futures=True)

    def cancel(self, queue: str, job_id: str) -> None:
        """Cut the running attempt of this job short (no-op if it is not running here)."""
        deadline = self._inflight.get((queue, job_id))
        if deadline is not None and not (deadline.expired or deadline.done):
            self._cancel_requested.add((queue, job_id))
            self._deadlines.expire(deadline)

    async def run(self, kind: JobKind, active: ActiveJob) -> Any:
        """Run one attempt of `active`; raise `AttemptFailed` with the retry delay if it fails."""
        started = time.monotonic()
        tier = "unknown"
        tenant = None
        try:
            tenant, tier_, _, priority, timeout, payload = envelope.read(active.data)
            tier = tier_.value
            if active.attempts_made == 0:
                self._observe_wait(kind, active, tier)
            if kind.payload_model is not None:
                try:
                    payload = kind.parse_payload(payload)
                except ValueError as exc:
                    raise PermanentFailure(f"invalid data for {kind.name}: {exc}") from exc
            ctx = new_context(
                active.id,
                kind.name,
                active.queue,
                tenant,
                tier_,
                priority or kind.priority,
                active.attempts_made + 1,
                active.max_attempts,
                logging.LoggerAdapter(log, {"job_id": active.id, "kind": kind.name}),
                self.resources,
                active.report_progress,
            )
            result = await self._execute(kind, payload, ctx, active, timeout or kind.timeout_s)
        except Exception as exc:
            raise self._failed(kind, active, exc, tier, started, tenant) from exc
        elapsed = time.monotonic() - started
        self._account(kind, active, "completed", elapsed, tenant)
        self._tally.completed((active.queue, kind.name, tier), elapsed)
        return result

    async def on_dead(self, job: JobRecord) -> None:
        """Keep a job that exhausted its attempts in the dead-letter queue."""
        try:
            if await record_dead_letter(self._sessions, job):
                self.metrics.dead_letters.labels(job.queue, job.kind).inc()
        except Exception:
            log.exception("dlq.record_failed", extra={"job_id": job.id})

    async def _execute(
        self, kind: JobKind, payload: Any, ctx: JobContext, active: ActiveJob, timeout: float
    ) -> Any:
        # The handler runs in the lane slot's own task, under a deadline that cancels
        # the task when it passes (worker/deadlines.py): no task or timer per job. A
        # cancel request expires the deadline at once (see `cancel`).
        key = (active.queue, active.id)
        deadlines = self._deadlines
        deadline = deadlines.start(timeout)
        self._inflight[key] = deadline
        try:
            return await self._call(kind, payload, ctx)
        except asyncio.CancelledError:
            if not deadlines.finish(deadline):
                raise  # not (only) our deadline: a lane interrupt or shutdown
            raise self._expired(key, timeout) from None
        except TimeoutError:
            deadlines.finish(deadline)
            if not deadline.expired:
                raise  # the handler's own TimeoutError, not this attempt's deadline
            raise self._expired(key, timeout) from None
        finally:
            deadlines.finish(deadline)
            self._inflight.pop(key, None)
            if self._cancel_requested:
                self._cancel_requested.discard(key)

    def _expired(self, key: tuple[str, str], timeout: float) -> Exception:
        if key in self._cancel_requested:
            return JobCancelled("cancelled on request while running")
        return TimeoutError(f"attempt timed out after {timeout:g}s")

    def _call(self, kind: JobKind, payload: Any, ctx: JobContext) -> Awaitable[Any]:
        if kind.execution is Execution.ASYNC:
            result: Awaitable[Any] = kind.handler(payload, ctx)
            return result
        loop = asyncio.get_running_loop()
        if kind.execution is Execution.THREAD:
            return loop.run_in_executor(self._threads, kind.handler, payload, ctx)
        return loop.run_in_executor(self.resources.process_pool, kind.handler, payload)

    def _failed(
        self,
        kind: JobKind,
        active: ActiveJob,
        exc: Exception,
        tier: str,
        started: float,
        tenant: str | None,
    ) -> AttemptFailed:
        attempt = active.attempts_made + 1
        policy = kind.retry
        if active.backoff_delay_ms is not None:
            policy = _with_base_delay(kind, active.backoff_delay_ms)
        delay = retry_after_s(exc, attempt, active.max_attempts, policy, self._rng)
        outcome = (
            "cancelled"
            if isinstance(exc, JobCancelled)
            else ("dead" if delay is None else "retried")
        )
        elapsed = time.monotonic() - started
        self._account(kind, active, outcome, elapsed, tenant, failure_reason(exc))
        labels = (active.queue, kind.name, tier)
        self.metrics.job_failures.labels(*labels, outcome).inc()
        self.metrics.job_duration.labels(*labels, "failed").observe(elapsed)
        log.info(
            "job.attempt_failed",
            extra={"job_id": active.id, "kind": kind.name, "attempt": attempt, "outcome": outcome},
        )
        return AttemptFailed(failure_reason(exc), delay)

    def _account(
        self,
        kind: JobKind,
        active: ActiveJob,
        outcome: str,
        elapsed: float,
        tenant: str | None,
        error: str = "",
    ) -> None:
        """Per-tenant accounting (memory only; written by the stats loop); never fails a job.

        `tenant` is the envelope's; None if the envelope was refused (then the stored
        tenant id is used as it is, if it is a string).
        """
        try:
            if tenant is None:
                tenant = envelope.tenant_of(active.data)
            if tenant is not None:
                self._stats.add(
                    tenant,
                    kind.name,
                    "failed" if outcome == "dead" else outcome,
                    active.id,
                    active.attempts_made + 1,
                    round(elapsed * 1000),
                    int(time.time() * 1000),
                    error,
                )
        except Exception:
            log.exception("stats.record_failed", extra={"job_id": active.id})

    def _observe_wait(self, kind: JobKind, active: ActiveJob, tier: str) -> None:
        waited = max(0.0, (active.processed_at_ms - active.created_at_ms) / 1000)
        self._tally.waited((active.queue, kind.name, tier), waited)


def _with_base_delay(kind: JobKind, delay_ms: int) -> RetryPolicy:
    base = delay_ms / 1000
    return replace(kind.retry, base_delay_s=base, max_delay_s=max(kind.retry.max_delay_s, base))
