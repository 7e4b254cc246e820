"""A worker on SETTLER_QUEUE_BACKEND=postgres keeps heartbeats, tenant stats, depth history,
the alert lease and the KPI cache in the database."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import SecretStr
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from settler_jobs import heartbeat
from settler_jobs.alerts import depth_history
from settler_jobs.config import Settings
from settler_jobs.context import JobContext
from settler_jobs.domain import JobState, Tier
from settler_jobs.kinds import JobKind, Registry
from settler_jobs.records import JobRecord, Submission
from settler_jobs.registry import default_registry
from settler_jobs.shared_state import PostgresState
from settler_jobs.storage.db import create_engine
from settler_jobs.tenants import kpi
from settler_jobs.tenants.stats import tenants_key
from tests.harness import system
from tests.helpers import eventually

pytestmark = pytest.mark.postgres


async def _ok(payload: dict[str, Any], ctx: JobContext) -> str:
    return "ok"


def _done(job: JobRecord) -> bool:
    return job.state in (JobState.COMPLETED, JobState.FAILED)


@pytest.fixture
def pg_settings(settings: Settings, postgres_database: str) -> Settings:
    return settings.model_copy(
        update={
            "queue_backend": "postgres",
            "database_url": postgres_database,
            "secret_key": SecretStr("k" * 43),
            "stats_flush_interval_s": 0.1,
            "worker_heartbeat_s": 0.5,
            "alert_interval_s": 0.5,
            "schedule_cache_warm_cron": "",
            "schedule_retention_cron": "",
            "schedule_webhook_sweep_cron": "",
        }
    )


async def _stored(engine: AsyncEngine, key: str) -> int:
    """Rows under `key`, expired or not (what the purge removes)."""
    async with engine.connect() as connection:
        sql = text("SELECT count(*) FROM shared_values WHERE key = :key")
        return int((await connection.execute(sql, {"key": key})).scalar_one())


async def test_worker_state_lives_in_the_database(pg_settings: Settings) -> None:
    registry = Registry([JobKind("ok", _ok), default_registry().get("cache-warming")])
    prefix = pg_settings.queue_prefix
    stale = f"{prefix}:stale"
    engine = create_engine(pg_settings.effective_database_url)
    try:
        await PostgresState(engine).put(stale, "gone soon", 1)
        assert await _stored(engine, stale) == 1
    finally:
        await engine.dispose()
    async with system(pg_settings, registry) as sys_:
        bound: AsyncEngine = sys_.sessions.kw["bind"]
        state = PostgresState(bound)
        # The worker writing the minute's depth sample purges expired rows.
        await eventually(lambda: _stored(bound, stale), lambda n: n == 0)
        workers = await eventually(
            lambda: heartbeat.live_workers(state, prefix), lambda found: len(found) == 1
        )
        assert workers[0].id == sys_.runtime.worker_id
        ok = await sys_.queue.submit(Submission("ok", {}, "t1", Tier.FREE))
        await eventually(lambda: sys_.queue.get(ok.job.id), _done)
        now_ms = int(datetime.now(UTC).timestamp() * 1000)
        await eventually(
            lambda: state.members_since(tenants_key(prefix), now_ms - 60_000, 10, forget_upto=0),
            lambda members: members == ["t1"],
        )
        history = await eventually(
            lambda: depth_history.read(state, prefix, ["ok"]), lambda found: bool(found["ok"])
        )
        assert history["ok"][-1].minute == now_ms // 60_000
        lease = await eventually(
            lambda: state.get(f"{prefix}:settler:alerts:lease"), lambda v: v is not None
        )
        assert lease == sys_.runtime.worker_id

        warm = await sys_.queue.submit(Submission("cache-warming", {}, "t1", Tier.FREE))
        warmed = await eventually(lambda: sys_.queue.get(warm.job.id), _done)
        assert warmed.state is JobState.COMPLETED, warmed
        cached = await state.get(kpi.cache_key(prefix, "t1", "kpi-health"))
        assert cached is not None and '"tenantId": "t1"' in cached
        assert await state.get(kpi.cache_key(prefix, "t2", "kpi-health")) is None
        await sys_.runtime.stop(5)
        assert await heartbeat.live_workers(state, prefix) == []  # a clean stop forgets it
