"""BullMQ for Node on its PostgreSQL backend and our PostgreSQL queue share the tables:
a Node producer's jobs are read by our queue (tenant scoping included), and a Node worker
runs jobs we submitted, leaving results we read back, and our PostgreSQL worker runs a
Node producer's job.

The Node side lives in `node_pg/` (BullMQ 6 with its PostgreSQL backend, pinned). Our
side migrates the schema; Node runs with `migrate: false` on it. Without `node`/`npm`
these tests are skipped locally and fail under CI (`CI=true`).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from settler_jobs.config import Settings
from settler_jobs.context import JobContext
from settler_jobs.domain import JobState, Tier
from settler_jobs.errors import NotFound
from settler_jobs.kinds import JobKind, Registry
from settler_jobs.queue.pg import PgJobQueue
from settler_jobs.queue.pg.open import preflight, queue_pool
from settler_jobs.records import Submission
from tests.helpers import eventually
from tests.integration.conftest import postgres_database  # noqa: F401 - module fixture
from tests.integration.queue_pg.conftest import pg_system
from tests.interop.node_harness import NODE_TIMEOUT_S, installed, run_node

NODE_DIR = Path(__file__).resolve().parent / "node_pg"


@pytest.fixture(scope="session")
def node_pg_dir() -> Path:
    """The Node project with its dependencies installed (installed once if missing)."""
    return installed(NODE_DIR)


async def _node(node_dir: Path, script: str, *args: str) -> Any:
    """Run a script of the Node project; its stdout parsed as JSON (fails on exit != 0)."""
    return await run_node(node_dir, script, *args, timeout_s=NODE_TIMEOUT_S + 10)


async def _noop(payload: dict[str, Any], ctx: JobContext) -> None:
    return None


@pytest.fixture
def pg_settings(postgres_database: str, tmp_path: Path) -> Settings:  # noqa: F811
    """The module's database, a queue schema of this test's own."""
    return Settings(
        queue_backend="postgres",
        database_url=postgres_database,
        queue_schema=f"q_{uuid.uuid4().hex[:10]}",
        data_dir=tmp_path / "data",
        metrics_port=0,
    )


@pytest.fixture
async def pg_queue(pg_settings: Settings) -> AsyncIterator[PgJobQueue]:
    """Our PostgreSQL queue (it migrates the schema Node then uses)."""
    pool = queue_pool(pg_settings)
    await preflight(pool, migrate_schema=True)
    queue = PgJobQueue(Registry([JobKind("alpha", _noop)]), pg_settings, pool)
    try:
        yield queue
    finally:
        await queue.close()


SEED_DATA: dict[str, Any] = {
    "tenantId": "acme",
    "tenantTier": "growth",
    "jobId": "job-456",
    "adapterConfig": {"bank": {"format": "camt053"}},
}


async def test_node_jobs_are_read_by_our_queue(
    node_pg_dir: Path, pg_settings: Settings, pg_queue: PgJobQueue
) -> None:
    opts = {"priority": 10, "attempts": 3, "backoff": {"type": "exponential", "delay": 1000}}
    ids = await _node(
        node_pg_dir,
        "produce.mjs",
        pg_settings.queue_dsn,
        pg_settings.queue_schema,
        json.dumps(
            [
                {"queue": "alpha", "data": SEED_DATA, "opts": opts},
                {"queue": "alpha", "data": SEED_DATA, "opts": {**opts, "jobId": "job-456"}},
                {"queue": "alpha", "data": SEED_DATA | {"tenantId": "globex"}},
            ]
        ),
    )
    assert ids[1] == "job-456"
    for job_id in ids[:2]:
        record = await pg_queue.get(str(job_id), tenant_id="acme")
        assert (record.queue, record.kind, record.state) == ("alpha", "alpha", JobState.WAITING)
        assert (record.tenant_id, record.tier, record.priority_class) == ("acme", "growth", None)
        assert record.payload == {"adapterConfig": {"bank": {"format": "camt053"}}}
        assert (record.bullmq_priority, record.max_attempts, record.attempts_made) == (10, 3, 0)
        with pytest.raises(NotFound):
            await pg_queue.get(str(job_id), tenant_id="globex")
    listed = await pg_queue.list_jobs(tenant_id="acme")
    assert sorted(j.id for j in listed) == sorted(str(i) for i in ids[:2])
    [counts] = [c for c in await pg_queue.counts() if c.queue == "alpha"]
    assert counts.counts["waiting"] == 3


async def test_our_jobs_are_run_by_a_node_worker(
    node_pg_dir: Path, pg_settings: Settings, pg_queue: PgJobQueue
) -> None:
    subs = await pg_queue.submit_bulk(
        [Submission("alpha", {"n": i}, "acme", Tier.GROWTH) for i in range(2)]
    )
    seen = await _node(
        node_pg_dir,
        "consume.mjs",
        pg_settings.queue_dsn,
        pg_settings.queue_schema,
        "alpha",
        "2",
        str(round(NODE_TIMEOUT_S * 1000)),
    )
    jobs = {job["id"]: job for job in seen["jobs"]}
    assert set(jobs) == {s.job.id for s in subs}
    for sub in subs:
        data = jobs[sub.job.id]["data"]
        assert (data["tenantId"], data["tenantTier"], data["jobId"]) == (
            "acme",
            "growth",
            sub.job.id,
        )
        assert jobs[sub.job.id]["priority"] == sub.job.bullmq_priority
        assert jobs[sub.job.id]["opts"]["attempts"] == sub.job.max_attempts
        done = await pg_queue.get(sub.job.id, tenant_id="acme")
        assert done.state is JobState.COMPLETED
        assert done.result == {"consumedBy": "node", "id": sub.job.id}
        assert done.attempts_made == 1


async def test_node_jobs_are_run_by_our_postgres_worker(
    node_pg_dir: Path, pg_settings: Settings, pg_queue: PgJobQueue
) -> None:
    seen: list[tuple[str, str, dict[str, Any]]] = []

    async def handle(payload: dict[str, Any], ctx: JobContext) -> dict[str, str]:
        seen.append((ctx.tenant_id, ctx.tier.value, payload))
        return {"ranBy": "settler", "tenant": ctx.tenant_id}

    [job_id] = await _node(
        node_pg_dir,
        "produce.mjs",
        pg_settings.queue_dsn,
        pg_settings.queue_schema,
        json.dumps([{"queue": "alpha", "data": SEED_DATA, "opts": {"attempts": 2}}]),
    )
    async with pg_system(pg_settings, Registry([JobKind("alpha", handle)])) as system:
        done = await eventually(
            lambda: system.queue.get(str(job_id), tenant_id="acme"),
            lambda r: r.state is JobState.COMPLETED,
        )
    assert seen == [("acme", "growth", {"adapterConfig": {"bank": {"format": "camt053"}}})]
    assert done.result == {"ranBy": "settler", "tenant": "acme"}
    assert done.attempts_made == 1
