"""E2E fixtures: the CLI runner bound to the test's settings."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from settler_jobs.config import Settings
from settler_jobs.queue import JobQueue
from settler_jobs.redis_server import redis_client
from tests.e2e.cli_runner import Cli
from tests.e2e.fleet import Workers
from tests.e2e.slow_worker import build_registry


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
async def job_queue(settings: Settings) -> AsyncIterator[JobQueue]:
    assert settings.redis_url is not None
    queue = JobQueue(redis_client(settings.redis_url, settings), build_registry(), settings)
    try:
        yield queue
    finally:
        await queue.close()
