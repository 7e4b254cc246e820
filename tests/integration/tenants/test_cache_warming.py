"""Per-tenant accounting in the worker, KPI snapshots in Redis, and system jobs end to end."""

from __future__ import annotations

import functools
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import select

from settler_jobs.config import Settings
from settler_jobs.context import JobContext
from settler_jobs.domain import JobState, RetryPolicy, Tier
from settler_jobs.errors import NotFound, PermanentFailure
from settler_jobs.kinds import JobKind, Registry
from settler_jobs.queue import JobQueue
from settler_jobs.records import JobRecord, Submission
from settler_jobs.registry import default_registry
from settler_jobs.retention.targets import retention_run, run_retention
from settler_jobs.scheduling import plan as schedules
from settler_jobs.scheduling import runs as schedule_runs
from settler_jobs.shared_state import SharedState
from settler_jobs.storage.shared_state_tables import SharedValueRow
from settler_jobs.tenants import kpi
from tests.harness import System, system
from tests.helpers import eventually


async def _ok(payload: dict[str, Any], ctx: JobContext) -> str:
    return "ok"


async def _bad(payload: dict[str, Any], ctx: JobContext) -> None:
    raise PermanentFailure("no")


def _registry() -> Registry:
    base = default_registry()
    return Registry(
        [
            JobKind("ok", _ok),
            JobKind("bad", _bad, retry=RetryPolicy(attempts=1)),
            base.get("cache-warming"),
            base.get("data-retention"),
        ]
    )


def _quiet(settings: Settings) -> Settings:
    """No scheduled job may fire during a test (an hourly slot could fall inside it)."""
    return settings.model_copy(
        update={
            "schedule_cache_warm_cron": "",
            "schedule_retention_cron": "",
            "schedule_webhook_sweep_cron": "",
        }
    )


def _finished(job: JobRecord) -> bool:
    return job.state in (JobState.COMPLETED, JobState.FAILED)


async def _run_all(sys_: System, subs: list[Submission]) -> list[JobRecord]:
    jobs = [s.job for s in await sys_.queue.submit_bulk(subs)]
    done = []
    for job in jobs:
        done.append(await eventually(functools.partial(sys_.queue.get, job.id), _finished))
    return done


async def _cached(state: SharedState, settings: Settings, tenant: str, name: str) -> Any:
    raw = await state.get(kpi.cache_key(settings.queue_prefix, tenant, name))
    return json.loads(raw) if raw else None


async def _ttl_s(sys_: System, key: str) -> float:
    """Seconds the cache entry `key` has left, read where the backend keeps it."""
    if isinstance(sys_.queue, JobQueue):
        return float(await sys_.queue.client.ttl(key))
    async with sys_.sessions() as session:
        expires = await session.scalar(
            select(SharedValueRow.expires_at).where(SharedValueRow.key == key)
        )
    assert expires is not None, key
    return (expires - datetime.now(UTC)).total_seconds()


async def test_outcomes_are_counted_per_tenant_and_warmed_into_the_cache(
    settings: Settings,
) -> None:
    async with system(_quiet(settings), _registry()) as sys_:
        await _run_all(
            sys_,
            [Submission("ok", {}, "t1", Tier.FREE)] * 3
            + [Submission("bad", {}, "t1", Tier.FREE), Submission("ok", {}, "t2", Tier.SCALE)],
        )
        ops = sys_.queue
        state = sys_.shared_state()
        # The worker writes its counters in the background (stats_flush_interval_s).
        active = await eventually(
            lambda: kpi.active_tenants(ops, state, datetime.now(UTC)),
            lambda t: set(t) >= {"t1", "t2"},
        )
        assert "t3" not in active
        await ops.pause("ok")  # jobs submitted now stay waiting
        await ops.submit_bulk([Submission("ok", {}, "t1", Tier.FREE)] * 2)
        await ops.submit(Submission("ok", {}, "t1", Tier.FREE, delay_s=600))

        report = await kpi.warm(ops, state, settings, datetime.now(UTC))
        assert report["tenants"] == 2 and report["truncated"] is False

        snapshot = await _cached(state, settings, "t1", "kpi-health")
        assert snapshot["tenantId"] == "t1"
        assert snapshot["jobs"]["completedLastDay"] == {"ok": 3}
        assert snapshot["jobs"]["failedLastDay"] == {"bad": 1}
        assert snapshot["jobs"]["waiting"] == {"ok": 2}
        assert snapshot["jobs"]["delayed"] == {"ok": 1}
        assert snapshot["failureRate"]["lastHour"] == {"completed": 3, "failed": 1, "rate": 0.25}
        assert snapshot["failureRate"]["lastDay"]["rate"] == 0.25
        assert snapshot["oldestWaitingAgeS"] is not None and snapshot["oldestWaitingAgeS"] >= 0
        ttl = await _ttl_s(sys_, kpi.cache_key(settings.queue_prefix, "t1", "kpi-health"))
        assert 0 < ttl <= settings.kpi_cache_ttl_s

        recent = await _cached(state, settings, "t1", "recent-jobs")
        assert [j["outcome"] for j in recent["jobs"]].count("completed") == 3
        assert {j["kind"] for j in recent["jobs"]} == {"ok", "bad"}
        failed = next(j for j in recent["jobs"] if j["outcome"] == "failed")
        assert failed["error"] == "PermanentFailure: no"

        # Tenant isolation: t2 sees only its own numbers.
        other = await kpi.kpi_snapshot(ops, state, settings, "t2", datetime.now(UTC))
        assert other["jobs"]["completedLastDay"] == {"ok": 1}
        assert other["jobs"]["waiting"] == {} and other["jobs"]["failedLastDay"] == {}


async def test_a_cache_miss_is_computed_and_cached(settings: Settings) -> None:
    async with system(_quiet(settings), _registry(), start=False) as sys_:
        key = kpi.cache_key(settings.queue_prefix, "t9", "kpi-health")
        state = sys_.shared_state()
        assert await state.get(key) is None
        snapshot = await kpi.kpi_snapshot(sys_.queue, state, settings, "t9", datetime.now(UTC))
        assert snapshot["tenantId"] == "t9" and snapshot["failureRate"]["lastDay"]["rate"] is None
        assert json.loads(await state.get(key) or "{}") == snapshot


async def test_system_jobs_run_through_the_worker_and_are_logged(settings: Settings) -> None:
    quiet = _quiet(settings)
    async with system(quiet, _registry()) as sys_:
        await _run_all(sys_, [Submission("ok", {}, "t1", Tier.FREE)])
        state = sys_.shared_state()
        await eventually(
            lambda: kpi.active_tenants(sys_.queue, state, datetime.now(UTC)), lambda t: t == ["t1"]
        )
        system_sub = Submission(
            "cache-warming", {"scheduleId": "cache-warming"}, schedules.SYSTEM_TENANT, Tier.SCALE
        )
        [warmed] = await _run_all(sys_, [system_sub])
        assert warmed.state is JobState.COMPLETED and warmed.result["tenants"] == 1
        assert await _cached(state, quiet, "t1", "kpi-health") is not None

        # A tenant may warm its own cache, never another's.
        own, foreign = await _run_all(
            sys_,
            [
                # The seed's shape, as a Node producer sends it.
                Submission(
                    "cache-warming", {"cacheKeys": ["kpi-health", "recent-jobs"]}, "t2", Tier.FREE
                ),
                Submission("cache-warming", {"tenants": ["t1"]}, "t2", Tier.FREE),
            ],
        )
        assert own.state is JobState.COMPLETED and own.result["tenants"] == 1
        assert foreign.state is JobState.FAILED
        assert "warms that tenant only" in str(foreign.failure_reason)

        [retained] = await _run_all(
            sys_, [Submission("data-retention", {"dryRun": True}, "system", Tier.SCALE)]
        )
        assert retained.state is JobState.COMPLETED
        assert retained.result["dryRun"] is True and retained.result["complete"] is True
        async with sys_.sessions() as session:
            runs = await schedule_runs.last_runs(session, ["cache-warming", "data-retention"])
        assert runs["cache-warming"].trigger == "schedule"
        assert runs["cache-warming"].job_id == warmed.id
        assert runs["cache-warming"].report == warmed.result
        assert runs["data-retention"].trigger == "job"
        assert runs["data-retention"].status == "succeeded"
        assert runs["data-retention"].report == retained.result


async def test_finished_bullmq_jobs_are_cleaned_through_the_queue(settings: Settings) -> None:
    keep_nothing = settings.model_copy(update={"keep_completed_s": 0, "keep_failed_s": 0})
    async with system(_quiet(settings), _registry()) as sys_:
        jobs = await _run_all(
            sys_,
            [Submission("ok", {}, "t1", Tier.FREE)] * 3 + [Submission("bad", {}, "t1", Tier.FREE)],
        )
        plan = retention_run(keep_nothing, sys_.sessions, sys_.queue, datetime.now(UTC))
        dry = await run_retention(plan.__class__(**{**_fields(plan), "dry_run": True}))
        bullmq = next(t for t in dry["targets"] if t["target"] == "bullmq-finished-jobs")
        assert bullmq["matched"] == 4 and bullmq["deleted"] == 0
        report = await run_retention(plan)
        bullmq = next(t for t in report["targets"] if t["target"] == "bullmq-finished-jobs")
        assert bullmq["deleted"] == 4 and bullmq["complete"] is True
        for job in jobs:
            with pytest.raises(NotFound):
                await sys_.queue.get(job.id)


def _fields(value: Any) -> dict[str, Any]:
    return {name: getattr(value, name) for name in value.__slots__}


async def test_broken_accounting_never_fails_a_job(settings: Settings) -> None:
    async with system(_quiet(settings), _registry()) as sys_:

        def broken(*args: Any, **kwargs: Any) -> None:
            raise RuntimeError("accounting is down")

        sys_.runtime._stats.record = broken  # type: ignore[method-assign]
        [done] = await _run_all(sys_, [Submission("ok", {}, "t1", Tier.FREE)])
        assert done.state is JobState.COMPLETED and done.result == "ok"
        state = sys_.shared_state()
        assert await kpi.active_tenants(sys_.queue, state, datetime.now(UTC)) == []
