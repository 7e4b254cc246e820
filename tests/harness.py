"""An in-process system for integration tests: queue, worker runtime and a migrated database."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from settler_jobs.config import Settings
from settler_jobs.dlq import store as dlq
from settler_jobs.kinds import Registry
from settler_jobs.queue import AnyJobQueue, JobQueue
from settler_jobs.queue.pg import PgJobQueue
from settler_jobs.queue.pg.open import queue_pool
from settler_jobs.redis_server import redis_client
from settler_jobs.shared_state import SharedState, shared_state
from settler_jobs.storage.db import create_engine, session_factory
from settler_jobs.storage.migrate import upgrade_async
from settler_jobs.worker.runtime import WorkerRuntime

WATCHDOG_S = 60.0


@dataclass
class System:
    """What a test drives: the producer side, the workers and the database."""

    settings: Settings
    queue: AnyJobQueue
    runtime: WorkerRuntime
    sessions: async_sessionmaker[AsyncSession]

    @property
    def redis_queue(self) -> JobQueue:
        """The queue as a Redis `JobQueue` (tests of Redis-held details)."""
        assert isinstance(self.queue, JobQueue), "this test needs the Redis queue backend"
        return self.queue

    def shared_state(self) -> SharedState:
        """The shared state the workers keep: in Redis or PostgreSQL, as the backend is."""
        redis = self.queue.client if isinstance(self.queue, JobQueue) else None
        return shared_state(self.settings, redis, self.sessions)

    async def dead_letters(self, **filters: str) -> list[dlq.DlqEntry]:
        """DLQ entries, newest first."""
        async with self.sessions() as session:
            return await dlq.list_entries(session, **filters)  # type: ignore[arg-type]


@asynccontextmanager
async def system(
    settings: Settings, registry: Registry, *, start: bool = True
) -> AsyncIterator[System]:
    """A queue and (unless start=False) running workers for `registry`; torn down after."""
    await upgrade_async(settings.effective_database_url)
    engine = create_engine(settings.effective_database_url)
    sessions = session_factory(engine)
    queue: AnyJobQueue
    if settings.queue_backend == "postgres":
        queue = PgJobQueue(registry, settings, queue_pool(settings))
        await queue.ready()
    else:
        assert settings.redis_url is not None
        queue = JobQueue(redis_client(settings.redis_url, settings), registry, settings)
    runtime = WorkerRuntime(settings, registry, settings.redis_url, sessions)
    watchdog = asyncio.get_running_loop().call_later(WATCHDOG_S, dump_tasks)
    if start:
        await runtime.start()
    try:
        yield System(settings, queue, runtime, sessions)
    finally:
        await runtime.stop(5)
        await queue.close()
        await engine.dispose()
        watchdog.cancel()


def dump_tasks() -> None:
    """Print every pending task's stack: shows where a hung test is waiting."""
    tasks = asyncio.all_tasks()
    print(f"--- {len(tasks)} asyncio tasks still pending after {WATCHDOG_S}s ---", file=sys.stderr)
    for task in tasks:
        task.print_stack(file=sys.stderr)
