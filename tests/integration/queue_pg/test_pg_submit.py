"""Submitting on PostgreSQL, beyond the shared suite (tests/integration/queue runs on both
backends): racing idempotency keys, the table after a refusal, the Redis producer's exact
fair priorities, all-or-nothing quotas.
"""

from __future__ import annotations

import asyncio

import pytest

from settler_jobs.config import Settings
from settler_jobs.context import JobContext
from settler_jobs.domain import PriorityClass, Tier
from settler_jobs.errors import PayloadTooLarge, QuotaExceeded
from settler_jobs.kinds import JobKind, Registry
from settler_jobs.queue import JobQueue
from settler_jobs.queue.pg import PgJobQueue
from settler_jobs.records import Submission
from settler_jobs.redis_server import redis_client
from tests.integration.queue_pg.conftest import PgSystem, pg_system

pytestmark = pytest.mark.postgres
P, T = PriorityClass, Tier


def _recording_kind(name: str, seen: list[str], *, concurrency: int = 1) -> JobKind:
    async def handler(payload: dict[str, str], ctx: JobContext) -> str:
        seen.append(payload["label"])
        return payload["label"]

    return JobKind(name, handler, concurrency=concurrency)


async def _value(v: int) -> int:
    return v


async def _waiting(s: PgSystem, queue: str) -> int:
    rows = await s.fetch("SELECT count(*) FROM job WHERE queue = %s AND state = 'waiting'", queue)
    return int(rows[0][0])


async def test_same_idempotency_key_returns_the_existing_job(pg_settings: Settings) -> None:
    registry = Registry([_recording_kind("idem", [])])
    async with pg_system(pg_settings, registry, start=False) as s:
        q = s.queue
        first = await q.submit(
            Submission("idem", {"label": "a"}, "t1", T.FREE, idempotency_key="order-1")
        )
        again = await q.submit(
            Submission("idem", {"label": "b"}, "t1", T.FREE, idempotency_key="order-1")
        )
        upgraded = await q.submit(
            Submission("idem", {"label": "c"}, "t1", T.ENTERPRISE, idempotency_key="order-1")
        )
        other = await q.submit(
            Submission("idem", {"label": "d"}, "t2", T.FREE, idempotency_key="order-1")
        )
        bulk = await q.submit_bulk(
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
        assert (await _waiting(s, "idem"), await _waiting(s, "idem-express")) == (3, 0)
        # Two producers racing on one key: exactly one of them created the job.
        racing = await asyncio.gather(
            *(
                q.submit(Submission("idem", {"label": "r"}, "t4", T.FREE, idempotency_key="race"))
                for _ in range(8)
            )
        )
        assert sum(r.created for r in racing) == 1
        assert len({r.job.id for r in racing}) == 1


async def test_oversized_data_is_refused_and_nothing_is_enqueued(pg_settings: Settings) -> None:
    small = pg_settings.model_copy(update={"max_payload_bytes": 2000})
    registry = Registry([_recording_kind("sized", [])])
    async with pg_system(small, registry, start=False) as s:
        with pytest.raises(PayloadTooLarge):
            await s.queue.submit_bulk(
                [
                    Submission("sized", {"label": "ok"}, "t1", T.FREE),
                    Submission("sized", {"label": "x" * 5000}, "t1", T.FREE),
                ]
            )
        assert await s.fetch("SELECT id FROM job") == []


async def test_fair_priorities_match_the_redis_producer_exactly(
    pg_settings: Settings, settings: Settings
) -> None:
    # The same sequence of single and bulk submissions, delayed ones included, gets
    # the same BullMQ priority numbers from both backends.
    registry = Registry([_recording_kind("fair", [])])
    rounds: list[list[Submission]] = []
    for r in range(6):
        rounds.append(
            [
                Submission(
                    "fair",
                    {"label": f"{r}-{i}"},
                    f"t{(r * 7 + i) % 5}",
                    [T.FREE, T.STARTER, T.GROWTH, T.SCALE][(r + i) % 4],
                    list(P)[(r * 3 + i) % 4],
                    delay_s=30 if (r + i) % 7 == 0 else 0,
                )
                for i in range(1 + r * 5)
            ]
        )
    redis_queue = JobQueue(redis_client(settings.redis_url or "", settings), registry, settings)
    pg_queue = PgJobQueue(registry, pg_settings)
    try:
        for subs in rounds:
            ours = [d.job.bullmq_priority for d in await pg_queue.submit_bulk(subs)]
            theirs = [d.job.bullmq_priority for d in await redis_queue.submit_bulk(subs)]
            assert ours == theirs
        stored = await pg_queue.get((await pg_queue.submit(rounds[0][0])).job.id)
        assert (
            stored.bullmq_priority == (await redis_queue.submit(rounds[0][0])).job.bullmq_priority
        )
    finally:
        await redis_queue.close()
        await pg_queue.close()


async def test_backlog_quota_refuses_the_whole_bulk(pg_settings: Settings) -> None:
    quota = pg_settings.model_copy(update={"tenant_backlog_quotas": {"free": 5}})
    registry = Registry([_recording_kind("quota", [])])
    async with pg_system(quota, registry, start=False) as s:
        q = s.queue
        await q.submit_bulk([Submission("quota", {"label": "a"}, "t1", T.FREE)] * 3)
        with pytest.raises(QuotaExceeded) as info:
            await q.submit_bulk(
                [
                    Submission("quota", {"label": "b"}, "t2", T.FREE),
                    Submission("quota", {"label": "c"}, "t1", T.FREE),
                    Submission("quota", {"label": "d"}, "t1", T.FREE),
                    Submission("quota", {"label": "e"}, "t1", T.FREE),
                ]
            )
        assert (info.value.tenant_id, info.value.backlog, info.value.quota) == ("t1", 3, 5)
        assert await _waiting(s, "quota") == 3  # t2's job was not added either
        refusals = await s.fetch(
            "SELECT n FROM settler_fair_counter WHERE queue = 'settler:quota-refusals' "
            "AND key = 'free'"
        )
        assert refusals == [(1,)]
        # Within the quota it goes through; other tenants are unaffected.
        await q.submit_bulk([Submission("quota", {"label": "f"}, "t1", T.FREE)] * 2)
        await q.submit_bulk([Submission("quota", {"label": "g"}, "t2", T.FREE)] * 5)
        assert await _waiting(s, "quota") == 10
