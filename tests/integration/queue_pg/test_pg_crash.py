"""A worker process killed with SIGKILL mid-job: its job runs again elsewhere."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from settler_jobs.config import Settings
from settler_jobs.domain import JobState, Tier
from settler_jobs.records import Submission
from tests.e2e.slow_worker import KIND, LOG_ENV, MODE_ENV, build_registry
from tests.helpers import eventually
from tests.integration.queue_pg.conftest import pg_system

pytestmark = pytest.mark.postgres
ROOT = Path(__file__).resolve().parents[3]
WORKER = Path(__file__).with_name("pg_worker.py")


def _env(settings: Settings, journal: Path) -> dict[str, str]:
    inherited = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("SETTLER_") and k not in ("REDIS_URL", "DATABASE_URL")
    }
    return inherited | {
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)]),
        "DATABASE_URL": settings.effective_database_url,
        "SETTLER_QUEUE_BACKEND": "postgres",
        "SETTLER_QUEUE_SCHEMA": settings.queue_schema,
        "SETTLER_DATA_DIR": str(settings.data_dir),
        "SETTLER_METRICS_PORT": "0",
        "SETTLER_LOCK_DURATION_MS": str(settings.lock_duration_ms),
        "SETTLER_STALLED_INTERVAL_MS": str(settings.stalled_interval_ms),
        LOG_ENV: str(journal),
        MODE_ENV: "hang",
    }


async def test_a_killed_workers_job_runs_again_in_another_worker(
    pg_settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = pg_settings.model_copy(
        update={"lock_duration_ms": 2000, "stalled_interval_ms": 1000}
    )
    journal = tmp_path / "jobs.log"
    journal.touch()
    monkeypatch.setenv(LOG_ENV, str(journal))
    monkeypatch.delenv(MODE_ENV, raising=False)  # this process's attempts finish at once
    async with pg_system(settings, build_registry(), start=False) as s:
        job = (await s.queue.submit(Submission(KIND, {"n": 1}, "t1", Tier.FREE))).job
        child = subprocess.Popen(
            [sys.executable, str(WORKER)],
            env=_env(settings, journal),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=(tmp_path / "worker.stderr").open("wb"),
        )
        try:

            async def started() -> str:
                return journal.read_text()

            await eventually(started, lambda t: f"start {job.id} {child.pid}" in t, timeout_s=20)
            os.kill(child.pid, signal.SIGKILL)
            child.wait(10)
        finally:
            if child.poll() is None:
                child.kill()
        await s.runtime.start()  # the surviving worker: its stalled check hands the job back
        record = await eventually(
            lambda: s.queue.get(job.id), lambda r: r.state is JobState.COMPLETED, timeout_s=20
        )
    lines = journal.read_text().splitlines()
    assert lines[0].startswith(f"start {job.id} {child.pid}")
    assert f"done {job.id} {os.getpid()}" in lines[-1]
    assert record.result["pid"] == os.getpid()
