"""E2E fixtures: the CLI runner bound to the test's settings."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from settler_jobs.config import Settings
from settler_jobs.queue import AnyJobQueue, JobQueue
from settler_jobs.queue.pg import PgJobQueue
from settler_jobs.queue.pg.open import queue_pool
from settler_jobs.redis_server import redis_client
from tests.e2e.cli_runner import Cli
from tests.e2e.fleet import Workers
from tests.e2e.slow_worker import build_registry
from tests.integration.conftest import postgres_database, queue_backend  # noqa: F401


@pytest.fixture
def cli(settings: Settings, tmp_path: Path) -> Cli:
    """Runs `python -m settler_jobs` against this test's Redis prefix and database."""
    return Cli(settings, tmp_path)


@pytest.fixture
def workers(settings: Settings, tmp_path: Path) -> Iterator[Workers]:
    fleet = Workers(settings, tmp_path)
    try:
        yield fleet
    finally:
        fleet.close()


@pytest.fixture
async def job_queue(settings: Settings) -> AsyncIterator[AnyJobQueue]:
    queue: AnyJobQueue
    if settings.queue_backend == "postgres":
        queue = PgJobQueue(build_registry(), settings, queue_pool(settings))
    else:
        assert settings.redis_url is not None
        queue = JobQueue(redis_client(settings.redis_url, settings), build_registry(), settings)
    try:
        yield queue
    finally:
        await queue.close()
