"""Reads on the PostgreSQL queue: get, lists, pages, counts, logs, backlogs, isolation."""

from __future__ import annotations

import time

import pytest

from settler_jobs.config import Settings
from settler_jobs.domain import JobState, Tier
from settler_jobs.errors import InvalidJob, NotFound
from settler_jobs.kinds import Registry
from settler_jobs.queue.pg import PgJobQueue, reads
from settler_jobs.queue.pg.open import queue_pool
from settler_jobs.records import Submission
from tests.integration.queue.pg.sql import sql


def _sub(kind: str, tenant: str, label: str, **extra: object) -> Submission:
    return Submission(kind, {"label": label}, tenant, Tier.STARTER, **extra)  # type: ignore[arg-type]


async def _finish(queue: PgJobQueue, job_id: str, *, failed: bool = False) -> None:
    """Move a waiting job to completed/failed the way a worker's SQL does."""
    row = await sql(queue, "SELECT queue FROM job WHERE id = %s", (job_id,))
    lane = row[0]["queue"]
    now = int(time.time() * 1000)
    await sql(
        queue,
        "UPDATE job SET state = 'active', processed_at_ms = %s, lock_token = 't'"
        " WHERE queue = %s AND id = %s",
        (now, lane, job_id),
    )
    if failed:
        await sql(
            queue,
            "UPDATE job SET state = 'failed', finished_at_ms = %s, failed_reason = 'boom',"
            " attempts_made = 1, lock_token = NULL WHERE queue = %s AND id = %s",
            (now, lane, job_id),
        )
    else:
        await sql(
            queue,
            "UPDATE job SET state = 'completed', finished_at_ms = %s,"
            " return_value = '\"ok\"', lock_token = NULL WHERE queue = %s AND id = %s",
            (now, lane, job_id),
        )


async def test_get_returns_the_job_and_hides_it_from_other_tenants(pg_queue: PgJobQueue) -> None:
    [sub] = await pg_queue.submit_bulk([_sub("alpha", "acme", "one")])
    job = await pg_queue.get(sub.job.id, tenant_id="acme")
    assert (job.kind, job.state, job.tenant_id, job.payload) == (
        "alpha",
        JobState.WAITING,
        "acme",
        {"label": "one"},
    )
    with pytest.raises(NotFound) as other:
        await pg_queue.get(sub.job.id, tenant_id="globex")
    with pytest.raises(NotFound) as missing:
        await pg_queue.get("no-such-job", tenant_id="globex")
    assert str(other.value) == str(missing.value).replace("no-such-job", sub.job.id)


async def test_idempotent_submit_returns_the_stored_job(pg_queue: PgJobQueue) -> None:
    [first] = await pg_queue.submit_bulk([_sub("alpha", "acme", "x", idempotency_key="k1")])
    [again] = await pg_queue.submit_bulk([_sub("alpha", "acme", "x", idempotency_key="k1")])
    assert first.created and not again.created
    assert again.job.id == first.job.id
    rows = await sql(pg_queue, "SELECT count(*) AS n FROM job")
    assert rows[0]["n"] == 1


async def test_list_browse_and_counts_follow_state_and_tenant(pg_queue: PgJobQueue) -> None:
    subs = await pg_queue.submit_bulk(
        [_sub("alpha", "acme", f"a{i}") for i in range(5)]
        + [_sub("alpha", "globex", f"g{i}") for i in range(3)]
        + [_sub("beta", "acme", "late", delay_s=60)]
    )
    ids = [s.job.id for s in subs]
    await _finish(pg_queue, ids[0])
    await _finish(pg_queue, ids[1], failed=True)

    acme = await pg_queue.list_jobs(tenant_id="acme")
    assert {j.id for j in acme} == {ids[i] for i in (0, 1, 2, 3, 4, 8)}
    assert all(j.tenant_id == "acme" for j in acme)
    failed = await pg_queue.list_jobs(state=JobState.FAILED)
    assert [(j.id, j.failure_reason) for j in failed] == [(ids[1], "boom")]
    delayed = await pg_queue.list_jobs(kind="beta", state=JobState.DELAYED)
    assert [j.id for j in delayed] == [ids[8]]

    counts = {c.queue: c for c in await pg_queue.counts()}
    assert counts["alpha"].counts == {
        "waiting": 6,
        "delayed": 0,
        "active": 0,
        "completed": 1,
        "failed": 1,
    }
    assert counts["beta"].counts["delayed"] == 1 and counts["beta"].oldest_waiting_ms is None
    assert counts["alpha"].oldest_waiting_ms is not None

    seen: list[str] = []
    cursor = ""
    while True:
        page = await pg_queue.browse(tenant_id="globex", cursor=cursor, limit=2)
        assert all(j.tenant_id == "globex" for j in page.jobs)
        seen += [j.id for j in page.jobs]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert sorted(seen) == sorted(ids[5:8])
    with pytest.raises(InvalidJob):
        await pg_queue.browse(cursor="x:y")


async def test_finish_rates_failures_and_logs(pg_queue: PgJobQueue) -> None:
    subs = await pg_queue.submit_bulk([_sub("alpha", "acme", f"a{i}") for i in range(3)])
    before = int(time.time() * 1000) - 1
    await _finish(pg_queue, subs[0].job.id)
    await _finish(pg_queue, subs[1].job.id, failed=True)
    assert (await pg_queue.finished_since(60))["alpha"] == (1, 1)
    per_minute = await pg_queue.finished_per_minute(5)
    assert sum(c for c, _ in per_minute["alpha"]) == 1
    assert sum(f for _, f in per_minute["alpha"]) == 1
    failed = await pg_queue.failed_since("alpha", before)
    assert [j.id for j in failed] == [subs[1].job.id]
    await sql(
        pg_queue,
        "INSERT INTO job_log (queue, job_id, idx, row) VALUES"
        " ('alpha', %s, 0, 'first'), ('alpha', %s, 1, 'second')",
        (subs[2].job.id, subs[2].job.id),
    )
    assert await pg_queue.job_logs(subs[2].job.id, tenant_id="acme", limit=1) == ["second"]
    with pytest.raises(NotFound):
        await pg_queue.job_logs(subs[2].job.id, tenant_id="globex")


async def test_tenant_backlog_counts_unfinished_jobs_per_tenant(pg_queue: PgJobQueue) -> None:
    await pg_queue.submit_bulk(
        [_sub("alpha", "acme", f"a{i}") for i in range(3)]
        + [_sub("beta", "globex", "g", delay_s=30)]
    )
    scan = await pg_queue.tenant_backlog(per_lane=2)
    assert scan.truncated and scan.scanned == 3
    assert scan.tenants["acme"].waiting == {"alpha": 2}
    assert scan.tenants["globex"].delayed == {"beta": 1}
    full = await pg_queue.tenant_backlog()
    assert not full.truncated and full.tenants["acme"].waiting == {"alpha": 3}
    assert full.tenants["acme"].oldest_waiting_created_ms is not None


async def test_browse_reads_at_most_scan_limit_jobs_per_page(pg_queue: PgJobQueue) -> None:
    others = await pg_queue.submit_bulk([_sub("alpha", "globex", f"g{i}") for i in range(5)])
    # Segments go lane by lane: acme's job sits in a lane after globex's.
    [mine] = await pg_queue.submit_bulk([_sub("beta", "acme", "mine")])
    first = await pg_queue.browse(tenant_id="acme", state=JobState.WAITING, scan_limit=3)
    # Three of globex's jobs were read (ids and tenants only), none of them shown.
    assert (first.jobs, first.scanned) == ([], 3)
    assert first.next_cursor is not None
    rest = await pg_queue.browse(
        tenant_id="acme", state=JobState.WAITING, cursor=first.next_cursor, scan_limit=3
    )
    assert [j.id for j in rest.jobs] == [mine.job.id]
    assert rest.scanned == 3  # globex's last two, then acme's
    newest = await pg_queue.list_jobs(limit=2)
    assert [j.id for j in newest] == [mine.job.id, others[-1].job.id]


async def _waiting(queue: PgJobQueue) -> int:
    return sum(c.counts["waiting"] for c in await queue.counts())


async def test_counts_of_a_big_schema_are_shared_for_a_moment(
    pg_queue: PgJobQueue, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(reads, "COUNT_CACHE_FROM_JOBS", 10)  # "big" from 10 jobs on
    monkeypatch.setattr(reads, "COUNT_CACHE_AGE_MS", 600_000)
    await pg_queue.submit_bulk([_sub("alpha", "t1", str(i)) for i in range(12)])
    assert await _waiting(pg_queue) == 12  # counted, and kept for the others
    await pg_queue.submit_bulk([_sub("alpha", "t1", f"more-{i}") for i in range(3)])
    assert await _waiting(pg_queue) == 12  # the shared figures, still young
    # Another caller recounting (it holds the lock): old figures rather than a second scan.
    monkeypatch.setattr(reads, "COUNT_CACHE_AGE_MS", 0)
    async with pg_queue.pool.connection() as other, other.transaction():
        await other.execute("SELECT pg_advisory_xact_lock(1396919892, hashtext(current_schema()))")
        assert await _waiting(pg_queue) == 12
    assert await _waiting(pg_queue) == 15  # too old: recounted
    # Below the threshold counts are exact again, and the shared figures are dropped.
    monkeypatch.setattr(reads, "COUNT_CACHE_FROM_JOBS", 1_000)
    await pg_queue.submit(_sub("beta", "t2", "one"))
    assert await _waiting(pg_queue) == 16
    assert await sql(pg_queue, "SELECT total FROM settler_count_cache") == []


async def test_a_recount_cut_by_the_statement_limit_answers_the_last_figures(
    pg_queue: PgJobQueue,
    pg_settings: Settings,
    pg_registry: Registry,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(reads, "COUNT_CACHE_FROM_JOBS", 10)
    monkeypatch.setattr(reads, "COUNT_CACHE_AGE_MS", 0)  # every call recounts
    await pg_queue.submit_bulk([_sub("alpha", "t1", str(i)) for i in range(12)])
    assert await _waiting(pg_queue) == 12
    await pg_queue.submit_bulk([_sub("alpha", "t1", f"more-{i}") for i in range(3)])
    # The API's pool bounds statements; a recount stuck behind a lock is cut by it.
    api = PgJobQueue(pg_registry, pg_settings, queue_pool(pg_settings, timeout_s=0.3))
    try:
        await api.ready()
        async with pg_queue.pool.connection() as other, other.transaction():
            await other.execute("LOCK TABLE job IN ACCESS EXCLUSIVE MODE")
            assert await _waiting(api) == 12  # the last shared figures, not an error
        assert await _waiting(api) == 15
    finally:
        await api.close()
