"""Capabilities on the PostgreSQL backend. Transactional enqueue: an export request and
its job, and a webhook delivery and its job, commit in one transaction — both or
neither. The DLQ sweep copies failed jobs from the PostgreSQL queue."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import text

from settler_jobs.dlq import capture
from settler_jobs.dlq import store as dlq_store
from settler_jobs.domain import JobState, Tier
from settler_jobs.exports import store as export_store
from settler_jobs.keyring import secret_box
from settler_jobs.net_guard import GuardPolicy
from settler_jobs.queue.pg import PgJobQueue
from settler_jobs.records import Submission
from settler_jobs.storage.db import sql_runner
from settler_jobs.webhooks import store as hook_store
from settler_jobs.webhooks.service import Webhooks
from settler_jobs.wiring import Services, open_services
from tests.api.kinds import registry
from tests.integration.queue.pg.sql import sql
from tests.integration.wiring.test_postgres_backend import _pg_settings


@pytest.fixture
async def services(postgres_database: str, tmp_path: Path) -> AsyncIterator[Services]:
    settings = _pg_settings(postgres_database, tmp_path)
    # A queue schema of the test's own; the Settler tables are the module database's.
    settings = settings.model_copy(update={"queue_schema": f"q_{uuid.uuid4().hex[:10]}"})
    async with open_services(settings, registry(), migrate=True) as opened:
        yield opened


def _pg(services: Services) -> PgJobQueue:
    assert isinstance(services.queue, PgJobQueue)
    return services.queue


async def _jobs(queue: PgJobQueue, kind: str) -> list[dict[str, object]]:
    return await sql(
        queue,
        "SELECT id, data FROM job WHERE queue IN (%s, %s) ORDER BY seq",
        (kind, f"{kind}-express"),
    )


async def test_the_job_rolls_back_with_the_callers_transaction(services: Services) -> None:
    queue = _pg(services)
    sub = Submission("echo", {"n": 1}, "acme", Tier.STARTER, idempotency_key="tx-1")
    with pytest.raises(RuntimeError):
        async with services.sessions() as session, session.begin():
            [added] = await queue.submit_in(sql_runner(session), [sub])
            assert added.created
            raise RuntimeError("the caller fails after adding")
    assert await _jobs(queue, "echo") == []
    async with services.sessions() as session, session.begin():
        [added] = await queue.submit_in(sql_runner(session), [sub])
        # Not visible outside the transaction before it commits.
        assert await _jobs(queue, "echo") == []
    [row] = await _jobs(queue, "echo")
    assert row["id"] == added.job.id
    assert (await queue.get(added.job.id, tenant_id="acme")).state is JobState.WAITING
    async with services.sessions() as session, session.begin():
        [again] = await queue.submit_in(sql_runner(session), [sub])
    assert not again.created and again.job.id == added.job.id


async def test_an_export_and_its_job_commit_together(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    queue = _pg(services)
    export = await services.exports.create_export("acme", "audit_log", "csv")
    assert export.job_id is not None
    job = await queue.get(export.job_id, tenant_id="acme")
    assert job.payload == {"exportId": export.id}

    async def fail(*args: object, **kwargs: object) -> None:
        raise RuntimeError("crash after the job was added")

    # A failure anywhere before commit leaves neither the export nor its job.
    monkeypatch.setattr(export_store, "update_export", fail)
    with pytest.raises(RuntimeError):
        await services.exports.create_export("acme", "audit_log", "csv")
    monkeypatch.undo()
    assert [e.id for e in await services.exports.list_exports("acme")] == [export.id]
    assert [r["id"] for r in await _jobs(queue, "export-generation")] == [export.job_id]


async def test_webhook_deliveries_and_their_jobs_commit_together(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    queue = _pg(services)
    hooks = Webhooks(
        services.sessions,
        queue,
        secret_box(services.settings),
        GuardPolicy.from_strings(True, ["127.0.0.0/8"]),
    )
    await hooks.create_endpoint("acme", "http://127.0.0.1:9/hooks")
    published = await hooks.publish("acme", "invoice.paid", {"n": 1})
    assert published.enqueued
    [delivery] = published.deliveries
    [row] = await _jobs(queue, "webhook-delivery")
    assert row["data"]["deliveryId"] == delivery.id  # type: ignore[index]
    async with services.sessions() as session:
        # Nothing waits in the outbox: the delivery was marked enqueued in the same commit.
        assert await hook_store.unenqueued(session, limit=10) == []

    async def fail(*args: object, **kwargs: object) -> None:
        raise RuntimeError("crash after the jobs were added")

    monkeypatch.setattr(hook_store, "mark_enqueued", fail)
    with pytest.raises(RuntimeError):
        await hooks.publish("acme", "invoice.paid", {"n": 2})
    monkeypatch.undo()
    assert len(await _jobs(queue, "webhook-delivery")) == 1
    async with services.sessions() as session:
        events = await session.execute(text("SELECT count(*) FROM webhook_events"))
    assert events.scalar_one() == 1

    # A redelivery's new generation and its job commit together too.
    await hooks.cancel_delivery("acme", delivery.id)
    again = await hooks.redeliver("acme", delivery.id)
    assert again.generation == delivery.generation + 1
    jobs = await _jobs(queue, "webhook-delivery")
    assert [j["data"]["generation"] for j in jobs] == [1, 2]  # type: ignore[index]
    async with services.sessions() as session:
        assert await hook_store.unenqueued(session, limit=10) == []


async def test_the_dlq_sweep_copies_failed_jobs_once_on_postgres(services: Services) -> None:
    queue = _pg(services)
    [sub] = await queue.submit_bulk([Submission("echo", {"n": 1}, "acme", Tier.STARTER)])
    # Failed the way a lane fails it: finished, reason and first failure in its opts.
    await sql(
        queue,
        "UPDATE job SET state = 'failed', finished_at_ms = 2000, attempts_made = 1,"
        " failed_reason = 'ValueError: bad input',"
        " opts = opts || '{\"settlerFirstFailedOn\": 1500}'::jsonb WHERE id = %s",
        (sub.job.id,),
    )
    assert await capture.sweep(queue, services.sessions) == 1
    assert await queue.dlq_cursor("echo") == 2000
    assert await capture.sweep(queue, services.sessions) == 0
    assert await queue.dlq_cursor("echo") == 2001  # stepped past a page of one ms
    async with services.sessions() as session:
        [entry] = await dlq_store.list_entries(session, tenant_id="acme")
    assert (entry.job_id, entry.error_type, entry.error_message) == (
        sub.job.id,
        "ValueError",
        "bad input",
    )
    assert int(entry.first_failed_at.timestamp() * 1000) == 1500
