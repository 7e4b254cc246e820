"""Two worker processes, each with its own data folder, share a Redis Cluster and one
PostgreSQL database; every job runs exactly once, counted in the database."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from settler_jobs import heartbeat
from settler_jobs.config import Settings
from settler_jobs.domain import JobState, Tier
from settler_jobs.queue import JobQueue
from settler_jobs.records import Submission
from settler_jobs.redis_server import redis_client
from settler_jobs.shared_state import RedisState
from settler_jobs.storage.audit_tables import AuditLogRow
from settler_jobs.storage.db import create_engine, session_factory
from tests.e2e.cli_runner import process_env
from tests.helpers import eventually
from tests.integration.cluster.cluster_worker import ACTION, KIND, build_registry

WORKER_SCRIPT = Path(__file__).resolve().with_name("cluster_worker.py")
JOBS = 300

pytestmark = pytest.mark.postgres


@pytest.fixture
def shared(cluster_settings: Settings, postgres_database: str) -> Settings:
    """The cluster settings with the module's PostgreSQL database."""
    return cluster_settings.model_copy(update={"database_url": postgres_database})


@pytest.fixture
def processes(shared: Settings, tmp_path: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Two worker processes on two data folders; killed if a test leaves them running."""
    started = []
    for name in ("a", "b"):
        folder = tmp_path / f"data-{name}"
        with (tmp_path / f"worker-{name}.stderr").open("wb") as stderr:
            started.append(
                subprocess.Popen(
                    [sys.executable, str(WORKER_SCRIPT)],
                    cwd=tmp_path,
                    env=process_env(shared) | {"SETTLER_DATA_DIR": str(folder)},
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=stderr,
                )
            )
    try:
        yield started
    finally:
        for proc in started:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)


async def test_two_processes_on_two_data_dirs_run_every_job_once(
    shared: Settings, processes: list[subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    assert shared.redis_url is not None
    queue = JobQueue(redis_client(shared.redis_url, shared), build_registry(), shared)
    engine = create_engine(shared.effective_database_url)
    try:

        async def live() -> int:
            for proc, name in zip(processes, "ab", strict=True):
                if proc.poll() is not None:
                    log = (tmp_path / f"worker-{name}.stderr").read_text(errors="replace")
                    pytest.fail(f"worker {name} exited {proc.returncode}:\n{log}")
            return len(await heartbeat.live_workers(RedisState(queue.client), shared.queue_prefix))

        await eventually(live, lambda n: n == 2, timeout_s=30)
        subs = [Submission(KIND, {"n": i}, f"tenant-{i % 3}", Tier.GROWTH) for i in range(JOBS)]
        ids = [s.job.id for s in await queue.submit_bulk(subs)]

        async def finished() -> int:
            [lane] = [c for c in await queue.counts() if c.queue == KIND]
            return lane.counts["completed"] + lane.counts["failed"]

        await eventually(finished, lambda n: n == JOBS, timeout_s=60)
        assert {(await queue.get(i)).state for i in ids} == {JobState.COMPLETED}

        async with session_factory(engine)() as session:
            rows = (
                await session.execute(
                    select(AuditLogRow.target_id, AuditLogRow.actor).where(
                        AuditLogRow.action == ACTION
                    )
                )
            ).all()
        runs = Counter(target for target, _ in rows)
        assert runs == Counter(dict.fromkeys(ids, 1))  # every job once, none twice
        by_process = Counter(actor for _, actor in rows)
        assert sorted(by_process) == sorted(f"pid:{p.pid}" for p in processes)
        assert sum(by_process.values()) == JOBS
    finally:
        await queue.close()
        await engine.dispose()

    for proc in processes:
        proc.send_signal(signal.SIGTERM)
    for proc in processes:
        assert proc.wait(timeout=30) == 0
