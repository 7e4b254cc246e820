"""BullMQ for Node and our adapter share queues: each side runs the other's jobs.

A Node service of Settler adds seed-shaped jobs (`{tenantId, tenantTier, jobId, ...}`)
straight into a kind's queue; our WorkerRuntime must run them, fail bad ones for good
and record them as dead letters. The other way round, jobs we submit must be readable
by a Node worker: same data shape, and our priorities and options understood.

The Node side lives in `node/` (BullMQ 5, pinned). Without `node`/`npm` these tests are
skipped locally and fail under CI (`CI=true`).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bullmq
import pytest
import redis.asyncio
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from settler_jobs.config import Settings
from settler_jobs.dlq import store as dlq
from settler_jobs.domain import JobState, PriorityClass, Tier, fair_step
from settler_jobs.errors import NotFound
from settler_jobs.keyring import secret_box
from settler_jobs.queue import JobQueue
from settler_jobs.queue.lane_loop import LaneLoop, LaneOptions
from settler_jobs.reconcile.service import Reconciliations
from settler_jobs.records import JobRecord, Submission
from settler_jobs.redis_server import redis_client
from settler_jobs.registry import default_registry
from settler_jobs.storage.db import create_engine, session_factory
from settler_jobs.storage.migrate import upgrade_async
from settler_jobs.worker.runtime import WorkerRuntime
from tests.helpers import eventually
from tests.interop.node_harness import NODE_TIMEOUT_S, installed, run_node

NODE_DIR = Path(__file__).resolve().parent / "node"


@pytest.fixture(scope="session")
def node_dir() -> Path:
    """The Node project with its dependencies installed (installed once if missing)."""
    return installed(NODE_DIR)


async def _node(node_dir: Path, script: str, *args: str) -> Any:
    """Run a script of the Node project; its stdout parsed as JSON (fails on exit != 0)."""
    return await run_node(node_dir, script, *args)


async def produce(node_dir: Path, settings: Settings, jobs: list[dict[str, Any]]) -> list[str]:
    """Add jobs from Node (`{queue, name, data, opts}` each); their BullMQ ids."""
    assert settings.redis_url is not None
    ids = await _node(
        node_dir, "produce.mjs", settings.redis_url, settings.queue_prefix, json.dumps(jobs)
    )
    assert isinstance(ids, list)
    return [str(i) for i in ids]


async def consume(node_dir: Path, settings: Settings, queue: str, count: int) -> list[Any]:
    """Let a Node worker complete `count` jobs of `queue`; what it saw, in order."""
    assert settings.redis_url is not None
    seen = await _node(
        node_dir,
        "consume.mjs",
        settings.redis_url,
        settings.queue_prefix,
        queue,
        str(count),
        str(round(NODE_TIMEOUT_S * 1000 * 0.8)),
    )
    jobs = seen["jobs"]
    assert isinstance(jobs, list)
    return jobs


@pytest.fixture
async def job_queue(settings: Settings) -> AsyncIterator[JobQueue]:
    """Our producer/reader over the test's prefix, with the default kinds."""
    assert settings.redis_url is not None
    queue = JobQueue(redis_client(settings.redis_url, settings), default_registry(), settings)
    try:
        yield queue
    finally:
        await queue.close()


@pytest.fixture
async def sessions(settings: Settings) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """Sessions on the test's migrated SQLite database."""
    await upgrade_async(settings.effective_database_url)
    engine = create_engine(settings.effective_database_url)
    try:
        yield session_factory(engine)
    finally:
        await engine.dispose()


@dataclass
class RunningWorker:
    runtime: WorkerRuntime
    sessions: async_sessionmaker[AsyncSession]


@pytest.fixture
async def worker(
    settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> AsyncIterator[RunningWorker]:
    """Our WorkerRuntime with the default registry, running in this process."""
    assert settings.redis_url is not None
    runtime = WorkerRuntime(settings, default_registry(), settings.redis_url, sessions)
    await runtime.start()
    try:
        yield RunningWorker(runtime, sessions)
    finally:
        await runtime.stop(grace_s=5.0)


def _state_is(state: JobState) -> Any:
    def accept(record: JobRecord | None) -> bool:
        return record is not None and record.state is state

    return accept


def _getter(queue: JobQueue, job_id: str) -> Any:
    async def get() -> JobRecord | None:
        try:
            return await queue.get(job_id)
        except NotFound:
            return None

    return get


SEED_DATA: dict[str, Any] = {
    "tenantId": "t",
    "tenantTier": "growth",
    "jobId": "job-456",
    "adapterConfig": {"stripe": {"account": "acct_1"}, "bank": {"format": "camt053"}},
}
HEADER = "id,amount,currency,date,description,reference\n"
CHARGES = HEADER + "ch_1,10.00,EUR,2026-11-02,order 1,\nch_2,5.50,EUR,2026-11-03,order 2,\n"
BANK = HEADER + "ch_1,10.00,EUR,2026-11-02,payout,\nbk_9,5.50,EUR,2026-11-04,transfer,\n"


async def _definition(settings: Settings, job_queue: JobQueue, sessions: Any) -> str:
    """A real reconciliation of the tenant "t": two small CSV files in its folder."""
    recs = Reconciliations(settings, sessions, job_queue, secret_box(settings))
    await recs.upload("t", "charges.csv", CHARGES.encode())
    await recs.upload("t", "bank.csv", BANK.encode())
    file = {"kind": "file", "format": "csv"}
    definition = await recs.create(
        "t",
        "stripe vs bank",
        source=file | {"path": "charges.csv"},
        target=file | {"path": "bank.csv"},
        rules={"date_window_days": 3},
    )
    return definition.id


async def test_node_job_is_run_by_our_worker(
    node_dir: Path, settings: Settings, job_queue: JobQueue, worker: RunningWorker
) -> None:
    # The seed's shape, its adapterConfig naming the definition to run.
    definition_id = await _definition(settings, job_queue, worker.sessions)
    seed_data = SEED_DATA | {"adapterConfig": {"definitionId": definition_id}}
    node_opts = {
        "priority": 10,
        "attempts": 3,
        "backoff": {"type": "exponential", "delay": 1000},
    }
    ids = await produce(
        node_dir,
        settings,
        [
            # Node's own numeric id, and a caller-chosen one (as a producer may reuse jobId).
            {"queue": "reconciliation", "data": seed_data, "opts": node_opts},
            {
                "queue": "reconciliation",
                "data": seed_data,
                "opts": {**node_opts, "jobId": "job-456"},
            },
        ],
    )
    assert ids[1] == "job-456"

    for job_id in ids:
        record = await eventually(
            _getter(job_queue, job_id), _state_is(JobState.COMPLETED), timeout_s=60
        )
        assert record is not None
        assert record.queue == "reconciliation"
        assert record.kind == "reconciliation"
        assert record.tenant_id == "t"
        assert record.tier == "growth"
        assert record.priority_class is None  # Node did not class it
        assert record.bullmq_priority == 10
        assert record.payload == {"adapterConfig": {"definitionId": definition_id}}
        assert record.attempts_made == 1
        assert record.max_attempts == 3
        assert record.progress == 100
        assert record.failure_reason is None
        assert record.result is not None
        assert record.result["definitionId"] == definition_id
        assert (record.result["status"], record.result["matched"]) == ("succeeded", 2)
        assert record.result["discrepancies"] == 0
        # Tenant scoping applies to Node's jobs too.
        assert (await job_queue.get(job_id, tenant_id="t")).id == job_id
        with pytest.raises(NotFound):
            await job_queue.get(job_id, tenant_id="someone-else")


async def test_node_job_without_tenant_fails_for_good_into_the_dlq(
    node_dir: Path, settings: Settings, job_queue: JobQueue, worker: RunningWorker
) -> None:
    data = {k: v for k, v in SEED_DATA.items() if k != "tenantId"} | {"jobId": "job-789"}
    opts = {"priority": 10, "attempts": 3, "backoff": {"type": "fixed", "delay": 100}}
    [job_id] = await produce(
        node_dir, settings, [{"queue": "reconciliation", "data": data, "opts": opts}]
    )

    record = await eventually(_getter(job_queue, job_id), _state_is(JobState.FAILED), timeout_s=15)
    assert record is not None
    assert record.attempts_made == 1, "a job without a tenant must not be retried"
    assert record.failure_reason is not None
    assert record.failure_reason.startswith("PermanentFailure: job data envelope is invalid")
    assert "tenant" in record.failure_reason

    async def entries() -> list[dlq.DlqEntry]:
        async with worker.sessions() as session:
            found = await dlq.list_entries(session, kind="reconciliation")
        return [e for e in found if e.job_id == job_id]

    [entry] = await eventually(entries, lambda found: len(found) >= 1, timeout_s=10)
    assert entry.queue == "reconciliation"
    assert entry.tenant_id is None
    assert entry.error_type == "PermanentFailure"
    assert "tenant" in entry.error_message
    assert entry.attempts == 1
    assert entry.status is dlq.DlqStatus.OPEN
    assert entry.payload["adapterConfig"] == SEED_DATA["adapterConfig"]

    # The failed-set sweep sees the same failure again: still one dead letter.
    finished = record.finished_at_ms
    assert finished is not None
    await eventually(
        lambda: job_queue.dlq_cursor("reconciliation"), lambda c: c >= finished, timeout_s=10
    )
    assert len(await entries()) == 1


async def test_our_jobs_are_run_by_a_node_worker(
    node_dir: Path, settings: Settings, job_queue: JobQueue
) -> None:
    low = await job_queue.submit(
        Submission(
            kind="reconciliation",
            data={"definitionId": "rdef-1", "runId": "run-1"},
            tenant_id="t1",
            tier=Tier.GROWTH,
            priority=PriorityClass.LOW,
        )
    )
    urgent = await job_queue.submit(
        Submission(
            kind="reconciliation",
            data={"definitionId": "rdef-2", "runId": "run-2"},
            tenant_id="t1",
            tier=Tier.GROWTH,
            priority=PriorityClass.CRITICAL,
            attempts=4,
            backoff_s=1.5,
            timeout_s=120,
            idempotency_key="run-2",
        )
    )
    express = await job_queue.submit(
        Submission(
            kind="reconciliation",
            data={"definitionId": "rdef-3"},
            tenant_id="t2",
            tier=Tier.ENTERPRISE,
        )
    )
    assert express.job.queue == "reconciliation-express"

    seen = await consume(node_dir, settings, "reconciliation", 2)
    # Submitted LOW first, but Node runs by our priority numbers: CRITICAL first.
    assert [job["id"] for job in seen] == [urgent.job.id, low.job.id]
    first, second = seen
    assert first["name"] == "reconciliation"
    assert first["data"] == {
        "tenantId": "t1",
        "tenantTier": "growth",
        "jobId": urgent.job.id,
        "priorityClass": "CRITICAL",
        "timeoutMs": 120_000,
        "definitionId": "rdef-2",
        "runId": "run-2",
    }
    # Fresh flows on a fresh lane: each job's priority is its flow's first tag, one step.
    assert first["priority"] == fair_step(PriorityClass.CRITICAL, Tier.GROWTH)
    assert first["opts"]["attempts"] == 4
    assert first["opts"]["backoff"] == {"type": "exponential", "delay": 1500, "jitter": 0.5}
    assert first["attemptsMade"] == 0
    assert second["data"] == {
        "tenantId": "t1",
        "tenantTier": "growth",
        "jobId": low.job.id,
        "priorityClass": "LOW",
        "definitionId": "rdef-1",
        "runId": "run-1",
    }
    assert second["priority"] == fair_step(PriorityClass.LOW, Tier.GROWTH)
    assert second["opts"]["attempts"] == 3  # the kind's default

    [on_express] = await consume(node_dir, settings, "reconciliation-express", 1)
    assert on_express["id"] == express.job.id
    assert on_express["data"]["tenantTier"] == "enterprise"
    assert on_express["priority"] == fair_step(PriorityClass.HIGH, Tier.ENTERPRISE)

    # Node's results are readable through our adapter.
    for submitted in (urgent, low, express):
        record = await job_queue.get(submitted.job.id)
        assert record.state is JobState.COMPLETED
        assert record.result == {"consumedBy": "node", "id": submitted.job.id}
        assert record.attempts_made == 1


async def test_a_node_worker_and_ours_share_one_queue(node_dir: Path, settings: Settings) -> None:
    """Both consume one queue at once: every job runs once, on one side or the other."""
    assert settings.redis_url is not None
    client = redis.asyncio.from_url(settings.redis_url, decode_responses=True)
    producer = bullmq.Queue(
        "shared", {"connection": settings.redis_url, "prefix": settings.queue_prefix}
    )
    ours: list[str] = []

    async def run(job: Any, token: str) -> dict[str, str]:
        ours.append(str(job.id))
        await asyncio.sleep(0.002)  # a little work, so that Node gets its share
        return {"consumedBy": "python"}

    node_count, total = 20, 300
    node = asyncio.ensure_future(consume(node_dir, settings, "shared", node_count))

    async def node_waits() -> bool:  # Node's worker blocks on the queue's marker
        entries = await client.client_list()
        return any(
            e.get("cmd") == "bzpopmin" and e.get("name", "").startswith(settings.queue_prefix)
            for e in entries
        )

    loop = LaneLoop(
        "shared",
        run,
        client=client,
        prefix=settings.queue_prefix,
        options=LaneOptions(concurrency=4),
    )
    try:
        await eventually(node_waits, bool, timeout_s=NODE_TIMEOUT_S)
        jobs = [{"name": "n", "data": {"i": i}, "opts": {}} for i in range(total)]
        ids = {str(job.id) for job in await producer.addBulk(jobs)}
        loop.start()
        seen_by_node = {str(job["id"]) for job in await node}
        completed = f"{settings.queue_prefix}:shared:completed"
        await eventually(lambda: client.zcard(completed), lambda n: n == total)
    finally:
        await loop.close(5)
        await producer.close()
        await client.aclose()
    assert len(seen_by_node) >= node_count and len(ours) == len(set(ours))
    assert seen_by_node.isdisjoint(ours) and seen_by_node | set(ours) == ids


async def test_a_node_worker_runs_our_tenants_in_fair_order(
    node_dir: Path, settings: Settings, job_queue: JobQueue
) -> None:
    # Node pops by plain priority: the fair tags alone give it the round-robin order
    # (it ignores tenant caps: those live in our pop).
    def sub(tenant: str, run: int) -> Submission:
        data = {"definitionId": "rdef-1", "runId": f"{tenant}-{run}"}
        return Submission("reconciliation", data, tenant, Tier.GROWTH)

    heavy = await job_queue.submit_bulk([sub("heavy", i) for i in range(6)])
    light = await job_queue.submit_bulk([sub("light", i) for i in range(2)])
    seen = await consume(node_dir, settings, "reconciliation", 8)
    h, li = [s.job.id for s in heavy], [s.job.id for s in light]
    assert [job["id"] for job in seen] == [h[0], li[0], h[1], li[1], *h[2:]]
    for submitted in heavy + light:
        assert (await job_queue.get(submitted.job.id)).state is JobState.COMPLETED
