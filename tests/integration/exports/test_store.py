"""Audit log, error log, export records and dataset streaming on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, insert, inspect
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from settler_jobs import audit
from settler_jobs.dlq import error_log
from settler_jobs.errors import InvalidJob, NotFound
from settler_jobs.exports import datasets, store
from settler_jobs.exports.generate import Limits, generate
from settler_jobs.exports.rows import stream_rows
from settler_jobs.exports.store import ExportFormat, ExportStatus
from settler_jobs.storage.audit_tables import AuditLogRow
from settler_jobs.storage.db import create_engine
from settler_jobs.storage.files import LocalStore, iter_chunks
from settler_jobs.storage.tables import Base

pytestmark = pytest.mark.postgres
Sessions = async_sessionmaker[AsyncSession]
T0 = datetime(2026, 3, 1, tzinfo=UTC)


def _schema(connection: Connection) -> tuple[set[str], list[Any]]:
    diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    return set(inspect(connection).get_table_names()), list(diff)


async def test_migration_matches_the_orm(db_url: str) -> None:
    engine = create_engine(db_url)
    try:
        async with engine.connect() as connection:
            tables, diff = await connection.run_sync(_schema)
    finally:
        await engine.dispose()
    assert {"audit_logs", "error_logs", "exports"} <= tables
    assert diff == []


async def test_audit_rows_are_redacted_bounded_and_tenant_scoped(
    db_session_factory: Sessions,
) -> None:
    async with db_session_factory() as session, session.begin():
        await audit.record_audit(
            session,
            actor="ops@example.com",
            tenant_id="acme",
            action="webhook_endpoint.create",
            target=("webhook_endpoint", "ep1"),
            details={"url": "https://x.example", "secret": "whsec_abc"},
        )
        await audit.record_audit(
            session, actor="cli", tenant_id="acme", action="big", details={"blob": "x" * 10_000}
        )
        await audit.record_audit(session, actor="cli", tenant_id="other", action="other.thing")
        await audit.record_audit(session, actor="cli", tenant_id=None, action="system.thing")
    async with db_session_factory() as session:
        acme = await audit.list_audit(session, tenant_id="acme")
        system = await audit.list_audit(session, tenant_id=None)
        filtered = await audit.list_audit(session, tenant_id="acme", action="big")
    assert [e.action for e in acme] == ["big", "webhook_endpoint.create"]
    assert acme[1].details == {"url": "https://x.example", "secret": "[REDACTED]"}
    assert acme[1].target_type == "webhook_endpoint" and acme[1].target_id == "ep1"
    assert acme[0].details["truncated"] is True
    assert [e.action for e in system] == ["system.thing"]
    assert [e.action for e in filtered] == ["big"]
    with pytest.raises(ValueError):
        async with db_session_factory() as session:
            await audit.record_audit(session, actor=" ", tenant_id="acme", action="x")


async def test_error_log_rows_resolve_per_tenant(db_session_factory: Sessions) -> None:
    async with db_session_factory() as session, session.begin():
        await error_log.record_job_failure(
            session,
            queue="email-sending",
            kind="email-sending",
            job_id="j1",
            tenant_id="acme",
            error_type="PermanentFailure",
            error_message="bad address",
            attempts=3,
            now=T0,
        )
    async with db_session_factory() as session:
        [entry] = await error_log.list_errors(session, tenant_id="acme")
        assert await error_log.list_errors(session, tenant_id="other") == []
    assert entry.kind == "email-sending" and not entry.resolved and entry.created_at == T0
    async with db_session_factory() as session, session.begin():
        with pytest.raises(NotFound):
            await error_log.resolve_error(session, entry.id, tenant_id="other", now=T0)
    async with db_session_factory() as session, session.begin():
        done = await error_log.resolve_error(session, entry.id, tenant_id="acme", now=T0)
    assert done.resolved and done.resolved_at == T0
    async with db_session_factory() as session:
        assert await error_log.list_errors(session, tenant_id="acme", resolved=False) == []


async def test_export_records_are_tenant_scoped(db_session_factory: Sessions) -> None:
    async with db_session_factory() as session, session.begin():
        export = await store.insert_export(
            session,
            tenant_id="acme",
            tier="starter",
            dataset="audit_log",
            fmt=ExportFormat.CSV,
            filters={"action": "x"},
            now=T0,
        )
    assert export.status is ExportStatus.PENDING and export.id.startswith("exp_")
    async with db_session_factory() as session, session.begin():
        with pytest.raises(NotFound):
            await store.get_export(session, export.id, tenant_id="other")
        with pytest.raises(NotFound):
            await store.update_export(
                session, export.id, tenant_id="other", now=T0, status=ExportStatus.FAILED
            )
        await store.update_export(
            session, export.id, tenant_id="acme", now=T0, status="succeeded", row_count=3
        )
    async with db_session_factory() as session:
        [listed] = await store.list_exports(session, tenant_id="acme")
        assert await store.list_exports(session, tenant_id="other") == []
    assert listed.status is ExportStatus.SUCCEEDED and listed.row_count == 3
    assert listed.filters == {"action": "x"}
    assert store.storage_key("acme", export.id, ExportFormat.PDF) == (
        f"exports/acme/{export.id}.pdf"
    )
    with pytest.raises(ValueError):
        store.storage_key("../acme", export.id, ExportFormat.CSV)
    with pytest.raises(ValueError):
        store.storage_key("acme", "exp_../../x", ExportFormat.CSV)


async def _seed_audit(sessions: Sessions, tenant: str, count: int, *, same_time: bool) -> None:
    rows = [
        {
            "actor": "seed",
            "tenant_id": tenant,
            "action": "even" if i % 2 == 0 else "odd",
            "target_type": "thing",
            "target_id": f"{tenant}-{i}",
            "details": {"i": i},
            "created_at": T0 if same_time else T0 + timedelta(seconds=i),
        }
        for i in range(count)
    ]
    async with sessions() as session, session.begin():
        await session.execute(insert(AuditLogRow), rows)


async def _stream(sessions: Sessions, tenant: str, raw: dict[str, Any], batch: int) -> list[Any]:
    ds = datasets.get_dataset("audit_log")
    out: list[Any] = []
    async for rows in stream_rows(
        sessions,
        ds,
        tenant_id=tenant,
        filters=ds.parse_filters(raw),
        until=T0 + timedelta(days=1),
        batch_rows=batch,
    ):
        assert len(rows) <= batch
        out.extend(rows)
    return out


@pytest.mark.parametrize("same_time", [True, False])
async def test_streaming_pages_every_row_once_in_order_for_one_tenant(
    db_session_factory: Sessions, same_time: bool
) -> None:
    await _seed_audit(db_session_factory, "acme", 53, same_time=same_time)
    await _seed_audit(db_session_factory, "other", 20, same_time=same_time)
    rows = await _stream(db_session_factory, "acme", {}, 7)
    assert [r[5] for r in rows] == [f"acme-{i}" for i in range(53)]
    # As a file shows them: ISO 8601 UTC text, JSON text (as the database prints it).
    assert rows[3][1] == (
        "2026-03-01T00:00:00.000000Z" if same_time else "2026-03-01T00:00:03.000000Z"
    )
    assert json.loads(rows[3][6]) == {"i": 3}
    odd = await _stream(db_session_factory, "acme", {"action": "odd"}, 5)
    assert [r[5] for r in odd] == [f"acme-{i}" for i in range(1, 53, 2)]
    if not same_time:
        window = {
            "since": (T0 + timedelta(seconds=10)).isoformat(),
            "until": (T0 + timedelta(seconds=12)).isoformat(),
        }
        assert [r[5] for r in await _stream(db_session_factory, "acme", window, 2)] == [
            "acme-10",
            "acme-11",
            "acme-12",
        ]


@pytest.mark.parametrize(
    ("dataset", "filters", "message"),
    [
        ("nope", {}, "unknown dataset"),
        ("audit_log", {"colour": "red"}, "colour"),
        ("dlq_entries", {"status": "weird"}, "status"),
        ("audit_log", {"since": "2026-01-01T00:00:00"}, "since"),
        ("job_history", {"kind": "x" * 65}, "kind"),
    ],
)
def test_bad_datasets_and_filters_are_refused(
    dataset: str, filters: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidJob, match=message):
        datasets.get_dataset(dataset).parse_filters(filters)


async def test_generation_writes_the_same_csv_on_every_database(
    db_session_factory: Sessions, tmp_path: Path
) -> None:
    await _seed_audit(db_session_factory, "acme", 12, same_time=False)
    await _seed_audit(db_session_factory, "other", 3, same_time=False)
    async with db_session_factory() as session, session.begin():
        export = await store.insert_export(
            session,
            tenant_id="acme",
            tier="free",
            dataset="audit_log",
            fmt=ExportFormat.CSV,
            filters={"action": "even"},
            now=T0 + timedelta(days=1),
        )
    objects = LocalStore(tmp_path / "files")
    done = await generate(db_session_factory, objects, export, now=T0, limits=Limits(batch_rows=4))
    data = b"".join(iter_chunks(objects.open_read(done.storage_key)))
    lines = data.decode("utf-8-sig").split("\r\n")
    assert lines[0] == "id,time,actor,action,target_type,target_id,details"
    assert [line.split(",")[1:6] for line in lines[1:-1]] == [
        [f"2026-03-01T00:00:{i:02d}.000000Z", "seed", "even", "thing", f"acme-{i}"]
        for i in range(0, 12, 2)
    ]
    assert lines[1].endswith(',"{""i"": 0}"') and lines[-1] == ""
    assert done.row_count == 6 and done.size_bytes == len(data)


def test_a_dataset_must_show_its_time_and_id_columns() -> None:
    audit_log = datasets.get_dataset("audit_log")
    without_id = tuple(c for c in audit_log.columns if c[0] != "id")
    with pytest.raises(ValueError, match="time and id"):
        datasets.Dataset(
            "broken",
            "",
            audit_log.source,
            audit_log.tenant_column,
            audit_log.time_column,
            audit_log.id_column,
            without_id,
        )
    with pytest.raises(ValueError, match="already registered"):
        datasets.register_dataset(audit_log)
