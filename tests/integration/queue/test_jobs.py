"""Producer side on a real Redis: priority order, express lane, idempotency, limits, isolation."""

from __future__ import annotations

import asyncio
import time

import pytest

from settler_jobs.config import Settings
from settler_jobs.context import JobContext
from settler_jobs.domain import JobState, PriorityClass, Tier, fair_step
from settler_jobs.errors import InvalidJob, NotFound, PayloadTooLarge, QueueUnavailable
from settler_jobs.kinds import JobKind, Registry
from settler_jobs.queue import JobQueue
from settler_jobs.records import Submission
from settler_jobs.redis_server import redis_client
from tests.harness import system
from tests.helpers import eventually

P, T = PriorityClass, Tier


def _recording_kind(name: str, seen: list[str], *, concurrency: int = 1) -> JobKind:
    async def handler(payload: dict[str, str], ctx: JobContext) -> str:
        seen.append(payload["label"])
        return payload["label"]

    return JobKind(name, handler, concurrency=concurrency)


async def test_fresh_tenants_run_most_important_first_and_ties_fifo(settings: Settings) -> None:
    # One job per tenant: every flow is fresh, so class x tier alone orders them.
    seen: list[str] = []
    registry = Registry([_recording_kind("ordered", seen)])
    backlog = [
        (P.LOW, T.FREE),
        (P.NORMAL, T.STARTER),
        (P.HIGH, T.FREE),
        (P.LOW, T.SCALE),
        (P.CRITICAL, T.SCALE),
        (P.NORMAL, T.GROWTH),
        (P.HIGH, T.SCALE),
        (P.CRITICAL, T.GROWTH),
        (P.LOW, T.STARTER),
        (P.CRITICAL, T.FREE),
        (P.HIGH, T.STARTER),
        (P.NORMAL, T.SCALE),
    ]
    subs = [
        Submission("ordered", {"label": f"{i}:{c.value}/{t.value}"}, f"t{i}", t, c)
        for i, (c, t) in enumerate(backlog)
    ]
    async with system(settings, registry, start=False) as sys_:
        for sub in subs:  # one by one, so insertion order is the FIFO order
            await sys_.queue.submit(sub)
        await sys_.runtime.start()
        await eventually(lambda: _value(len(seen)), lambda n: n == len(backlog))
    expected = [
        s.data["label"]
        for _, s in sorted(
            enumerate(subs),
            key=lambda p: (fair_step(p[1].priority or P.NORMAL, p[1].tier), p[0]),
        )
    ]
    assert seen == expected
    # Spot-check the intent: critical/scale first, low/free last, ties in submit order.
    assert seen[0] == "4:CRITICAL/scale" and seen[-1] == "0:LOW/free"
    # Importance 10 three ways (NORMAL/starter, HIGH/free, LOW/scale): submit order.
    ties = [seen.index("1:NORMAL/starter"), seen.index("2:HIGH/free"), seen.index("3:LOW/scale")]
    assert ties == sorted(ties) and ties[2] - ties[0] == 2


async def _value(v: int) -> int:
    return v


async def test_enterprise_starts_at_once_behind_a_10000_job_shared_backlog(
    settings: Settings,
) -> None:
    release = asyncio.Event()
    started: dict[str, float] = {}

    async def handler(payload: dict[str, str], ctx: JobContext) -> None:
        started[payload["label"]] = time.monotonic()
        if ctx.tier is not Tier.ENTERPRISE:
            await release.wait()

    registry = Registry([JobKind("busy", handler, concurrency=2, timeout_s=60)])
    async with system(settings, registry, start=False) as sys_:
        for batch in range(10):
            await sys_.queue.submit_bulk(
                [
                    Submission("busy", {"label": f"s{batch}-{i}"}, "t-shared", T.SCALE, P.CRITICAL)
                    for i in range(1000)
                ]
            )
        await sys_.runtime.start()
        await eventually(lambda: _value(len(started)), lambda n: n == 2)  # shared slots full
        submitted = time.monotonic()
        job = (
            await sys_.queue.submit(
                Submission("busy", {"label": "vip"}, "t-ent", T.ENTERPRISE, P.LOW)
            )
        ).job
        await eventually(lambda: _value("vip" in started), bool, timeout_s=5)
        assert job.queue == "busy-express"
        counts = {c.queue: c.counts for c in await sys_.queue.counts()}
        assert counts["busy"]["waiting"] == 9998  # the backlog did not move
        release.set()
    assert started["vip"] - submitted < 5


async def test_same_idempotency_key_returns_the_existing_job(settings: Settings) -> None:
    registry = Registry([_recording_kind("idem", [])])
    async with system(settings, registry, start=False) as sys_:
        first = await sys_.queue.submit(
            Submission("idem", {"label": "a"}, "t1", T.FREE, idempotency_key="order-1")
        )
        again = await sys_.queue.submit(
            Submission("idem", {"label": "b"}, "t1", T.FREE, idempotency_key="order-1")
        )
        # Same key with a different tier (now enterprise) still finds the job in the other lane.
        upgraded = await sys_.queue.submit(
            Submission("idem", {"label": "c"}, "t1", T.ENTERPRISE, idempotency_key="order-1")
        )
        other = await sys_.queue.submit(
            Submission("idem", {"label": "d"}, "t2", T.FREE, idempotency_key="order-1")
        )
        bulk = await sys_.queue.submit_bulk(
            [Submission("idem", {"label": "e"}, "t3", T.FREE, idempotency_key="k")] * 3
        )
        assert (first.created, again.created, upgraded.created, other.created) == (
            True,
            False,
            False,
            True,
        )
        assert first.job.id == again.job.id == upgraded.job.id != other.job.id
        assert again.job.payload == {"label": "a"}
        assert [b.created for b in bulk] == [True, False, False]
        assert len({b.job.id for b in bulk}) == 1
        counts = {c.queue: c.counts["waiting"] for c in await sys_.queue.counts()}
        assert counts == {"idem": 3, "idem-express": 0}


async def test_oversized_data_is_refused_and_nothing_is_enqueued(settings: Settings) -> None:
    small = settings.model_copy(update={"max_payload_bytes": 2000})
    registry = Registry([_recording_kind("sized", [])])
    async with system(small, registry, start=False) as sys_:
        with pytest.raises(PayloadTooLarge, match=r"over the limit of 2000 bytes") as info:
            await sys_.queue.submit(Submission("sized", {"label": "x" * 5000}, "t1", T.FREE))
        assert info.value.size > 5000
        # All-or-nothing in bulk: one bad submission refuses the whole batch.
        with pytest.raises(PayloadTooLarge):
            await sys_.queue.submit_bulk(
                [
                    Submission("sized", {"label": "ok"}, "t1", T.FREE),
                    Submission("sized", {"label": "x" * 5000}, "t1", T.FREE),
                ]
            )
        assert all(sum(c.counts.values()) == 0 for c in await sys_.queue.counts())


@pytest.mark.parametrize(
    ("sub", "message"),
    [
        (Submission("nope", {}, "t1", T.FREE), "unknown job kind"),
        (Submission("valid", {}, "bad tenant", T.FREE), "invalid tenant id"),
        (Submission("valid", {"tenantId": "t2"}, "t1", T.FREE), "come from the caller"),
        (Submission("valid", {}, "t1", T.FREE, delay_s=-1), "delay"),
        (Submission("valid", {}, "t1", T.FREE, attempts=0), "attempts"),
        (Submission("valid", {}, "t1", T.FREE, timeout_s=0), "timeout"),
        (Submission("valid", {}, "t1", T.FREE, idempotency_key=""), "idempotency key"),
    ],
)
async def test_bad_submissions_get_clear_errors(
    settings: Settings, sub: Submission, message: str
) -> None:
    registry = Registry([_recording_kind("valid", [])])
    async with system(settings, registry, start=False) as sys_:
        with pytest.raises(InvalidJob, match=message):
            await sys_.queue.submit(sub)


async def test_another_tenants_job_looks_missing(settings: Settings) -> None:
    registry = Registry([_recording_kind("iso", [])])
    async with system(settings, registry, start=False) as sys_:
        job = (await sys_.queue.submit(Submission("iso", {"label": "x"}, "t1", T.FREE))).job
        assert (await sys_.queue.get(job.id, tenant_id="t1")).id == job.id
        with pytest.raises(NotFound) as theirs:
            await sys_.queue.get(job.id, tenant_id="t2")
        with pytest.raises(NotFound) as missing:
            await sys_.queue.get("job-doesnotexist", tenant_id="t2")
        assert str(theirs.value).replace(job.id, "ID") == str(missing.value).replace(
            "job-doesnotexist", "ID"
        )
        for hostile in ("../../etc", "a:b", "x" * 500, "*"):
            with pytest.raises(NotFound):
                await sys_.queue.get(hostile)


async def test_delayed_job_waits_then_runs(settings: Settings) -> None:
    seen: list[str] = []
    registry = Registry([_recording_kind("later", seen)])
    async with system(settings, registry) as sys_:
        job = (
            await sys_.queue.submit(Submission("later", {"label": "d"}, "t1", T.FREE, delay_s=1.5))
        ).job
        assert job.state is JobState.DELAYED and job.delay_ms == 1500
        assert (await sys_.queue.get(job.id)).state is JobState.DELAYED
        done = await eventually(
            lambda: sys_.queue.get(job.id), lambda j: j.state is JobState.COMPLETED, timeout_s=30
        )
        assert done.processed_at_ms is not None
        assert done.processed_at_ms - done.created_at_ms >= 1500


async def test_submit_fails_fast_when_redis_is_down(settings: Settings) -> None:
    down = settings.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"})
    queue = JobQueue(
        redis_client("redis://127.0.0.1:1/0", down), Registry([_recording_kind("k", [])]), down
    )
    started = time.monotonic()
    with pytest.raises(QueueUnavailable, match="Redis is unreachable"):
        await queue.submit(Submission("k", {"label": "x"}, "t1", T.FREE))
    assert time.monotonic() - started < 2.5
    await queue.close()


async def test_a_large_bulk_submit_is_written_in_bounded_chunks(settings: Settings) -> None:
    registry = Registry([_recording_kind("bulk", [])])
    async with system(settings, registry, start=False) as sys_:
        subs = [
            Submission("bulk", {"label": str(i)}, "t1", T.GROWTH, idempotency_key=f"k{i % 2500}")
            for i in range(5000)
        ]
        results = await sys_.queue.submit_bulk(subs)
        assert sum(r.created for r in results) == 2500
        counts = {c.queue: c.counts["waiting"] for c in await sys_.queue.counts()}
        assert counts["bulk"] == 2500
        with pytest.raises(ValueError, match="offset"):
            await sys_.queue.list_jobs(offset=10_001)


async def test_a_list_of_waiting_jobs_reads_the_last_to_run_first(settings: Settings) -> None:
    # Both backends read each lane's window as bullmq's getJobs does (highest score
    # first), then sort the page by creation: the same jobs on Redis and PostgreSQL.
    registry = Registry([_recording_kind("listed", [])])
    classes = [P.LOW, P.CRITICAL, P.NORMAL, P.HIGH]
    async with system(settings, registry, start=False) as sys_:
        done = [
            await sys_.queue.submit(
                Submission("listed", {"label": str(i)}, f"t{i}", T.GROWTH, classes[i % 4])
            )
            for i in range(12)
        ]
        page = await sys_.queue.list_jobs(kind="listed", state=JobState.WAITING, limit=5)
    ranked = sorted(range(12), key=lambda i: (done[i].job.bullmq_priority, i), reverse=True)
    assert {j.id for j in page} == {done[i].job.id for i in ranked[:5]}
    created = [j.created_at_ms for j in page]
    assert created == sorted(created, reverse=True)


async def test_a_nul_character_is_refused_alike_on_both_backends(settings: Settings) -> None:
    # PostgreSQL cannot store U+0000 in JSON; Redis could, but a job must not be valid
    # on one backend and not the other.
    registry = Registry([_recording_kind("nul", [])])
    async with system(settings, registry, start=False) as sys_:
        with pytest.raises(InvalidJob, match="NUL"):
            await sys_.queue.submit_bulk(
                [
                    Submission("nul", {"label": "fine"}, "t1", T.FREE),
                    Submission("nul", {"label": "a\x00b"}, "t1", T.FREE),
                ]
            )
        assert all(sum(c.counts.values()) == 0 for c in await sys_.queue.counts())
