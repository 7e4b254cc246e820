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
from settler_jobs.clock import utc_now
from settler_jobs.context import JobContext
from settler_jobs.dlq import record_dead_letter
from settler_jobs.domain import RetryPolicy, failure_reason, retry_after_s
from settler_jobs.errors import JobCancelled, PermanentFailure
from settler_jobs.kinds import Execution, JobKind
from settler_jobs.metrics import Metrics
from settler_jobs.queue import ActiveJob, AttemptFailed
from settler_jobs.records import JobRecord
from settler_jobs.resources import Resources
from settler_jobs.tenants import TenantStats

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
        self._inflight: dict[tuple[str, str], asyncio.Timeout] = {}
        self._cancel_requested: set[tuple[str, str]] = set()
        self._metric_children: dict[tuple[str, str, str], tuple[Any, Any]] = {}
        self._wait_children: dict[tuple[str, str, str], Any] = {}
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
        scope = self._inflight.get((queue, job_id))
        if scope is not None and not scope.expired():
            self._cancel_requested.add((queue, job_id))
            scope.reschedule(asyncio.get_running_loop().time())

    async def run(self, kind: JobKind, active: ActiveJob) -> Any:
        """Run one attempt of `active`; raise `AttemptFailed` with the retry delay if it fails."""
        started = time.monotonic()
        tier = "unknown"
        try:
            env = envelope.parse(active.data)
            tier = env.tier.value
            self._observe_wait(kind, active, tier)
            try:
                payload = kind.parse_payload(env.payload)
            except ValueError as exc:
                raise PermanentFailure(f"invalid data for {kind.name}: {exc}") from exc
            ctx = JobContext(
                job_id=active.id,
                kind=kind.name,
                queue=active.queue,
                tenant_id=env.tenant_id,
                tier=env.tier,
                priority=env.priority or kind.priority,
                attempt=active.attempts_made + 1,
                max_attempts=active.max_attempts,
                log=logging.LoggerAdapter(log, {"job_id": active.id, "kind": kind.name}),
                resources=self.resources,
                report_progress=active.report_progress,
            )
            timeout = env.timeout_s or kind.timeout_s
            result = await self._execute(kind, payload, ctx, active, timeout)
        except Exception as exc:
            raise self._failed(kind, active, exc, tier, started) from exc
        self._account(kind, active, "completed", started)
        completions, duration = self._completed_metrics(active.queue, kind.name, tier)
        completions.inc()
        duration.observe(time.monotonic() - started)
        return result

    async def on_dead(self, job: JobRecord) -> None:
        """Keep a job that exhausted its attempts in the dead-letter queue."""
        try:
            if await record_dead_letter(self._sessions, job):
                self.metrics.dead_letters.labels(job.queue, job.kind).inc()
        except Exception:
            log.exception("dlq.record_failed", extra={"job_id": job.id})

    def _completed_metrics(self, queue: str, kind: str, tier: str) -> tuple[Any, Any]:
        """The completion counter and duration histogram of these labels (cached)."""
        key = (queue, kind, tier)
        found = self._metric_children.get(key)
        if found is None:
            found = (
                self.metrics.job_completions.labels(queue, kind, tier),
                self.metrics.job_duration.labels(queue, kind, tier, "completed"),
            )
            self._metric_children[key] = found
        return found

    async def _execute(
        self, kind: JobKind, payload: Any, ctx: JobContext, active: ActiveJob, timeout: float
    ) -> Any:
        # The handler runs in the lane slot's own task under a timeout scope: no task per
        # job. A cancel request moves the scope's deadline to now (see `cancel`).
        key = (active.queue, active.id)
        scope = asyncio.timeout(timeout)
        self._inflight[key] = scope
        try:
            async with scope:
                return await self._call(kind, payload, ctx)
        except TimeoutError:
            if not scope.expired():
                raise  # the handler's own TimeoutError, not this attempt's deadline
            if key in self._cancel_requested:
                raise JobCancelled("cancelled on request while running") from None
            raise TimeoutError(f"attempt timed out after {timeout:g}s") from None
        finally:
            self._inflight.pop(key, None)
            self._cancel_requested.discard(key)

    def _call(self, kind: JobKind, payload: Any, ctx: JobContext) -> Awaitable[Any]:
        loop = asyncio.get_running_loop()
        if kind.execution is Execution.THREAD:
            return loop.run_in_executor(self._threads, kind.handler, payload, ctx)
        if kind.execution is Execution.PROCESS:
            return loop.run_in_executor(self.resources.process_pool, kind.handler, payload)
        result: Awaitable[Any] = kind.handler(payload, ctx)
        return result

    def _failed(
        self, kind: JobKind, active: ActiveJob, exc: Exception, tier: str, started: float
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
        self._account(kind, active, outcome, started, failure_reason(exc))
        labels = (active.queue, kind.name, tier)
        self.metrics.job_failures.labels(*labels, outcome).inc()
        self.metrics.job_duration.labels(*labels, "failed").observe(time.monotonic() - started)
        log.info(
            "job.attempt_failed",
            extra={"job_id": active.id, "kind": kind.name, "attempt": attempt, "outcome": outcome},
        )
        return AttemptFailed(failure_reason(exc), delay)

    def _account(
        self, kind: JobKind, active: ActiveJob, outcome: str, started: float, error: str = ""
    ) -> None:
        """Per-tenant accounting (memory only; written by the stats loop); never fails a job."""
        try:
            tenant = envelope.tenant_of(active.data)
            if tenant is not None:
                self._stats.record(
                    tenant,
                    kind.name,
                    "failed" if outcome == "dead" else outcome,
                    job_id=active.id,
                    attempt=active.attempts_made + 1,
                    duration_ms=round((time.monotonic() - started) * 1000),
                    at=utc_now(),
                    error=error,
                )
        except Exception:
            log.exception("stats.record_failed", extra={"job_id": active.id})

    def _observe_wait(self, kind: JobKind, active: ActiveJob, tier: str) -> None:
        if active.attempts_made == 0:
            waited = max(0.0, (active.processed_at_ms - active.created_at_ms) / 1000)
            key = (active.queue, kind.name, tier)
            child = self._wait_children.get(key)
            if child is None:
                child = self._wait_children[key] = self.metrics.job_wait.labels(*key)
            child.observe(waited)


def _with_base_delay(kind: JobKind, delay_ms: int) -> RetryPolicy:
    base = delay_ms / 1000
    return replace(kind.retry, base_delay_s=base, max_delay_s=max(kind.retry.max_delay_s, base))
