"""The worker's background loops: cancel requests, DLQ sweep, schedule registration,
queue depth, per-tenant stats, heartbeats, alerts and the kinds' periodic steps.

Each loop runs until cancelled; a failing step is logged and retried after a second
(Redis or the database may come back). The worker that writes a minute's depth sample
also purges expired shared state (a no-op on Redis, which expires keys itself).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from redis.exceptions import RedisError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from settler_jobs import heartbeat
from settler_jobs.alerts import (
    Notifier,
    Snapshot,
    alert_cycle,
    export_snapshot,
    record_depth,
    take_snapshot,
)
from settler_jobs.config import Settings
from settler_jobs.dlq import sweep_dead_letters
from settler_jobs.errors import QueueUnavailable
from settler_jobs.kinds import PeriodicStep, Registry
from settler_jobs.metrics import Metrics
from settler_jobs.queue import AnyJobQueue
from settler_jobs.resources import Resources
from settler_jobs.scheduling import register_schedules
from settler_jobs.shared_state import SharedState
from settler_jobs.tenants import TenantStats
from settler_jobs.worker.execute import Attempts

log = logging.getLogger("settler_jobs.worker.runtime")  # the runtime's log lines, as before
_DEPTH_INTERVAL_S = 5.0


@dataclass
class Background:
    """What the loops of one worker process share."""

    settings: Settings
    registry: Registry
    queue: AnyJobQueue
    sessions: async_sessionmaker[AsyncSession]
    resources: Resources
    metrics: Metrics
    stats: TenantStats
    attempts: Attempts
    state: SharedState
    beats: SharedState
    """The shared state again, on its own small Redis pool there."""
    worker_id: str
    info: Callable[[], heartbeat.WorkerInfo]

    def start(self) -> list[asyncio.Task[None]]:
        """Start every loop, the schedule registration and the kinds' periodic steps."""
        loops = (
            self._listen_for_cancels,
            self._sweep_loop,
            self._depth_loop,
            self._stats_loop,
            self._beat_loop,
            self._alerts_loop,
        )
        tasks = [
            asyncio.create_task(loop(), name=loop.__name__)
            for loop in (*loops, self._register_schedules)
        ]
        for kind in self.registry:
            for step in kind.periodic:
                name = f"{kind.name}:{step.__name__}"
                tasks.append(asyncio.create_task(self._periodic(step), name=name))
        return tasks

    async def _listen_for_cancels(self) -> None:
        await _forever(self._cancel_once)

    async def _cancel_once(self) -> None:
        async for queue, job_id in self.queue.cancellation_requests():
            self.attempts.cancel(queue, job_id)

    async def _sweep_loop(self) -> None:
        async def once() -> None:
            new = await sweep_dead_letters(self.queue, self.sessions)
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
            await self.stats.flush(self.state)
            await asyncio.sleep(self.settings.stats_flush_interval_s)

        await _forever(once)

    async def _register_schedules(self) -> None:
        # Every process registers at start; unchanged schedulers are left as they are.
        while True:
            try:
                await register_schedules(self.queue, self.settings, self.registry)
                return
            except (QueueUnavailable, RedisError, OSError) as exc:
                log.warning("schedules.register_retry", extra={"error": str(exc)})
                await asyncio.sleep(1.0)
            except Exception:
                log.exception("schedules.register_failed")
                await asyncio.sleep(30.0)

    async def _beat_loop(self) -> None:
        interval = self.settings.worker_heartbeat_s

        async def once() -> None:
            await heartbeat.beat(self.beats, self.settings.queue_prefix, self.info(), interval)
            await asyncio.sleep(interval)

        await _forever(once)

    async def _depth_loop(self) -> None:
        async def once() -> None:
            all_counts = await self.queue.counts()
            prefix = self.settings.queue_prefix
            if await record_depth(self.state, prefix, all_counts, time.time()):
                purged = await self.state.purge_expired()
                if purged:
                    log.info("shared_state.purged", extra={"entries": purged})
            for counts in all_counts:
                for state, value in counts.counts.items():
                    self.metrics.queue_depth.labels(counts.queue, state).set(value)
                age = (counts.oldest_waiting_ms or 0) / 1000
                self.metrics.oldest_waiting.labels(counts.queue).set(age)
            for tier, figures in (await self.queue.tier_totals()).items():
                self.metrics.fair_active.labels(tier).set(figures["active"])
                self.metrics.fair_cap_hits.labels(tier).set(figures["cap_hits"])
                self.metrics.fair_quota_refusals.labels(tier).set(figures["quota_refusals"])
            await asyncio.sleep(_DEPTH_INTERVAL_S)

        await _forever(once)

    async def _alerts_loop(self) -> None:
        """Alerting gauges every `alert_interval_s`; the lease holder also evaluates alerts."""
        notifier = Notifier(self.settings, self.queue)

        async def probe() -> Snapshot:
            snapshot = await take_snapshot(
                self.queue,
                self.sessions,
                self.state,
                self.settings,
                worker_id=self.worker_id,
            )
            export_snapshot(snapshot, self.metrics)
            return snapshot

        async def once() -> None:
            await alert_cycle(probe, self.state, self.settings, self.worker_id, notifier)
            await asyncio.sleep(self.settings.alert_interval_s)

        await _forever(once)


async def _forever(step: Callable[[], Awaitable[None]]) -> None:
    """Run `step` until cancelled; log and back off on errors (the queue store may come back)."""
    while True:
        try:
            await step()
        except asyncio.CancelledError:
            raise
        except (QueueUnavailable, RedisError, OSError) as exc:
            log.warning(
                "worker.queue_unavailable", extra={"step": step.__qualname__, "error": str(exc)}
            )
            await asyncio.sleep(1.0)
        except Exception:
            log.exception("worker.background_error", extra={"step": step.__qualname__})
            await asyncio.sleep(1.0)
