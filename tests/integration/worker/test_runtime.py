"""Worker runtime on a real Redis and database: retries, timeouts, DLQ, shutdown, cancel."""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import UTC, datetime
from typing import Any

import pytest
from prometheus_client import generate_latest

from settler_jobs.config import Settings
from settler_jobs.context import JobContext
from settler_jobs.dlq import capture as dead_letters
from settler_jobs.dlq import store as dlq
from settler_jobs.domain import JobState, RetryPolicy, Tier
from settler_jobs.errors import InvalidState, NotFound, PermanentFailure
from settler_jobs.kinds import Execution, JobKind, Registry
from settler_jobs.records import JobRecord, Submission
from tests.harness import System, system
from tests.helpers import eventually

FAST = RetryPolicy(attempts=3, base_delay_s=0.2, jitter=0)


async def _state(sys_: System, job_id: str) -> JobRecord:
    return await sys_.queue.get(job_id)


def _finished(job: JobRecord) -> bool:
    return job.state in (JobState.COMPLETED, JobState.FAILED)


async def test_failures_retry_with_backoff_then_succeed(settings: Settings) -> None:
    calls: list[float] = []

    async def flaky(payload: dict[str, Any], ctx: JobContext) -> str:
        calls.append(time.monotonic())
        if ctx.attempt < 3:
            raise RuntimeError(f"boom {ctx.attempt}")
        return "ok"

    async with system(settings, Registry([JobKind("flaky", flaky, retry=FAST)])) as sys_:
        job = (await sys_.queue.submit(Submission("flaky", {}, "t1", Tier.FREE))).job
        done = await eventually(lambda: _state(sys_, job.id), _finished)
        assert done.state is JobState.COMPLETED and done.result == "ok"
        assert done.attempts_made == 3 and len(calls) == 3
        # Exponential: about 0.2 s, then about 0.4 s between attempts.
        assert calls[1] - calls[0] >= 0.19 and calls[2] - calls[1] >= 0.39
        assert await sys_.dead_letters() == []


async def test_timeout_fails_the_attempt_and_exhaustion_reaches_the_dlq(
    settings: Settings,
) -> None:
    async def hang(payload: dict[str, Any], ctx: JobContext) -> None:
        await asyncio.Event().wait()

    kind = JobKind("hang", hang, retry=RetryPolicy(attempts=2, base_delay_s=0), timeout_s=0.2)
    async with system(settings, Registry([kind])) as sys_:
        job = (
            await sys_.queue.submit(Submission("hang", {"password": "hunter2"}, "t1", Tier.SCALE))
        ).job
        done = await eventually(lambda: _state(sys_, job.id), _finished)
        assert done.state is JobState.FAILED and done.attempts_made == 2
        assert done.failure_reason == "TimeoutError: attempt timed out after 0.2s"
        [entry] = await eventually(sys_.dead_letters, lambda e: len(e) == 1)
        assert (entry.job_id, entry.tenant_id, entry.tier) == (job.id, "t1", "scale")
        assert (entry.error_type, entry.attempts) == ("TimeoutError", 2)
        assert entry.payload == {"password": "[REDACTED]"}
        assert "hunter2" not in entry.stacktrace + entry.error_message
        assert entry.first_failed_at <= entry.last_failed_at


async def test_permanent_failure_skips_retries(settings: Settings) -> None:
    calls = 0

    async def refuse(payload: dict[str, Any], ctx: JobContext) -> None:
        nonlocal calls
        calls += 1
        raise PermanentFailure("account closed at https://ops:s3cret@bank.example/api")

    kind = JobKind("refuse", refuse, retry=RetryPolicy(attempts=5))
    async with system(settings, Registry([kind])) as sys_:
        job = (await sys_.queue.submit(Submission("refuse", {}, "t1", Tier.FREE))).job
        done = await eventually(lambda: _state(sys_, job.id), _finished)
        assert (done.state, done.attempts_made, calls) == (JobState.FAILED, 1, 1)
        assert done.failure_reason is not None and "account closed" in done.failure_reason
        [entry] = await eventually(sys_.dead_letters, lambda e: len(e) == 1)
        assert entry.error_type == "PermanentFailure"
        assert "account closed" in entry.error_message
        assert "s3cret" not in entry.error_message + entry.stacktrace


async def test_dead_letter_lifecycle_retry_with_edited_data_and_resolve(
    settings: Settings,
) -> None:
    async def needs_ok(payload: dict[str, Any], ctx: JobContext) -> str:
        if not payload.get("ok"):
            raise PermanentFailure("not ok")
        return "done"

    async with system(settings, Registry([JobKind("needs-ok", needs_ok)])) as sys_:
        jobs = [
            (await sys_.queue.submit(Submission("needs-ok", {"n": n}, "t1", Tier.GROWTH))).job
            for n in range(2)
        ]
        entries = await eventually(sys_.dead_letters, lambda e: len(e) == 2)
        assert {e.job_id for e in entries} == {j.id for j in jobs}
        to_retry, to_resolve = entries
        with pytest.raises(NotFound):  # another tenant cannot see it
            await dead_letters.retry_entry(
                sys_.queue, sys_.sessions, to_retry.id, actor="op", tenant_id="t2"
            )
        entry, submitted = await dead_letters.retry_entry(
            sys_.queue, sys_.sessions, to_retry.id, actor="op", data={"ok": True}
        )
        assert entry.status is dlq.DlqStatus.RETRIED and entry.retried_job_id == submitted.job.id
        done = await eventually(lambda: _state(sys_, submitted.job.id), _finished)
        assert (done.state, done.result, done.tenant_id) == (JobState.COMPLETED, "done", "t1")
        with pytest.raises(InvalidState):
            await dead_letters.retry_entry(sys_.queue, sys_.sessions, to_retry.id, actor="op")
        async with sys_.sessions() as session, session.begin():
            resolved = await dlq.resolve(
                session, to_resolve.id, note="customer fixed it", actor="op", now=datetime.now(UTC)
            )
        assert resolved.status is dlq.DlqStatus.RESOLVED and "customer fixed it" in resolved.notes
        open_ = await sys_.dead_letters(status="open")
        assert open_ == []


async def test_graceful_stop_lets_in_flight_jobs_finish(settings: Settings) -> None:
    started, release = asyncio.Event(), asyncio.Event()

    async def slow(payload: dict[str, Any], ctx: JobContext) -> str:
        started.set()
        await release.wait()
        return "finished"

    async with system(settings, Registry([JobKind("slow", slow, concurrency=1)])) as sys_:
        job = (await sys_.queue.submit(Submission("slow", {}, "t1", Tier.FREE))).job
        await asyncio.wait_for(started.wait(), 10)
        stopping = asyncio.ensure_future(sys_.runtime.stop(grace_s=10))
        # One slot, busy: the job submitted now can only be fetched after the first one
        # finishes, and by then the worker is closing (stop ran during this submit).
        late = (await sys_.queue.submit(Submission("slow", {}, "t1", Tier.FREE))).job
        release.set()
        assert await asyncio.wait_for(stopping, 10) is True
        assert (await sys_.queue.get(job.id)).state is JobState.COMPLETED
        assert (await sys_.queue.get(late.id)).state is JobState.WAITING  # not fetched


async def test_stop_past_the_grace_period_interrupts_without_failing_the_job(
    settings: Settings,
) -> None:
    started = asyncio.Event()

    async def stuck(payload: dict[str, Any], ctx: JobContext) -> None:
        started.set()
        await asyncio.Event().wait()

    async with system(settings, Registry([JobKind("stuck", stuck)])) as sys_:
        job = (await sys_.queue.submit(Submission("stuck", {}, "t1", Tier.FREE))).job
        await asyncio.wait_for(started.wait(), 10)
        assert await sys_.runtime.stop(grace_s=0.2) is False
        # Still active and unfailed: the stalled-job check hands it to the next worker.
        assert (await sys_.queue.get(job.id)).state is JobState.ACTIVE


async def test_cancel_waiting_and_running_jobs(settings: Settings) -> None:
    started = asyncio.Event()

    async def wait_forever(payload: dict[str, Any], ctx: JobContext) -> None:
        started.set()
        await asyncio.Event().wait()

    kind = JobKind("cancellable", wait_forever, concurrency=1)
    async with system(settings, Registry([kind])) as sys_:
        running = (await sys_.queue.submit(Submission("cancellable", {}, "t1", Tier.FREE))).job
        await asyncio.wait_for(started.wait(), 10)
        waiting = (await sys_.queue.submit(Submission("cancellable", {}, "t1", Tier.FREE))).job
        assert await sys_.queue.cancel(waiting.id) is JobState.CANCELLED
        with pytest.raises(NotFound):
            await sys_.queue.get(waiting.id)
        with pytest.raises(NotFound):  # tenant-scoped
            await sys_.queue.cancel(running.id, tenant_id="t2")
        assert await sys_.queue.cancel(running.id) is JobState.ACTIVE
        done = await eventually(lambda: _state(sys_, running.id), _finished)
        assert done.state is JobState.FAILED and done.attempts_made == 1
        assert done.failure_reason is not None and "JobCancelled" in done.failure_reason
        with pytest.raises(InvalidState):
            await sys_.queue.cancel(running.id)
        await sys_.runtime.stop(1)
        assert await sys_.dead_letters() == []  # cancelled on purpose: not a dead letter


def _blocking(payload: dict[str, Any], ctx: JobContext) -> str:
    time.sleep(2.5)  # blocking on purpose: this is the behaviour under test
    return threading.current_thread().name


async def test_blocking_handlers_run_off_the_loop_so_locks_stay_renewed(
    settings: Settings,
) -> None:
    short_locks = settings.model_copy(
        update={"lock_duration_ms": 1000, "stalled_interval_ms": 500, "max_stalled_count": 0}
    )
    kind = JobKind("blocking", _blocking, execution=Execution.THREAD, timeout_s=30)
    async with system(short_locks, Registry([kind])) as sys_:
        job = (await sys_.queue.submit(Submission("blocking", {}, "t1", Tier.FREE))).job
        ticks = 0

        async def probe() -> JobRecord:
            nonlocal ticks
            ticks += 1  # the loop keeps turning while the handler blocks its thread
            return await sys_.queue.get(job.id)

        await eventually(probe, _finished, interval_s=0.05)
        done = await sys_.queue.get(job.id)
        assert done.state is JobState.COMPLETED and done.attempts_made == 1
        assert str(done.result).startswith("settler-handler") and ticks > 10


async def test_a_job_stalled_past_the_limit_lands_in_the_dlq(settings: Settings) -> None:
    started = asyncio.Event()

    async def stuck(payload: dict[str, Any], ctx: JobContext) -> None:
        started.set()
        await asyncio.Event().wait()

    short = settings.model_copy(
        update={"lock_duration_ms": 1000, "stalled_interval_ms": 500, "max_stalled_count": 0}
    )
    registry = Registry([JobKind("stalls", stuck)])
    async with system(short, registry) as crashed:
        job = (await crashed.queue.submit(Submission("stalls", {"k": 1}, "t9", Tier.FREE))).job
        await asyncio.wait_for(started.wait(), 10)
        crashed.runtime.interrupt()  # like a crash: the lock is simply no longer renewed
        await crashed.runtime.stop(0)
    async with system(short, registry) as survivor:
        [entry] = await eventually(survivor.dead_letters, lambda e: len(e) == 1, timeout_s=15)
        assert entry.job_id == job.id and entry.tenant_id == "t9"
        assert "stalled" in entry.error_message


async def test_metrics_count_outcomes_without_tenant_labels(settings: Settings) -> None:
    async def ok(payload: dict[str, Any], ctx: JobContext) -> None:
        return None

    async with system(settings, Registry([JobKind("measured", ok)])) as sys_:
        jobs = [
            (await sys_.queue.submit(Submission("measured", {}, f"tenant-{n}", Tier.STARTER))).job
            for n in range(3)
        ]
        for job in jobs:
            await eventually(lambda j=job: _state(sys_, j.id), _finished)  # type: ignore[misc]
        text = generate_latest(sys_.runtime.metrics.registry).decode()
    line = 'job_completions_total{kind="measured",queue="measured",tier="starter"} 3.0'
    assert line in text
    assert "job_wait_seconds_count" in text and "job_duration_seconds_bucket" in text
    assert "tenant-" not in text
    assert not any(job.id in text for job in jobs)


async def test_list_and_retry_failed_jobs(settings: Settings) -> None:
    fail = True

    async def toggled(payload: dict[str, Any], ctx: JobContext) -> str:
        if fail:
            raise PermanentFailure("not yet")
        return "now"

    async with system(settings, Registry([JobKind("toggled", toggled)])) as sys_:
        job = (await sys_.queue.submit(Submission("toggled", {"n": 1}, "t1", Tier.FREE))).job
        await eventually(lambda: _state(sys_, job.id), _finished)
        failed = await sys_.queue.list_jobs(kind="toggled", state=JobState.FAILED)
        assert [j.id for j in failed] == [job.id]
        assert await sys_.queue.list_jobs(state=JobState.FAILED, tenant_id="t2") == []
        fail = False
        again = await sys_.queue.retry(job.id)
        assert again.state in (JobState.WAITING, JobState.ACTIVE, JobState.COMPLETED)
        done = await eventually(
            lambda: _state(sys_, job.id), lambda j: j.state is JobState.COMPLETED
        )
        assert done.result == "now"
        with pytest.raises(InvalidState, match="only failed jobs retry"):
            await sys_.queue.retry(job.id)
        listed = await sys_.queue.list_jobs(kind="toggled")
        assert [(j.id, j.state) for j in listed] == [(job.id, JobState.COMPLETED)]


def _cpu_bound(payload: dict[str, Any]) -> dict[str, int]:
    import os

    return {"pid": os.getpid(), "sum": sum(i * i for i in range(payload["n"]))}


async def test_cpu_bound_handlers_run_in_another_process(settings: Settings) -> None:
    import os

    kind = JobKind("crunch", _cpu_bound, execution=Execution.PROCESS, timeout_s=60)
    async with system(settings.model_copy(update={"cpu_processes": 1}), Registry([kind])) as sys_:
        job = (await sys_.queue.submit(Submission("crunch", {"n": 1000}, "t1", Tier.FREE))).job
        done = await eventually(lambda: _state(sys_, job.id), _finished, timeout_s=30)
        assert done.state is JobState.COMPLETED, done.failure_reason
        assert done.result["sum"] == sum(i * i for i in range(1000))
        assert done.result["pid"] != os.getpid()


async def test_pause_stops_new_starts_until_resume(settings: Settings) -> None:
    seen: list[str] = []

    async def record(payload: dict[str, Any], ctx: JobContext) -> None:
        seen.append(ctx.job_id)

    registry = Registry([JobKind("pausable", record), JobKind("control", record)])
    async with system(settings, registry) as sys_:
        await sys_.queue.pause("pausable")
        job = (await sys_.queue.submit(Submission("pausable", {}, "t1", Tier.FREE))).job
        # A job submitted later to a running kind finishes: the worker was fetching.
        control = (await sys_.queue.submit(Submission("control", {}, "t1", Tier.FREE))).job
        await eventually(lambda: _state(sys_, control.id), _finished)
        assert (await sys_.queue.get(job.id)).state is JobState.WAITING
        assert seen == [control.id]
        await sys_.queue.resume("pausable")
        await eventually(lambda: _state(sys_, job.id), _finished)
        assert seen == [control.id, job.id]
