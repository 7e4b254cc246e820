"""Workers ride out a PostgreSQL crash and restart (the counterpart of
tests/integration/worker/test_reconnect.py on Redis).

The test runs its own server (tests/private_postgres.py) and crashes it with
`pg_ctl stop -m immediate` while jobs are running and more are waiting; after it comes
back on the same port and data, every job has run exactly once and new ones run too,
with the same workers and producer (no restart of either).
"""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from settler_jobs.config import Settings
from settler_jobs.context import JobContext
from settler_jobs.domain import JobState, Tier
from settler_jobs.errors import QueueUnavailable
from settler_jobs.kinds import JobKind, Registry
from settler_jobs.records import JobRecord, Submission
from tests.harness import system
from tests.helpers import eventually
from tests.private_postgres import PrivatePostgres, server_bin

pytestmark = pytest.mark.postgres
KIND = "restart"
SLOTS = 4
BEFORE, AFTER = 20, 5


@pytest.fixture
def private_pg() -> Iterator[PrivatePostgres]:
    """A server of this test's own, which it may crash."""
    bin_dir = server_bin()
    if bin_dir is None:
        message = "the PostgreSQL server binaries (Debian package postgresql) are missing"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    server = PrivatePostgres(bin_dir)
    try:
        server.start()
        yield server
    finally:
        server.remove()


async def test_workers_and_producer_ride_out_a_postgres_crash(
    private_pg: PrivatePostgres, tmp_path: Path
) -> None:
    settings = _settings(private_pg, tmp_path)
    runs: Counter[str] = Counter()
    gate = asyncio.Event()

    async def handler(payload: dict[str, Any], ctx: JobContext) -> int:
        runs[ctx.job_id] += 1
        if payload["hold"]:
            await gate.wait()
        return int(payload["n"])

    registry = Registry([JobKind(KIND, handler, concurrency=SLOTS)])

    def job(n: int, hold: bool) -> Submission:
        return Submission(KIND, {"n": n, "hold": hold}, "t1", Tier.FREE)

    async with system(settings, registry) as sys_:
        before = [
            s.job.id for s in await sys_.queue.submit_bulk([job(n, True) for n in range(BEFORE)])
        ]
        # Every slot holds a job when the server goes; the rest are waiting.
        await eventually(_value(lambda: sum(runs.values())), lambda n: n == SLOTS)

        private_pg.stop("immediate")
        gate.set()  # the running jobs finish while their completions cannot be written
        with pytest.raises(QueueUnavailable):
            await sys_.queue.submit(job(-1, False))
        private_pg.start()

        after = [(await sys_.queue.submit(job(BEFORE + n, False))).job.id for n in range(AFTER)]
        for n, job_id in enumerate(before + after):
            record = await eventually(
                _reader(sys_.queue.get, job_id), _completed, timeout_s=30, interval_s=0.1
            )
            assert record.result == n
        assert set(runs) == set(before + after), private_pg.log()[-2000:]
        assert max(runs.values()) == 1, {k: n for k, n in runs.items() if n > 1}


async def test_a_crash_amid_a_stream_of_jobs_neither_loses_nor_repeats_one(
    private_pg: PrivatePostgres, tmp_path: Path
) -> None:
    runs: Counter[str] = Counter()

    async def handler(payload: dict[str, Any], ctx: JobContext) -> None:
        runs[ctx.job_id] += 1

    registry = Registry([JobKind(KIND, handler, concurrency=SLOTS)])
    total = 400
    async with system(_settings(private_pg, tmp_path), registry) as sys_:
        subs = [Submission(KIND, {"n": n}, f"t{n % 3}", Tier.FREE) for n in range(total)]
        ids = [s.job.id for s in await sys_.queue.submit_bulk(subs)]
        # Claims and completions are in flight when the server goes.
        await eventually(_value(lambda: len(runs)), lambda n: n >= 40, interval_s=0.005)
        private_pg.stop("immediate")
        assert len(runs) < total
        private_pg.start()

        async def completed() -> int:
            [counts] = [c for c in await sys_.queue.counts() if c.queue == KIND]
            return counts.counts["completed"]

        await eventually(completed, lambda n: n == total, timeout_s=30, interval_s=0.1)
    assert set(runs) == set(ids)
    assert max(runs.values()) == 1, {k: n for k, n in runs.items() if n > 1}


def _settings(server: PrivatePostgres, tmp_path: Path) -> Settings:
    return Settings(
        database_url=server.url,
        queue_backend="postgres",
        queue_schema="q_restart",
        data_dir=tmp_path / "data",
        metrics_port=0,
        redis_connect_timeout_s=2.0,
        tenant_concurrency_caps={},
        tenant_backlog_quotas={},
    )


def _value(read: Callable[[], int]) -> Callable[[], Awaitable[int]]:
    async def probe() -> int:
        return read()

    return probe


def _reader(
    get: Callable[[str], Awaitable[JobRecord]], job_id: str
) -> Callable[[], Awaitable[JobRecord]]:
    return lambda: get(job_id)


def _completed(record: JobRecord) -> bool:
    return record.state is JobState.COMPLETED
