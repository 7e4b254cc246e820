"""Workers ride out a Redis restart: after it comes back, new jobs run without a restart.

Redis only: the PostgreSQL counterpart, a crash and restart of the database with jobs
in flight, is tests/integration/queue_pg/test_pg_restart.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from settler_jobs.config import Settings
from settler_jobs.context import JobContext
from settler_jobs.domain import JobState, Tier
from settler_jobs.errors import QueueUnavailable
from settler_jobs.kinds import JobKind, Registry
from settler_jobs.records import JobRecord, Submission
from settler_jobs.redis_server import EmbeddedRedis
from tests.harness import system
from tests.helpers import eventually


async def _ok(payload: dict[str, Any], ctx: JobContext) -> str:
    return "ran"


@pytest.mark.redis_only
async def test_workers_reconnect_after_redis_restarts(settings: Settings, tmp_path: Path) -> None:
    server = EmbeddedRedis(tmp_path / "own-redis")  # our own server: we may stop it
    url = server.start()
    own = settings.model_copy(update={"redis_url": url})
    try:
        async with system(own, Registry([JobKind("steady", _ok)])) as sys_:
            first = (await sys_.queue.submit(Submission("steady", {}, "t1", Tier.FREE))).job
            await eventually(lambda: sys_.queue.get(first.id), _completed)
            server.stop()
            with pytest.raises(QueueUnavailable):
                await sys_.queue.submit(Submission("steady", {}, "t1", Tier.FREE))
            server.start()
            second = (await sys_.queue.submit(Submission("steady", {}, "t1", Tier.FREE))).job
            done = await eventually(lambda: sys_.queue.get(second.id), _completed, timeout_s=30)
            assert done.result == "ran"
            # Persistence: the job finished before the restart is still readable.
            assert (await sys_.queue.get(first.id)).state is JobState.COMPLETED
    finally:
        server.stop()


def _completed(job: JobRecord) -> bool:
    return job.state is JobState.COMPLETED
