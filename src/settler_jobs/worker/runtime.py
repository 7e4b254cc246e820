"""The worker runtime: every lane of the selected kinds, in one process.

Per job: read the envelope -> validate the payload -> run the handler (on the loop, in
a thread, or in a process) under the attempt's timeout -> record the outcome. Failures
become a retry delay or a dead letter; BullMQ's locks and stalled-job check make a
crashed worker's jobs run elsewhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import random
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

from redis.exceptions import RedisError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from settler_jobs import envelope, heartbeat
from settler_jobs.alerts import depth_history
from settler_jobs.alerts import evaluator as alerts
from settler_jobs.alerts import probes as alert_probes
from settler_jobs.clock import utc_now
from settler_jobs.config import Settings
from settler_jobs.context import JobContext
from settler_jobs.dlq import capture as dead_letters
from settler_jobs.domain import RetryPolicy, failure_reason, retry_after_s
from settler_jobs.errors import JobCancelled, PermanentFailure, QueueUnavailable
from settler_jobs.kinds import Execution, JobKind, PeriodicStep, Registry
from settler_jobs.metrics import Metrics
from settler_jobs.queue import ActiveJob, AttemptFailed, JobQueue, LaneWorker
from settler_jobs.queue import where as _where
from settler_jobs.records import JobRecord
from settler_jobs.redis_server import redis_client
from settler_jobs.resources import Resources
from settler_jobs.scheduling import plan as schedules
from settler_jobs.tenants.stats import TenantStats

log = logging.getLogger(__name__)
_DEPTH_INTERVAL_S = 5.0
_STOP_TIMEOUT_S = 10.0


class WorkerRuntime:
    """Runs the shared and express lanes of each kind until stopped."""

    def __init__(
        self,
        settings: Settings,
        registry: Registry,
        redis_url: str,
        sessions: async_sessionmaker[AsyncSession],
        metrics: Metrics | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.metrics = metrics or Metrics()
        self._redis_url = redis_url
        self._sessions = sessions
        self._rng = rng or random.Random()
        self._queue = JobQueue(redis_client(redis_url, settings), registry, settings)
        self.resources = Resources(settings, sessions, self._queue, self._rng, self._queue)
        self._stats = TenantStats(settings.queue_prefix, settings.stats_recent_jobs)
        self._lanes: list[LaneWorker] = []
        self._inflight: dict[tuple[str, str], asyncio.Timeout] = {}
        self._cancel_requested: set[tuple[str, str]] = set()
        self._metric_children: dict[tuple[str, str, str], tuple[Any, Any]] = {}
        self._wait_children: dict[tuple[str, str, str], Any] = {}
        self._background: list[asyncio.Task[None]] = []
        self._threads = ThreadPoolExecutor(settings.blocking_threads, "settler-handler")
        self.worker_id = heartbeat.new_worker_id()
        self._beats = redis_client(redis_url, settings, max_connections=2)
        self._started_ms = heartbeat.now_ms()

    @property
    def lanes(self) -> list[str]:
        """Queue names this runtime serves."""
        return [lane.queue for lane in self._lanes]

    async def start(self) -> None:
        """Open every lane and the background loops (cancel listener, DLQ sweep, depth,
        per-tenant stats), and register the schedules of the served kinds."""
        for kind in self.registry:
            for queue, slots in (
                (kind.queue, kind.concurrency),
                (kind.express_queue, self.settings.express_concurrency),
            ):
                client = redis_client(
                    self._redis_url, self.settings, max_connections=slots + 4, patient=True
                )
                lane = LaneWorker(
                    queue,
                    kind.name,
                    functools.partial(self._run, kind),
                    concurrency=slots,
                    client=client,
                    settings=self.settings,
                    on_dead=self._on_dead,
                )
                lane.start()
                self._lanes.append(lane)
        loops = (
            self._listen_for_cancels,
            self._sweep_loop,
            self._depth_loop,
            self._stats_loop,
            self._beat_loop,
            self._alerts_loop,
        )
        for loop in (*loops, self._register_schedules):
            self._background.append(asyncio.create_task(loop(), name=loop.__name__))
        for kind in self.registry:
            for step in kind.periodic:
                name = f"{kind.name}:{step.__name__}"
                task = asyncio.create_task(self._periodic(step), name=name)
                self._background.append(task)

    async def stop(self, grace_s: float | None = None) -> bool:
        """Stop fetching; give in-flight jobs `grace_s` to finish. False if some were cut."""
        grace = self.settings.shutdown_grace_s if grace_s is None else grace_s
        results = await asyncio.gather(*(lane.close(grace) for lane in self._lanes))
        for task in self._background:
            task.cancel()
        if self._background:
            # Bounded: a loop cancelled mid-reconnect must not hold the shutdown.
            _, stuck = await asyncio.wait(self._background, timeout=_STOP_TIMEOUT_S)
            for task in stuck:
                log.warning("worker.stop_timeout", extra={"task": _where(task)})
        self._background.clear()
        self._lanes.clear()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._stats.flush(self._queue.client), _STOP_TIMEOUT_S)
        self._threads.shutdown(wait=False, cancel_futures=True)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.resources.aclose(), _STOP_TIMEOUT_S)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._queue.close(), _STOP_TIMEOUT_S)
        with contextlib.suppress(Exception):
            prefix = self.settings.queue_prefix
            await asyncio.wait_for(heartbeat.forget(self._beats, prefix, self.worker_id), 2.0)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._beats.aclose(), _STOP_TIMEOUT_S)
        return all(results)

    def interrupt(self) -> None:
        """Cut in-flight jobs short now (a second Ctrl-C); their locks expire and they rerun."""
        for lane in self._lanes:
            lane.interrupt()

    async def _run(self, kind: JobKind, active: ActiveJob) -> Any:
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
        # job. A cancel request moves the scope's deadline to now (see _cancel_once).
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
        """Per-tenant accounting (memory only; written by `_stats_loop`); never fails a job."""
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

    async def _on_dead(self, job: JobRecord) -> None:
        try:
            if await dead_letters.record(self._sessions, job):
                self.metrics.dead_letters.labels(job.queue, job.kind).inc()
        except Exception:
            log.exception("dlq.record_failed", extra={"job_id": job.id})

    async def _listen_for_cancels(self) -> None:
        await _forever(self._cancel_once)

    async def _cancel_once(self) -> None:
        async for queue, job_id in self._queue.cancellation_requests():
            scope = self._inflight.get((queue, job_id))
            if scope is not None and not scope.expired():
                self._cancel_requested.add((queue, job_id))
                scope.reschedule(asyncio.get_running_loop().time())

    async def _sweep_loop(self) -> None:
        async def once() -> None:
            new = await dead_letters.sweep(self._queue, self._sessions)
            if new:
                log.warning("dlq.swept", extra={"new_entries": new})
            await asyncio.sleep(self.settings.dlq_sweep_interval_s)

        await _forever(once)

    async def _periodic(self, step: PeriodicStep) -> None:
        async def once() -> None:
            await asyncio.sleep(await step(self.resources))

        await _forever(once)

    async def _stats_loop(self) -> None:
        async def once() -> None:
            await self._stats.flush(self._queue.client)
            await asyncio.sleep(self.settings.stats_flush_interval_s)

        await _forever(once)

    async def _register_schedules(self) -> None:
        # Every process registers at start; unchanged schedulers are left as they are.
        while True:
            try:
                await schedules.register(self._queue, self.settings, self.registry)
                return
            except (QueueUnavailable, RedisError, OSError) as exc:
                log.warning("schedules.register_retry", extra={"error": str(exc)})
                await asyncio.sleep(1.0)
            except Exception:
                log.exception("schedules.register_failed")
                await asyncio.sleep(30.0)

    def info(self) -> heartbeat.WorkerInfo:
        """What this process announces in its heartbeat."""
        return heartbeat.WorkerInfo(
            id=self.worker_id,
            host=heartbeat.host_name(),
            pid=os.getpid(),
            lanes=tuple(self.lanes),
            concurrency=sum(
                kind.concurrency + self.settings.express_concurrency for kind in self.registry
            ),
            running=len(self._inflight),
            started_at_ms=self._started_ms,
            beat_at_ms=heartbeat.now_ms(),
        )

    async def _beat_loop(self) -> None:
        interval = self.settings.worker_heartbeat_s

        async def once() -> None:
            await heartbeat.beat(self._beats, self.settings.queue_prefix, self.info(), interval)
            await asyncio.sleep(interval)

        await _forever(once)

    async def _depth_loop(self) -> None:
        async def once() -> None:
            all_counts = await self._queue.counts()
            prefix = self.settings.queue_prefix
            await depth_history.record(self._queue.client, prefix, all_counts, time.time())
            for counts in all_counts:
                for state, value in counts.counts.items():
                    self.metrics.queue_depth.labels(counts.queue, state).set(value)
                age = (counts.oldest_waiting_ms or 0) / 1000
                self.metrics.oldest_waiting.labels(counts.queue).set(age)
            await asyncio.sleep(_DEPTH_INTERVAL_S)

        await _forever(once)

    async def _alerts_loop(self) -> None:
        """Alerting gauges every `alert_interval_s`; the lease holder also evaluates alerts."""
        notifier = alerts.Notifier(self.settings, self._queue)

        async def probe() -> alert_probes.Snapshot:
            snapshot = await alert_probes.take(
                self._queue,
                self._sessions,
                self._queue.client,
                self.settings,
                worker_id=self.worker_id,
            )
            alert_probes.export(snapshot, self.metrics)
            return snapshot

        async def once() -> None:
            client = self._queue.client
            await alerts.cycle(probe, client, self.settings, self.worker_id, notifier)
            await asyncio.sleep(self.settings.alert_interval_s)

        await _forever(once)


def _with_base_delay(kind: JobKind, delay_ms: int) -> RetryPolicy:
    base = delay_ms / 1000
    return replace(kind.retry, base_delay_s=base, max_delay_s=max(kind.retry.max_delay_s, base))


async def _forever(step: Callable[[], Awaitable[None]]) -> None:
    """Run `step` until cancelled; log and back off on errors (Redis may come back)."""
    while True:
        try:
            await step()
        except asyncio.CancelledError:
            raise
        except (QueueUnavailable, RedisError, OSError) as exc:
            log.warning(
                "worker.redis_unavailable", extra={"step": step.__qualname__, "error": str(exc)}
            )
            await asyncio.sleep(1.0)
        except Exception:
            log.exception("worker.background_error", extra={"step": step.__qualname__})
            await asyncio.sleep(1.0)
