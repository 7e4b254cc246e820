"""The PostgreSQL queue backend on a real server: one fresh database per test module
(`postgres_database`), and per test its own queue schema, so tests never share jobs.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from settler_jobs.config import Settings
from settler_jobs.kinds import Registry
from settler_jobs.queue.pg import PgJobQueue
from settler_jobs.storage.db import create_engine, session_factory
from settler_jobs.worker.runtime import WorkerRuntime
from tests.harness import WATCHDOG_S, dump_tasks

pytestmark = pytest.mark.postgres


@pytest.fixture
def pg_settings(postgres_database: str, tmp_path: Path) -> Settings:
    """Settings on the module's database with a queue schema of this test's own."""
    return Settings(
        database_url=postgres_database,
        queue_backend="postgres",
        queue_schema=f"q_{uuid.uuid4().hex[:12]}",
        data_dir=tmp_path / "data",
        metrics_port=0,
        dlq_sweep_interval_s=0.2,
    )


@dataclass
class PgSystem:
    """A producer-side PgJobQueue, a worker runtime on PostgreSQL and the sessions."""

    settings: Settings
    queue: PgJobQueue
    runtime: WorkerRuntime
    sessions: async_sessionmaker[AsyncSession]

    async def fetch(self, query: str, *params: object) -> list[tuple[Any, ...]]:
        """Rows of a statement in the queue schema (for assertions)."""
        async with self.queue.pool.connection() as conn:
            cur = await conn.execute(query.encode(), params)
            return await cur.fetchall()


@asynccontextmanager
async def pg_system(
    settings: Settings, registry: Registry, *, start: bool = True
) -> AsyncIterator[PgSystem]:
    """A PostgreSQL queue and (unless start=False) running workers; torn down after."""
    engine = create_engine(settings.effective_database_url)
    sessions = session_factory(engine)
    queue = PgJobQueue(registry, settings)
    await queue.ready()
    runtime = WorkerRuntime(settings, registry, "", sessions)
    watchdog = asyncio.get_running_loop().call_later(WATCHDOG_S, dump_tasks)
    if start:
        await runtime.start()
    try:
        yield PgSystem(settings, queue, runtime, sessions)
    finally:
        await runtime.stop(5)
        await queue.close()
        await engine.dispose()
        watchdog.cancel()
