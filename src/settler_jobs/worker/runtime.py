"""The worker runtime: every lane of the selected kinds, in one process.

Per job: read the envelope -> validate the payload -> run the handler (on the loop, in
a thread, or in a process) under the attempt's timeout -> record the outcome (see
`worker.execute`). Failures become a retry delay or a dead letter; BullMQ's locks and
stalled-job check make a crashed worker's jobs run elsewhere. The periodic work of the
process (DLQ sweep, depth, stats, heartbeats, alerts) runs in `worker.background`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import random
import time

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from settler_jobs import heartbeat
from settler_jobs.config import Settings
from settler_jobs.errors import ConfigError
from settler_jobs.kinds import JobKind, Registry
from settler_jobs.metrics import Metrics
from settler_jobs.queue import AnyJobQueue, JobQueue, LaneWorker
from settler_jobs.queue import where as _where
from settler_jobs.queue.pg import PgJobQueue, PgLaneWorker, PgPool
from settler_jobs.redis_server import redis_client
from settler_jobs.resources import Resources
from settler_jobs.shared_state import shared_state
from settler_jobs.tenants import TenantStats
from settler_jobs.worker.background import Background
from settler_jobs.worker.execute import Attempts

log = logging.getLogger(__name__)
_STOP_TIMEOUT_S = 10.0


class WorkerRuntime:
    """Runs the shared and express lanes of each kind until stopped."""

    def __init__(
        self,
        settings: Settings,
        registry: Registry,
        redis_url: str | None,
        sessions: async_sessionmaker[AsyncSession],
        metrics: Metrics | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.metrics = metrics or Metrics()
        self._redis_url = redis_url or ""
        if redis_url is None and settings.queue_backend == "redis":
            raise ConfigError("the Redis queue backend needs a Redis URL")
        self._sessions = sessions
        self._rng = rng or random.Random()
        # SETTLER_QUEUE_BACKEND=postgres: no Redis connection at all in this process.
        self._pg: PgJobQueue | None = None
        self._queue: AnyJobQueue
        redis = None
        if settings.queue_backend == "postgres":
            lanes = 2 * len(list(registry))
            pool = PgPool(settings.queue_dsn, settings.queue_schema, size=min(4 + lanes, 16))
            self._pg = PgJobQueue(registry, settings, pool)
            self._queue = self._pg
        else:
            self._queue = JobQueue(redis_client(self._redis_url, settings), registry, settings)
            redis = self._queue.client
        self._state = shared_state(settings, redis, sessions)
        self.resources = Resources(
            settings, sessions, self._queue, self._rng, self._queue, self._state
        )
        self._stats = TenantStats(settings.queue_prefix, settings.stats_recent_jobs)
        threads = settings.blocking_threads
        self._attempts = Attempts(
            self.resources, sessions, self.metrics, self._stats, self._rng, threads
        )
        self._lanes: list[LaneWorker | PgLaneWorker] = []
        self._background: list[asyncio.Task[None]] = []
        self.worker_id = heartbeat.new_worker_id()
        # Heartbeats get their own small Redis pool: a busy queue client must not delay them.
        self._beats_client = (
            redis_client(self._redis_url, settings, max_connections=2)
            if settings.queue_backend == "redis"
            else None
        )
        self._beats = shared_state(settings, self._beats_client, sessions)
        self._started_ms = heartbeat.now_ms()

    @property
    def lanes(self) -> list[str]:
        """Queue names this runtime serves."""
        return [lane.queue for lane in self._lanes]

    async def start(self) -> None:
        """Open every lane and the background loops (cancel listener, DLQ sweep, depth,
        per-tenant stats), and register the schedules of the served kinds."""
        if self._pg is not None:
            await self._pg.ready()
        for kind in self.registry:
            for queue, slots in (
                (kind.queue, kind.concurrency),
                (kind.express_queue, self.settings.express_concurrency),
            ):
                lane = self._lane(kind, queue, slots)
                lane.start()
                self._lanes.append(lane)
        background = Background(
            settings=self.settings,
            registry=self.registry,
            queue=self._queue,
            sessions=self._sessions,
            resources=self.resources,
            metrics=self.metrics,
            stats=self._stats,
            attempts=self._attempts,
            state=self._state,
            beats=self._beats,
            worker_id=self.worker_id,
            info=self.info,
        )
        self._background.extend(background.start())

    def _lane(self, kind: JobKind, queue: str, slots: int) -> LaneWorker | PgLaneWorker:
        """One lane of `kind` on this runtime's backend (a Redis lane has its own pool)."""
        run = functools.partial(self._attempts.run, kind)
        if self._pg is not None:
            return self._pg.lane(
                queue, kind.name, run, concurrency=slots, on_dead=self._attempts.on_dead
            )
        client = redis_client(
            self._redis_url, self.settings, max_connections=slots + 4, patient=True
        )
        return LaneWorker(
            queue,
            kind.name,
            run,
            concurrency=slots,
            client=client,
            settings=self.settings,
            on_dead=self._attempts.on_dead,
        )

    async def stop(self, grace_s: float | None = None) -> bool:
        """Stop fetching; give in-flight jobs `grace_s` to finish. False if some were cut."""
        grace = self.settings.shutdown_grace_s if grace_s is None else grace_s
        results = await asyncio.gather(*(lane.close(grace) for lane in self._lanes))
        stuck = await _cancel_all(self._background, _STOP_TIMEOUT_S)
        for task in stuck:
            log.warning("worker.stop_timeout", extra={"task": _where(task)})
        self._background.clear()
        self._lanes.clear()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._stats.flush(self._state), _STOP_TIMEOUT_S)
        self._attempts.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.resources.aclose(), _STOP_TIMEOUT_S)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._queue.close(), _STOP_TIMEOUT_S)
        with contextlib.suppress(Exception):
            prefix = self.settings.queue_prefix
            await asyncio.wait_for(heartbeat.forget(self._beats, prefix, self.worker_id), 2.0)
        if self._beats_client is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._beats_client.aclose(), _STOP_TIMEOUT_S)
        return all(results)

    def interrupt(self) -> None:
        """Cut in-flight jobs short now (a second Ctrl-C); their locks expire and they rerun."""
        for lane in self._lanes:
            lane.interrupt()

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
            running=self._attempts.running,
            started_at_ms=self._started_ms,
            beat_at_ms=heartbeat.now_ms(),
        )


async def _cancel_all(tasks: list[asyncio.Task[None]], timeout_s: float) -> set[asyncio.Task[None]]:
    """Cancel `tasks` and wait for them, at most `timeout_s`; the ones still running.

    The cancel is repeated: a library that finishes a timeout scope at the moment the
    cancel arrives can swallow it (asyncio.wait_for and async_timeout before Python 3.12),
    and the loop would then run on until the deadline.
    """
    pending = set(tasks)
    deadline = time.monotonic() + timeout_s
    while pending and (left := deadline - time.monotonic()) > 0:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=min(0.25, left))
    return pending
