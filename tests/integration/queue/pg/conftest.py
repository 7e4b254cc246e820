"""A PgJobQueue on a fresh PostgreSQL database per module (tests/integration/conftest.py).

Each test gets its own queue schema, so lanes and counters start empty.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from settler_jobs.config import Settings
from settler_jobs.context import JobContext
from settler_jobs.kinds import JobKind, Registry
from settler_jobs.queue.pg import PgJobQueue
from settler_jobs.queue.pg.open import preflight, queue_pool


async def _noop(payload: dict[str, object], ctx: JobContext) -> None:
    return None


@pytest.fixture
def pg_registry() -> Registry:
    """Two kinds (four lanes)."""
    return Registry([JobKind("alpha", _noop), JobKind("beta", _noop)])


@pytest.fixture
def pg_settings(postgres_database: str, tmp_path: Path) -> Settings:
    """Settings on the module's database with a queue schema of this test's own."""
    return Settings(
        queue_backend="postgres",
        database_url=postgres_database,
        queue_schema=f"q_{uuid.uuid4().hex[:10]}",
        data_dir=tmp_path / "data",
        metrics_port=0,
    )


@pytest.fixture
async def pg_queue(pg_settings: Settings, pg_registry: Registry) -> AsyncIterator[PgJobQueue]:
    """A migrated PostgreSQL queue; closed afterwards."""
    pool = queue_pool(pg_settings)
    await preflight(pool, migrate_schema=True)
    queue = PgJobQueue(pg_registry, pg_settings, pool)
    try:
        yield queue
    finally:
        await queue.close()
