"""The DLQ store against real databases: SQLite and PostgreSQL (see conftest.py)."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from settler_jobs import errors
from settler_jobs.dlq import store as dlq
from settler_jobs.dlq.store import DlqEntry, DlqStatus, FailureRecord
from settler_jobs.redaction import REDACTED
from settler_jobs.storage.db import create_engine
from settler_jobs.storage.migrate import alembic_config, current_revision, upgrade
from settler_jobs.storage.tables import Base

Sessions = async_sessionmaker[AsyncSession]
T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


BASE = FailureRecord(
    queue="settler.webhook",
    kind="webhook.deliver",
    job_id="job-1",
    tenant_id="tenant-a",
    tier="growth",
    payload={"webhookId": "wh_1", "url": "https://example.test/hook"},
    error_type="TimeoutError",
    error_message="gave up after 3 attempts",
    stacktrace="Traceback ...",
    attempts=3,
    failed_at_ms=1_714_564_800_000,
    first_failed_at=T0 - timedelta(minutes=5),
    last_failed_at=T0,
)


def failure(**changes: Any) -> FailureRecord:
    return dataclasses.replace(BASE, **changes)


async def record(sessions: Sessions, rec: FailureRecord, now: datetime = T0) -> DlqEntry:
    async with sessions() as session, session.begin():
        entry = await dlq.record_failure(session, rec, now)
    assert entry is not None
    return entry


def _schema_diff(connection: Connection) -> list[Any]:
    return list(compare_metadata(MigrationContext.configure(connection), Base.metadata))


def test_migrations_reach_head_and_round_trip(db_url: str) -> None:
    head = ScriptDirectory.from_config(alembic_config(db_url)).get_current_head()
    assert head is not None and head >= "0001"
    assert current_revision(db_url) == head
    command.downgrade(alembic_config(db_url), "base")
    assert current_revision(db_url) is None
    upgrade(db_url)
    assert current_revision(db_url) == head


async def test_migrated_schema_matches_the_models(db_url: str) -> None:
    engine = create_engine(db_url)
    try:
        async with engine.connect() as connection:
            assert await connection.run_sync(_schema_diff) == []
    finally:
        await engine.dispose()


async def test_record_failure_is_idempotent(db_session_factory: Sessions) -> None:
    first = await record(db_session_factory, failure())
    async with db_session_factory() as session, session.begin():
        assert await dlq.record_failure(session, failure(), T0 + timedelta(seconds=1)) is None
        again = failure(failed_at_ms=failure().failed_at_ms + 1)
        second = await dlq.record_failure(session, again, T0)
    async with db_session_factory() as session:
        entries = await dlq.list_entries(session)
        await dlq.record_failure(session, failure(job_id="job-rolled-back"), T0)
        await session.rollback()  # the caller owns the transaction
    async with db_session_factory() as session:
        assert await dlq.count_open(session) == 2
    assert first.status is DlqStatus.OPEN
    assert second is not None
    assert {e.id for e in entries} == {first.id, second.id}


async def test_concurrent_records_store_one_entry(db_session_factory: Sessions) -> None:
    async def attempt() -> DlqEntry | None:
        async with db_session_factory() as session, session.begin():
            return await dlq.record_failure(session, failure(), T0)

    results = await asyncio.gather(*(attempt() for _ in range(4)))
    assert sum(r is not None for r in results) == 1


async def test_payload_is_redacted_and_errors_truncated(db_session_factory: Sessions) -> None:
    secret_payload = {
        "tenantId": "tenant-a",
        "apiKey": "k-123456789",
        "target": {"url": "postgres://app:hunter2@db.internal/app", "idempotencyKey": "i-1"},
        "headers": ["Authorization: Bearer abcdefgh12345678"],
    }
    rec = failure(payload=secret_payload, error_message="m" * 5000, stacktrace="s" * 30_000)
    entry = await record(db_session_factory, rec)
    async with db_session_factory() as session:
        raw = (await session.execute(text("SELECT payload FROM dlq_entries"))).scalar_one()
        stored = await dlq.get_entry(session, entry.id)
    for secret in ("k-123456789", "hunter2", "abcdefgh12345678"):
        assert secret not in str(raw)
    assert stored.payload["apiKey"] == REDACTED
    assert stored.payload["tenantId"] == "tenant-a"
    assert stored.payload["target"] == {
        "url": f"postgres://app:{REDACTED}@db.internal/app",
        "idempotencyKey": "i-1",
    }
    assert len(stored.error_message) == dlq.MAX_ERROR_MESSAGE
    assert len(stored.stacktrace) == dlq.MAX_STACKTRACE


async def _seed_listing(sessions: Sessions) -> dict[str, DlqEntry]:
    specs = {
        "a-hook": ("tenant-a", "webhook.deliver"),
        "a-export": ("tenant-a", "report.export"),
        "b-hook": ("tenant-b", "webhook.deliver"),
        "a-hook-2": ("tenant-a", "webhook.deliver"),
        "none": (None, "webhook.deliver"),
    }
    seeded = {}
    for i, (name, (tenant, kind)) in enumerate(specs.items()):
        rec = failure(job_id=f"job-{name}", tenant_id=tenant, kind=kind)
        seeded[name] = await record(sessions, rec, T0 + timedelta(seconds=i))
    return seeded


async def test_list_filters_by_tenant_kind_and_status(db_session_factory: Sessions) -> None:
    seeded = await _seed_listing(db_session_factory)
    async with db_session_factory() as session, session.begin():
        await dlq.resolve(
            session, seeded["a-hook"].id, note="fixed", actor="ops", now=T0 + timedelta(hours=1)
        )
        everything = await dlq.list_entries(session)
        tenant_a = await dlq.list_entries(session, tenant_id="tenant-a")
        hooks = await dlq.list_entries(session, kind="webhook.deliver")
        open_a = await dlq.list_entries(session, tenant_id="tenant-a", status=DlqStatus.OPEN)
        resolved = await dlq.list_entries(session, status=DlqStatus.RESOLVED)
    names = {entry.id: name for name, entry in seeded.items()}
    assert [names[e.id] for e in everything] == ["none", "a-hook-2", "b-hook", "a-export", "a-hook"]
    assert [names[e.id] for e in tenant_a] == ["a-hook-2", "a-export", "a-hook"]
    assert [names[e.id] for e in hooks] == ["none", "a-hook-2", "b-hook", "a-hook"]
    assert [names[e.id] for e in open_a] == ["a-hook-2", "a-export"]
    assert [names[e.id] for e in resolved] == ["a-hook"]


async def test_list_paginates_with_before(db_session_factory: Sessions) -> None:
    # Half the entries share one created_at: the id breaks the tie.
    for i in range(7):
        now = T0 if i < 4 else T0 + timedelta(seconds=i)
        await record(db_session_factory, failure(job_id=f"job-{i}"), now)
    pages: list[list[DlqEntry]] = []
    async with db_session_factory() as session:
        full = await dlq.list_entries(session, limit=10_000)
        before: str | None = None
        while page := await dlq.list_entries(session, limit=3, before=before):
            pages.append(page)
            before = page[-1].id
        assert len(await dlq.list_entries(session, limit=0)) == 1
    assert [len(p) for p in pages] == [3, 3, 1]
    assert [e.id for p in pages for e in p] == [e.id for e in full]
    assert len(full) == 7


async def test_other_tenants_entries_look_missing(db_session_factory: Sessions) -> None:
    seeded = await _seed_listing(db_session_factory)
    b_hook = seeded["b-hook"].id
    async with db_session_factory() as session, session.begin():
        assert (await dlq.get_entry(session, b_hook, tenant_id="tenant-b")).id == b_hook
        assert (await dlq.get_entry(session, b_hook)).tenant_id == "tenant-b"
        for call in (
            dlq.get_entry(session, b_hook, tenant_id="tenant-a"),
            dlq.get_entry(session, "0" * 32, tenant_id="tenant-a"),
            dlq.get_entry(session, seeded["none"].id, tenant_id="tenant-a"),
            dlq.resolve(session, b_hook, note="x", actor="a", now=T0, tenant_id="tenant-a"),
            dlq.list_entries(session, tenant_id="tenant-a", before=b_hook),
        ):
            with pytest.raises(errors.NotFound):
                await call
        assert await dlq.count_open(session, tenant_id="tenant-a") == 3
        assert await dlq.count_open(session) == 5


async def test_resolve_records_who_when_and_why(db_session_factory: Sessions) -> None:
    entry = await record(db_session_factory, failure())
    later = T0 + timedelta(hours=2)
    async with db_session_factory() as session, session.begin():
        done = await dlq.resolve(session, entry.id, note=" fixed it ", actor="ops@x", now=later)
        with pytest.raises(errors.InvalidState):
            await dlq.resolve(session, entry.id, note="again", actor="ops@x", now=later)
        with pytest.raises(errors.InvalidState):
            await dlq.mark_retried(session, entry.id, new_job_id="job-2", actor="o", now=later)
        noted = await dlq.add_note(session, entry.id, note="checked", actor="lead", now=later)
    async with db_session_factory() as session:
        stored = await dlq.get_entry(session, entry.id, tenant_id="tenant-a")
    assert done.status is DlqStatus.RESOLVED and done.resolved_by == "ops@x"
    assert stored == noted
    assert stored.notes.splitlines() == [
        "[2024-05-01T14:00:00Z] ops@x: resolved: fixed it",
        "[2024-05-01T14:00:00Z] lead: checked",
    ]
    assert stored.updated_at == later and stored.created_at == T0


async def test_mark_retried_links_the_new_job(db_session_factory: Sessions) -> None:
    entry = await record(db_session_factory, failure())
    async with db_session_factory() as session, session.begin():
        retried = await dlq.mark_retried(
            session, entry.id, new_job_id="job-new", actor="ops", now=T0, tenant_id="tenant-a"
        )
        with pytest.raises(errors.InvalidState):
            await dlq.mark_retried(session, entry.id, new_job_id="job-3", actor="ops", now=T0)
        with pytest.raises(errors.InvalidState):
            await dlq.resolve(session, entry.id, note="", actor="ops", now=T0)
        assert await dlq.count_open(session) == 0
    assert retried.status is DlqStatus.RETRIED
    assert retried.retried_job_id == "job-new"
    assert retried.notes == "[2024-05-01T12:00:00Z] ops: retried as job job-new"


async def test_timestamps_come_back_aware_utc(db_session_factory: Sessions) -> None:
    plus_two = timezone(timedelta(hours=2))
    rec = failure(
        first_failed_at=datetime(2024, 5, 1, 13, 0, tzinfo=plus_two),
        last_failed_at=datetime(2024, 5, 1, 14, 0, 0, 123456, tzinfo=plus_two),
    )
    entry = await record(db_session_factory, rec, now=T0.astimezone(plus_two))
    async with db_session_factory() as session:
        stored = await dlq.get_entry(session, entry.id)
    for moment in (stored.first_failed_at, stored.last_failed_at, stored.created_at):
        assert moment.tzinfo is UTC
    assert stored.first_failed_at == datetime(2024, 5, 1, 11, 0, tzinfo=UTC)
    assert stored.last_failed_at == datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)
    assert stored.created_at == stored.updated_at == T0


async def test_refused_calls_change_nothing(db_session_factory: Sessions) -> None:
    entry = await record(db_session_factory, failure())
    naive = datetime(2024, 5, 1)
    async with db_session_factory() as session, session.begin():
        with pytest.raises(ValueError, match="naive"):
            await dlq.record_failure(session, failure(job_id="job-2"), naive)
        with pytest.raises(ValueError, match="naive"):
            await dlq.record_failure(session, failure(job_id="job-3", last_failed_at=naive), T0)
        with pytest.raises(ValueError, match="naive"):
            await dlq.resolve(session, entry.id, note="ok", actor="ops", now=naive)
        with pytest.raises(ValueError):
            await dlq.mark_retried(session, entry.id, new_job_id="", actor="ops", now=T0)
        with pytest.raises(ValueError):
            await dlq.add_note(session, entry.id, note="ok", actor="ops", now=naive)
        with pytest.raises(ValueError, match="2000"):
            await dlq.add_note(session, entry.id, note="n" * 2001, actor="ops", now=T0)
        with pytest.raises(ValueError, match="empty"):
            await dlq.add_note(session, entry.id, note="  ", actor="ops", now=T0)
        with pytest.raises(ValueError, match="2000"):
            await dlq.resolve(session, entry.id, note="n" * 2001, actor="ops", now=T0)
        with pytest.raises(ValueError, match="actor"):
            await dlq.resolve(session, entry.id, note="ok", actor="", now=T0)
        assert await dlq.get_entry(session, entry.id) == entry


async def test_concurrent_transitions_let_one_win(db_session_factory: Sessions) -> None:
    entry = await record(db_session_factory, failure())

    resolved_uncommitted, retry_begun = asyncio.Event(), asyncio.Event()

    async def resolve_slowly() -> None:
        async with db_session_factory() as session, session.begin():
            await dlq.resolve(session, entry.id, note="", actor="a", now=T0 + timedelta(hours=1))
            resolved_uncommitted.set()
            await asyncio.wait_for(retry_begun.wait(), 10)  # commit only once B is under way

    async def retry_meanwhile() -> None:
        await asyncio.wait_for(resolved_uncommitted.wait(), 10)
        async with db_session_factory() as session, session.begin():
            retry_begun.set()
            await dlq.mark_retried(session, entry.id, new_job_id="j", actor="b", now=T0)

    results = await asyncio.gather(resolve_slowly(), retry_meanwhile(), return_exceptions=True)
    assert results[0] is None
    assert isinstance(results[1], errors.InvalidState)
    async with db_session_factory() as session:
        stored = await dlq.get_entry(session, entry.id)
    assert (stored.status, stored.resolved_by) == (DlqStatus.RESOLVED, "a")
