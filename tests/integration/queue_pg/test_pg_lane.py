"""The PostgreSQL worker lane end to end through WorkerRuntime."""

from __future__ import annotations

import pytest

from settler_jobs.config import Settings
from settler_jobs.context import JobContext
from settler_jobs.domain import JobState, Tier
from settler_jobs.kinds import JobKind, Registry
from settler_jobs.records import Submission
from tests.helpers import eventually
from tests.integration.queue_pg.conftest import pg_system

pytestmark = pytest.mark.postgres


async def test_jobs_run_end_to_end_and_complete(pg_settings: Settings) -> None:
    seen: list[int] = []

    async def handler(payload: dict[str, int], ctx: JobContext) -> int:
        seen.append(payload["n"])
        return payload["n"] * 2

    registry = Registry([JobKind("double", handler, concurrency=4)])
    async with pg_system(pg_settings, registry) as s:
        subs = [Submission("double", {"n": i}, "acme", Tier.STARTER) for i in range(50)]
        done = await s.queue.submit_bulk(subs)
        assert all(d.created for d in done)

        async def count() -> int:
            return len(seen)

        await eventually(count, lambda n: n == 50)
        record = await eventually(
            lambda: s.queue.get(done[7].job.id), lambda r: r.state is JobState.COMPLETED
        )
        assert record.result == 14
    assert sorted(seen) == list(range(50))
