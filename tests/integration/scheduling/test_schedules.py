"""Job schedulers on a real Redis: idempotent registration, and each slot runs once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from settler_jobs.config import Settings
from settler_jobs.registry import default_registry
from settler_jobs.scheduling import plan as schedules
from settler_jobs.scheduling import runs as schedule_runs
from settler_jobs.scheduling.runs import ScheduleRun
from settler_jobs.storage.schedule_tables import ScheduleRunRow
from settler_jobs.worker.runtime import WorkerRuntime
from tests.harness import System, system
from tests.helpers import eventually


async def _runs(sys_: System) -> list[ScheduleRun]:
    async with sys_.sessions() as session:
        return await schedule_runs.list_runs(session, schedules.WEBHOOK_SWEEP, limit=500)


async def test_two_runtimes_run_each_slot_of_a_schedule_once(settings: Settings) -> None:
    every_second = settings.model_copy(update={"schedule_webhook_sweep_cron": "* * * * * *"})
    registry = default_registry().select([schedules.WEBHOOK_SWEEP])
    async with system(every_second, registry) as one:
        assert every_second.redis_url is not None
        two = WorkerRuntime(every_second, registry, every_second.redis_url, one.sessions)
        await two.start()
        try:
            runs = await eventually(
                lambda: _runs(one),
                lambda found: sum(r.status == "succeeded" for r in found) >= 6,
                timeout_s=40,
                interval_s=0.2,
            )
            registered = await one.queue.list_schedules()
        finally:
            await two.stop(5)
    job_ids = [r.job_id for r in runs]
    assert None not in job_ids
    # One execution per job, and one job per slot: no slot ran twice.
    assert len(job_ids) == len(set(job_ids))
    slots = [int(str(j).rsplit(":", 1)[1]) for j in job_ids]
    assert len(slots) == len(set(slots)) and all(slot % 1000 == 0 for slot in slots)
    assert {(r.schedule_id, r.trigger) for r in runs} == {(schedules.WEBHOOK_SWEEP, "schedule")}
    finished = [r for r in runs if r.status == "succeeded"]
    assert all(r.report == {"requeued": 0} and r.finished_at for r in finished)
    # Both processes registered it; there is still exactly one scheduler.
    assert [(s.id, s.pattern, s.tz) for s in registered] == [
        (schedules.WEBHOOK_SWEEP, "* * * * * *", "UTC")
    ]


async def test_registration_is_idempotent_and_follows_the_settings(settings: Settings) -> None:
    registry = default_registry()
    async with system(settings, registry, start=False) as sys_:
        first = await schedules.register(sys_.queue, settings, registry)
        before = {s.id: s for s in await sys_.queue.list_schedules()}
        again = await schedules.register(sys_.queue, settings, registry)
        after = {s.id: s for s in await sys_.queue.list_schedules()}
        assert first == again == ["data-retention", "webhook-sweep", "cache-warming"]
        # Unchanged: the same next slot and registration time (nothing re-created).
        assert before == after
        assert after["data-retention"].pattern == "0 2 * * *"
        assert after["webhook-sweep"].pattern == "*/5 * * * *"
        assert after["cache-warming"].pattern == "0 * * * *"
        next_run = after["data-retention"].next_run_ms
        assert next_run is not None
        due = datetime.fromtimestamp(next_run / 1000, UTC)
        assert (due.hour, due.minute, due.second) == (2, 0, 0)
        assert after["webhook-sweep"].data == {
            "tenantId": "system",
            "tenantTier": "scale",
            "priorityClass": "LOW",
            "scheduleId": "webhook-sweep",
        }

        changed = settings.model_copy(
            update={"schedule_retention_cron": "30 3 * * *", "schedule_cache_warm_cron": ""}
        )
        assert await schedules.register(sys_.queue, changed, registry) == [
            "data-retention",
            "webhook-sweep",
        ]
        now = {s.id: s for s in await sys_.queue.list_schedules()}
        assert set(now) == {"data-retention", "webhook-sweep"}
        assert now["data-retention"].pattern == "30 3 * * *"
        assert now["webhook-sweep"] == after["webhook-sweep"]


async def test_a_runtime_registers_only_the_schedules_of_its_kinds(settings: Settings) -> None:
    registry = default_registry().select(["cache-warming", "email-sending"])
    async with system(settings, registry) as sys_:
        found = await eventually(sys_.queue.list_schedules, lambda s: len(s) == 1)
        assert found[0].id == "cache-warming" and found[0].kind == "cache-warming"


async def test_a_tenant_cannot_run_a_system_job(settings: Settings) -> None:
    from settler_jobs.domain import JobState, Tier
    from settler_jobs.records import Submission

    registry = default_registry().select([schedules.WEBHOOK_SWEEP])
    quiet = settings.model_copy(update={"schedule_webhook_sweep_cron": ""})
    async with system(quiet, registry) as sys_:
        job = (await sys_.queue.submit(Submission("webhook-sweep", {}, "t1", Tier.FREE))).job
        done = await eventually(
            lambda: sys_.queue.get(job.id), lambda j: j.state is JobState.FAILED
        )
        assert done.failure_reason == (
            "PermanentFailure: webhook-sweep jobs run for the system tenant only"
        )
        async with sys_.sessions() as session:
            assert list(await session.scalars(select(ScheduleRunRow))) == []


async def test_a_schedule_no_worker_takes_is_flagged_missed(settings: Settings) -> None:
    every_second = settings.model_copy(update={"schedule_webhook_sweep_cron": "* * * * * *"})
    registry = default_registry().select([schedules.WEBHOOK_SWEEP])
    [schedule] = [s for s in schedules.configured(every_second) if s.id == "webhook-sweep"]
    grace = timedelta(seconds=2)
    async with system(every_second, registry, start=False) as sys_:
        await schedules.register(sys_.queue, every_second, registry)

        async def reason() -> str | None:
            [info] = await sys_.queue.list_schedules()
            return schedules.missed_reason(schedule, info, None, datetime.now(UTC), grace)

        assert await reason() is None  # just registered: nothing is due yet
        late = await eventually(reason, lambda r: r is not None, timeout_s=20, interval_s=0.1)
        assert late is not None and late.startswith("next run overdue since ")
