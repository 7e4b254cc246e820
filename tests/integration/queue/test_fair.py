"""Fair share on a real Redis: run order among tenants, tier weights, class order, backlog
quotas (all-or-nothing), the aging bound, the priority rebase, parked jobs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from settler_jobs.config import Settings
from settler_jobs.context import JobContext
from settler_jobs.domain import (
    FAIR_SCALE,
    JobState,
    PriorityClass,
    Tier,
    bullmq_priority,
    fair_step,
    importance,
)
from settler_jobs.errors import QuotaExceeded
from settler_jobs.kinds import JobKind, Registry
from settler_jobs.queue import JobQueue
from settler_jobs.records import Submission
from settler_jobs.redis_server import redis_client
from tests.harness import system
from tests.helpers import eventually

P, T = PriorityClass, Tier
KIND = "fair"
_MAX_PRIORITY = 2_097_151


def _kind(seen: list[str]) -> JobKind:
    async def handler(payload: dict[str, str], ctx: JobContext) -> None:
        seen.append(payload["label"])

    return JobKind(KIND, handler, concurrency=1)


def _sub(
    tenant: str, label: str, tier: Tier = T.GROWTH, cls: PriorityClass = P.NORMAL
) -> Submission:
    return Submission(KIND, {"label": label}, tenant, tier, cls)


async def _run_all(settings: Settings, subs: list[Submission]) -> list[str]:
    """Submit `subs` in order with no worker running, then run them on one slot."""
    seen: list[str] = []
    async with system(settings, Registry([_kind(seen)]), start=False) as sys_:
        for sub in subs:
            await sys_.queue.submit(sub)
        await sys_.runtime.start()
        await eventually(lambda: _now(len(seen)), lambda n: n == len(subs))
    return seen


async def _now(value: int) -> int:
    return value


@pytest.fixture
async def queue(settings: Settings) -> AsyncIterator[JobQueue]:
    assert settings.redis_url is not None
    q = JobQueue(redis_client(settings.redis_url, settings), Registry([_kind([])]), settings)
    try:
        yield q
    finally:
        await q.close()


async def test_equal_tenants_take_turns_not_fifo(settings: Settings) -> None:
    subs = [_sub("a", f"a{i}") for i in range(30)]
    subs += [_sub("b", f"b{i}") for i in range(3)] + [_sub("c", f"c{i}") for i in range(3)]
    seen = await _run_all(settings, subs)
    # A's 30 jobs came first, yet B and C are served round-robin with A from the start.
    assert seen[:9] == ["a0", "b0", "c0", "a1", "b1", "c1", "a2", "b2", "c2"]
    assert seen[9:] == [f"a{i}" for i in range(3, 30)]


async def test_tier_is_a_weight_not_a_monopoly(settings: Settings) -> None:
    subs = [_sub("big", f"s{i}", T.SCALE) for i in range(100)]
    subs += [_sub("small", f"f{i}", T.FREE) for i in range(100)]
    seen = await _run_all(settings, subs)
    first = seen[:55]
    # Weights 50 (scale) and 5 (free): 10 to 1, and free is served from the start.
    assert sum(label.startswith("s") for label in first) == 50
    assert sum(label.startswith("f") for label in first) == 5
    assert seen.index("f0") < 11


async def test_class_order_holds_inside_a_tenant_and_among_fresh_tenants(
    settings: Settings,
) -> None:
    subs = [_sub("a", f"low{i}", cls=P.LOW) for i in range(20)]
    subs += [_sub("a", "critical", cls=P.CRITICAL), _sub("b", "b-high", cls=P.HIGH)]
    seen = await _run_all(settings, subs)
    # A's CRITICAL job does not wait behind its own LOW backlog, nor B's fresh HIGH job.
    assert seen[:2] == ["critical", "b-high"]
    assert seen[2:] == [f"low{i}" for i in range(20)]


async def test_express_lane_is_fair_among_enterprise_tenants(settings: Settings) -> None:
    subs = [_sub("e1", f"x{i}", T.ENTERPRISE) for i in range(10)]
    subs += [_sub("e2", f"y{i}", T.ENTERPRISE) for i in range(2)]
    seen = await _run_all(settings, subs)
    assert seen[:4] == ["x0", "y0", "x1", "y1"]


async def test_quota_refusal_is_all_or_nothing_and_loses_nothing(settings: Settings) -> None:
    tight = settings.model_copy(update={"tenant_backlog_quotas": {"growth": 10, "free": 0}})
    async with system(tight, Registry([_kind([])]), start=False) as sys_:
        q = sys_.queue
        await q.submit_bulk([_sub("a", f"a{i}") for i in range(8)])
        # A bulk of another tenant's job plus three of A's: A would reach 11 of 10.
        bulk = [_sub("b", "b0", T.FREE)] + [_sub("a", f"a{i}") for i in range(8, 11)]
        with pytest.raises(QuotaExceeded) as refused:
            await q.submit_bulk(bulk)
        assert refused.value.tenant_id == "a"
        assert (refused.value.backlog, refused.value.adding, refused.value.quota) == (8, 3, 10)
        assert refused.value.retry_after_s == tight.quota_retry_after_s
        [counts] = [c for c in await q.counts() if c.queue == KIND]
        assert counts.counts["waiting"] == 8  # nothing of the bulk, not even B's job
        jobs = await q.list_jobs(kind=KIND, limit=100)
        assert {j.payload["label"] for j in jobs} == {f"a{i}" for i in range(8)}
        # Up to the quota is fine; one more is refused; a cancel gives its place back.
        done = await q.submit_bulk([_sub("a", "a8"), _sub("a", "a9")])
        with pytest.raises(QuotaExceeded):
            await q.submit(_sub("a", "a10"))
        assert await q.cancel(done[0].job.id, tenant_id="a") is JobState.CANCELLED
        await q.submit(_sub("a", "a10"))
        assert (await q.fair_usage("a"))[KIND] == 10


@pytest.mark.redis_only  # the bound is read off Redis's sorted set
async def test_a_fresh_low_free_job_is_overtaken_at_most_by_the_bound(queue: JobQueue) -> None:
    heavy = [f"h{i}" for i in range(5)]
    for tenant in heavy:  # five scale tenants with CRITICAL backlogs (weight 200 each)
        await queue.submit_bulk([_sub(tenant, "x", T.SCALE, P.CRITICAL) for _ in range(400)])
    low = await queue.submit(_sub("tiny", "low", T.FREE, P.LOW))
    for tenant in heavy:  # and they keep submitting after it
        await queue.submit_bulk([_sub(tenant, "y", T.SCALE, P.CRITICAL) for _ in range(400)])
    rank = await queue.client.zrank(f"{queue.key_prefix}:{KIND}:prioritized", low.job.id)
    assert isinstance(rank, int)
    step = fair_step(P.LOW, T.FREE)
    weight = importance(P.CRITICAL, T.SCALE)
    bound = len(heavy) * (weight * step // FAIR_SCALE + 1)  # README: sum of (phi_g x ... + 1)
    assert rank <= bound < 4000


@pytest.mark.redis_only  # the rebase is read off Redis's keys
async def test_priorities_are_rebased_before_they_overflow(settings: Settings) -> None:
    small = settings.model_copy(update={"fair_rebase_at": 1000, "fair_horizon": 3000})
    assert small.redis_url is not None
    q = JobQueue(redis_client(small.redis_url, small), Registry([_kind([])]), small)
    prio = f"{small.queue_prefix}:{KIND}:prioritized"
    try:
        first = await q.submit_bulk([_sub("a", f"a{i}", T.FREE, P.LOW) for i in range(12)])
        # A consumer (like a Node worker) takes 6 jobs: the clock moves past 1000.
        for _ in range(6):
            await q.client.zpopmin(prio)
        more = await q.submit_bulk([_sub("b", f"b{i}", T.FREE, P.LOW) for i in range(3)])
        rebases = await q.client.hget(f"{small.queue_prefix}:{KIND}:sf:fair", "rebases")
        assert rebases == "1"
        order = [str(i) for i in await q.client.zrange(prio, 0, -1)]
        ids_a = [s.job.id for s in first[6:]]
        ids_b = [s.job.id for s in more]
        # Still fair and in order after the shift: A and B alternate, A's remaining first.
        assert order[:6] == [ids_a[0], ids_b[0], ids_a[1], ids_b[1], ids_a[2], ids_b[2]]
        for job_id in order:  # hash and score agree, and stay inside BullMQ's range
            record = await q.get(job_id)
            score = await q.client.zscore(prio, job_id)
            assert score is not None and int(score) // 2**32 == record.bullmq_priority
            assert 1 <= record.bullmq_priority <= 1000 + small.fair_horizon <= _MAX_PRIORITY
    finally:
        await q.close()


async def test_horizon_keeps_a_deep_backlog_inside_the_priority_range(settings: Settings) -> None:
    small = settings.model_copy(
        update={"fair_rebase_at": 1000, "fair_horizon": 1000, "tenant_backlog_quotas": {}}
    )
    async with system(small, Registry([_kind([])]), start=False) as sys_:
        done = await sys_.queue.submit_bulk([_sub("a", str(i), T.FREE, P.LOW) for i in range(50)])
        numbers = [s.job.bullmq_priority for s in done]
        assert numbers == sorted(numbers) and max(numbers) == 1000
        assert (await sys_.queue.fair_usage("a"))[KIND] == 50  # the quota counts every job


async def test_a_parked_job_reads_as_waiting_and_can_be_cancelled(settings: Settings) -> None:
    capped = settings.model_copy(update={"tenant_concurrency_caps": {"free": 1}})
    release = asyncio.Event()
    started: list[str] = []

    async def handler(payload: dict[str, str], ctx: JobContext) -> None:
        started.append(payload["label"])
        await release.wait()

    registry = Registry([JobKind(KIND, handler, concurrency=2)])
    async with system(capped, registry, start=False) as sys_:
        first = await sys_.queue.submit(_sub("a", "a0", T.FREE))
        parked = await sys_.queue.submit(_sub("a", "a1", T.FREE))
        await sys_.queue.submit(_sub("b", "b0", T.FREE, P.LOW))  # due after a1
        await sys_.runtime.start()
        # Slot 1 runs a0; a1 is parked (A is at its cap and B waits); slot 2 runs b0.
        await eventually(lambda: _now(len(started)), lambda n: n == 2)
        assert sorted(started) == ["a0", "b0"]
        record = await sys_.queue.get(parked.job.id, tenant_id="a")
        assert record.state is JobState.WAITING
        [counts] = [c for c in await sys_.queue.counts() if c.queue == KIND]
        assert counts.counts["waiting"] == 1 and counts.counts["active"] == 2
        usage = await sys_.queue.tenant_usage("a", T.FREE)
        # Redis's pop parks a1 aside; PostgreSQL's claim holds it back where it waits, and
        # its usage counts it as parked the same (queue/pg/usage.py).
        assert (usage.active, usage.cap_hits, usage.lanes[0].parked) == (1, 1, 1)
        assert await sys_.queue.cancel(parked.job.id, tenant_id="a") is JobState.CANCELLED
        release.set()
        done = await eventually(
            lambda: sys_.queue.get(first.job.id), lambda r: r.state is JobState.COMPLETED
        )
        assert done.state is JobState.COMPLETED
    assert "a1" not in started


async def test_fair_share_off_keeps_the_static_class_x_tier_numbers(settings: Settings) -> None:
    off = settings.model_copy(update={"fair_share": False, "tenant_backlog_quotas": {"free": 1}})
    async with system(off, Registry([_kind([])]), start=False) as sys_:
        done = await sys_.queue.submit_bulk([_sub("a", str(i), T.FREE) for i in range(3)])
        assert {s.job.bullmq_priority for s in done} == {bullmq_priority(P.NORMAL, T.FREE)}


@pytest.mark.redis_only  # the flow heads are Redis's sorted set and fair keys
async def test_oldest_waiting_is_found_among_the_flow_heads(queue: JobQueue) -> None:
    first = await queue.submit(_sub("a", "a0"))
    await queue.submit_bulk([_sub("a", f"a{i}") for i in range(1, 300)])
    await queue.submit_bulk([_sub(f"t{i}", "x", T.SCALE, P.CRITICAL) for i in range(50)])
    [counts] = [c for c in await queue.counts() if c.queue == KIND]
    assert counts.counts["waiting"] == 350
    assert counts.oldest_waiting_ms is not None
    oldest_created = first.job.created_at_ms
    assert counts.oldest_waiting_ms >= 0
    # The age is measured from A's first job, the oldest, though it is not the head.
    record = await queue.get(first.job.id)
    assert record.created_at_ms == oldest_created
    head = await queue.client.zrange(f"{queue.key_prefix}:{KIND}:prioritized", 0, 0)
    assert head != [first.job.id]
    assert await queue._oldest_waiting(KIND) == oldest_created


@pytest.mark.redis_only  # parking is Redis's pop script (PostgreSQL's claim skips instead)
async def test_a_worker_without_caps_puts_parked_jobs_back(settings: Settings) -> None:
    uncapped = settings.model_copy(update={"tenant_concurrency_caps": {}})
    seen: list[str] = []
    async with system(uncapped, Registry([_kind(seen)]), start=False) as sys_:
        done = await sys_.queue.submit(_sub("a", "parked"))
        base = f"{uncapped.queue_prefix}:{KIND}:"
        client = sys_.redis_queue.client
        popped = await client.zpopmin(base + "prioritized")
        job_id, score = str(popped[0][0]), float(popped[0][1])
        await client.zadd(base + "sf:park:a", {job_id: score})  # as a capped pop leaves it
        await client.zadd(base + "sf:parked", {"a": score})
        await sys_.runtime.start()
        await eventually(lambda: _now(len(seen)), lambda n: n == 1)
        assert seen == ["parked"] and job_id == done.job.id
        assert await client.exists(base + "sf:parked", base + "sf:park:a") == 0


@pytest.mark.redis_only  # the running set is a Redis key; PostgreSQL counts active rows
async def test_a_tenant_at_its_cap_by_jobs_finished_elsewhere_is_recounted(
    settings: Settings,
) -> None:
    # Jobs that left active without our finish (Node workers, stalls) stay in the
    # tenant's running set until a pop finds it full: then only the ones whose lock
    # is gone are dropped.
    capped = settings.model_copy(update={"tenant_concurrency_caps": {"free": 2}})
    seen: list[str] = []
    async with system(capped, Registry([_kind(seen)]), start=False) as sys_:
        base = f"{capped.queue_prefix}:{KIND}:"
        client = sys_.redis_queue.client
        await client.sadd(base + "sf:act:a", "live", "gone")
        await client.set(base + "live:lock", "someone", px=60_000)
        await sys_.queue.submit(_sub("a", "a0", T.FREE))
        await sys_.queue.submit(_sub("b", "b0", T.FREE, P.LOW))  # other work waits
        await sys_.runtime.start()
        await eventually(lambda: _now(len(seen)), lambda n: n == 2)
        assert seen == ["a0", "b0"]  # a0 ran first: not parked behind b0
        assert await client.hget(base + "sf:hits", "t:a") is None  # no cap hit
        members = {str(m) for m in await client.smembers(base + "sf:act:a")}
        assert "live" in members and "gone" not in members
