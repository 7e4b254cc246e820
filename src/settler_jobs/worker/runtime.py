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
from settler_jobs.kinds import PeriodicStep, Registry
from settler_jobs.metrics import Metrics
from settler_jobs.queue import JobQueue, LaneWorker
from settler_jobs.queue import where as _where
from settler_jobs.queue.pg import PgJobQueue, PgLaneWorker, PgPool
from settler_jobs.redis_server import redis_client
from settler_jobs.resources import Resources
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
        # SETTLER_QUEUE_BACKEND=postgres: no Redis connection at all in this process.
        self._pg: PgJobQueue | None = None
        self._queue: JobQueue | None = None
        if settings.queue_backend == "postgres":
            lanes = 2 * len(list(registry))
            pool = PgPool(settings.queue_dsn, settings.queue_schema, size=min(4 + lanes, 16))
            self._pg = PgJobQueue(registry, settings, pool)
            # Seam for the PostgreSQL queue's QueueOps (reads, cleanup): None until the
            # PgJobQueue carries them; system jobs needing queue_ops raise ConfigError.
            self.resources = Resources(settings, sessions, self._pg, self._rng, None)
        else:
            self._queue = JobQueue(redis_client(redis_url, settings), registry, settings)
            self.resources = Resources(settings, sessions, self._queue, self._rng, self._queue)
        self._stats = TenantStats(settings.queue_prefix, settings.stats_recent_jobs)
        threads = settings.blocking_threads
        self._attempts = Attempts(
            self.resources, sessions, self.metrics, self._stats, self._rng, threads
        )
        self._lanes: list[LaneWorker | PgLaneWorker] = []
        self._background: list[asyncio.Task[None]] = []
        self.worker_id = heartbeat.new_worker_id()
        self._beats = (
            None if self._pg is not None else redis_client(redis_url, settings, max_connections=2)
        )
        self._started_ms = heartbeat.now_ms()

    @property
    def lanes(self) -> list[str]:
        """Queue names this runtime serves."""
        return [lane.queue for lane in self._lanes]

    async def start(self) -> None:
        """Open every lane and the background loops (cancel listener, DLQ sweep, depth,
        per-tenant stats), and register the schedules of the served kinds."""
        if self._pg is not None:
            await self._start_postgres()
            return
        assert self._queue is not None and self._beats is not None
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
                    functools.partial(self._attempts.run, kind),
                    concurrency=slots,
                    client=client,
                    settings=self.settings,
                    on_dead=self._attempts.on_dead,
                )
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
            beats=self._beats,
            worker_id=self.worker_id,
            info=self.info,
        )
        self._background.extend(background.start())

    async def _start_postgres(self) -> None:
        """The lanes on the PostgreSQL queue (schema applied first) and the loops that
        need no Redis: cancel requests and the kinds' periodic steps.

        Seam: the other `Background` loops (DLQ sweep, schedules, depth, stats,
        heartbeats, alerts) start here once PgJobQueue has the reads/schedules parts
        and PostgreSQL stores exist for what they keep in Redis.
        """
        pg = self._pg
        assert pg is not None
        await pg.ready()
        for kind in self.registry:
            for queue, slots in (
                (kind.queue, kind.concurrency),
                (kind.express_queue, self.settings.express_concurrency),
            ):
                lane = pg.lane(
                    queue,
                    kind.name,
                    functools.partial(self._attempts.run, kind),
                    concurrency=slots,
                    on_dead=self._attempts.on_dead,
                )
                lane.start()
                self._lanes.append(lane)

        async def cancels() -> None:
            async for queue, job_id in pg.cancellation_requests():
                self._attempts.cancel(queue, job_id)

        self._background.append(asyncio.create_task(cancels(), name="pg-cancels"))
        for kind in self.registry:
            for step in kind.periodic:
                self._background.append(
                    asyncio.create_task(
                        _periodic(step, self.resources), name=f"{kind.name}:{step.__name__}"
                    )
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
        if self._queue is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._stats.flush(self._queue.client), _STOP_TIMEOUT_S)
        self._attempts.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.resources.aclose(), _STOP_TIMEOUT_S)
        queue = self._pg if self._pg is not None else self._queue
        if queue is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(queue.close(), _STOP_TIMEOUT_S)
        if self._beats is not None:
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


async def _periodic(step: PeriodicStep, resources: Resources) -> None:
    """A kind's periodic step until cancelled (errors logged, retried after a second)."""
    while True:
        try:
            await asyncio.sleep(await step(resources))
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("worker.background_error", extra={"step": step.__qualname__})
            await asyncio.sleep(1.0)


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
