"""Data retention against real databases (SQLite and PostgreSQL) with a fixed clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

import settler_jobs.storage.schedule_tables as st
from settler_jobs.config import Settings
from settler_jobs.retention.targets import (
    RetentionRegistry,
    RetentionRun,
    default_targets,
    retention_run,
    run_retention,
)
from settler_jobs.storage.audit_tables import AuditLogRow, ErrorLogRow
from settler_jobs.storage.email_tables import EmailSendRow
from settler_jobs.storage.export_tables import ExportRow
from settler_jobs.storage.files import LocalStore
from settler_jobs.storage.tables import Base, DlqEntryRow
from settler_jobs.storage.tenant_tables import TenantRow
from settler_jobs.storage.webhook_tables import (
    TenantNotificationRow,
    WebhookAttemptRow,
    WebhookDeliveryRow,
    WebhookEndpointRow,
    WebhookEventRow,
)

Sessions = async_sessionmaker[AsyncSession]
NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def _ago(days: int) -> datetime:
    return NOW - timedelta(days=days)


def _dlq(entry_id: str, status: str, days: int) -> DlqEntryRow:
    return DlqEntryRow(
        id=entry_id,
        queue="email-sending",
        kind="email-sending",
        job_id=f"j{entry_id}",
        tenant_id="t1",
        tier="free",
        payload={},
        error_type="E",
        error_message="m",
        stacktrace="",
        attempts=1,
        failed_at_ms=1,
        first_failed_at=_ago(days),
        last_failed_at=_ago(days),
        status=status,
        created_at=_ago(days),
        updated_at=_ago(days),
    )


def _delivery(delivery_id: str, tier: str, days: int, status: str = "succeeded") -> list[Base]:
    event = WebhookEventRow(
        id=f"evt_{delivery_id}", tenant_id="t1", event_type="x", payload={}, created_at=_ago(days)
    )
    delivery = WebhookDeliveryRow(
        id=delivery_id,
        tenant_id="t1",
        endpoint_id="ep1",
        event_id=event.id,
        status=status,
        tier=tier,
        created_at=_ago(days),
        updated_at=_ago(days),
    )
    return [event, delivery]


async def _seed(sessions: Sessions) -> None:
    rows: list[Base] = [
        WebhookEndpointRow(
            id="ep1",
            tenant_id="t1",
            url="https://example.com/hook",
            secret_ciphertext="sealed",
            secret_hint="whsec_...",
            created_at=_ago(500),
            updated_at=_ago(500),
        ),
        _dlq("resolved-old", "resolved", 40),
        _dlq("retried-old", "retried", 40),
        _dlq("resolved-new", "resolved", 10),
        _dlq("open-old", "open", 400),
        *_delivery("free-old", "free", 20),
        *_delivery("free-new", "free", 10),
        *_delivery("enterprise-old", "enterprise", 200),
        *_delivery("unknown-200", "gold", 200),
        *_delivery("unknown-400", "gold", 400),
        *_delivery("pending-old", "free", 400, status="pending"),
        *_delivery("pro-100", "pro", 100),
        WebhookEventRow(
            id="evt_orphan_old", tenant_id="t1", event_type="x", payload={}, created_at=_ago(400)
        ),
        WebhookEventRow(
            id="evt_orphan_new", tenant_id="t1", event_type="x", payload={}, created_at=_ago(100)
        ),
        TenantNotificationRow(
            id="n-old", tenant_id="t1", kind="k", subject="s", body="b", created_at=_ago(400)
        ),
        TenantNotificationRow(
            id="n-new", tenant_id="t1", kind="k", subject="s", body="b", created_at=_ago(100)
        ),
        _run("run-old", "succeeded", 40),
        _run("run-stuck", "running", 40),
        _run("run-new", "succeeded", 1),
    ]
    async with sessions() as session, session.begin():
        # Parents first: the endpoint and events before the deliveries that point at them.
        for group in (WebhookEndpointRow, WebhookEventRow):
            session.add_all([r for r in rows if isinstance(r, group)])
            await session.flush()
        session.add_all(
            [r for r in rows if not isinstance(r, WebhookEndpointRow | WebhookEventRow)]
        )
        await session.flush()
        session.add(
            WebhookAttemptRow(
                delivery_id="free-old", attempt_no=1, started_at=_ago(20), latency_ms=5
            )
        )


def _run(run_id: str, status: str, days: int) -> st.ScheduleRunRow:
    return st.ScheduleRunRow(
        id=run_id,
        schedule_id="data-retention",
        trigger="schedule",
        started_at=_ago(days),
        status=status,
    )


async def _ids(sessions: Sessions, model: type[Any]) -> set[str]:
    async with sessions() as session:
        return {str(i) for i in await session.scalars(select(model.id))}


SEEDED_TARGETS = (
    "dlq-resolved",
    "webhook-deliveries",
    "webhook-events",
    "tenant-notifications",
    "schedule-runs",
)


def _database_only(names: tuple[str, ...] = SEEDED_TARGETS) -> RetentionRegistry:
    registry = RetentionRegistry()
    for target in default_targets():
        if target.name in names:
            registry.register(target)
    return registry


def _plan(sessions: Sessions, **overrides: Any) -> RetentionRun:
    base = retention_run(Settings(retention_batch_size=2), sessions, None, NOW)
    return RetentionRun(**{**{f: getattr(base, f) for f in base.__slots__}, **overrides})


async def test_retention_deletes_expired_rows_per_tier_in_batches(
    db_session_factory: Sessions,
) -> None:
    sessions = db_session_factory
    await _seed(sessions)

    dry = await run_retention(_plan(sessions, dry_run=True), _database_only())
    counted = {t["target"]: t["matched"] for t in dry["targets"]}
    assert counted == {
        "dlq-resolved": 2,
        "webhook-deliveries": 3,
        "webhook-events": 1,
        "tenant-notifications": 1,
        "schedule-runs": 1,
    }
    assert dry["deleted"] == 0 and dry["dryRun"] is True
    assert len(await _ids(sessions, WebhookDeliveryRow)) == 7  # nothing deleted

    report = await run_retention(_plan(sessions), _database_only())
    by_target = {t["target"]: t for t in report["targets"]}
    assert by_target["webhook-deliveries"]["deleted"] == 3
    assert by_target["webhook-deliveries"]["batches"] == 2  # batches of 2 rows
    assert report["complete"] is True

    assert await _ids(sessions, DlqEntryRow) == {"resolved-new", "open-old"}
    # free after 14 days, pro as growth after 90; an unknown tier gets the longest (365).
    assert await _ids(sessions, WebhookDeliveryRow) == {
        "free-new",
        "enterprise-old",
        "unknown-200",
        "pending-old",
    }
    async with sessions() as session:
        assert await session.scalar(select(func.count()).select_from(WebhookAttemptRow)) == 0
    # Events: the unreferenced ones older than the longest retention, including the one
    # whose delivery went in this run; younger orphans stay.
    events = await _ids(sessions, WebhookEventRow)
    assert "evt_orphan_old" not in events and "evt_unknown-400" not in events
    assert {"evt_orphan_new", "evt_free-old", "evt_free-new"} <= events
    assert await _ids(sessions, TenantNotificationRow) == {"n-new"}
    assert await _ids(sessions, st.ScheduleRunRow) == {"run-stuck", "run-new"}


async def test_a_run_is_bounded_and_the_next_one_continues(db_session_factory: Sessions) -> None:
    sessions = db_session_factory
    await _seed(sessions)
    first = await run_retention(_plan(sessions, batch_size=1, max_batches=1), _database_only())
    deliveries = next(t for t in first["targets"] if t["target"] == "webhook-deliveries")
    assert (deliveries["deleted"], deliveries["complete"]) == (1, False)
    assert first["complete"] is False
    await run_retention(_plan(sessions), _database_only())
    assert len(await _ids(sessions, WebhookDeliveryRow)) == 4


async def test_a_failing_target_is_reported_and_the_others_run(
    db_session_factory: Sessions,
) -> None:
    sessions = db_session_factory
    await _seed(sessions)
    report = await run_retention(_plan(sessions))  # no queue: the BullMQ target fails
    by_target = {t["target"]: t for t in report["targets"]}
    assert by_target["bullmq-finished-jobs"]["error"] == "no queue connection"
    assert by_target["dlq-resolved"]["deleted"] == 2
    assert report["complete"] is False


async def test_audit_error_export_and_email_rows_follow_their_rules(
    db_session_factory: Sessions, tmp_path: Path
) -> None:
    sessions = db_session_factory
    store = LocalStore(tmp_path / "files")
    for key in ("exports/t1/exp_old.csv", "exports/t1/exp_new.csv"):
        with store.open_write(key) as out:
            out.write(b"a,b\r\n")
    async with sessions() as session, session.begin():
        session.add_all(
            [
                TenantRow(id="t-free", name="", tier="free", created_at=NOW, updated_at=NOW),
                TenantRow(id="t-ent", name="", tier="enterprise", created_at=NOW, updated_at=NOW),
                _audit("t-free", 20),  # free keeps 14 days: goes
                _audit("t-free", 5),
                _audit("t-ent", 200),  # enterprise keeps 365: stays
                _audit("t-gone", 200),  # unknown tenant: the longest (365), stays
                _audit(None, 400),  # system row older than the longest: goes
                _error(resolved=True, days=40),  # resolved past 30 days: goes
                _error(resolved=True, days=5),
                _error(resolved=False, days=400),  # open errors stay
                _export("exp_old", expires_days_ago=1),
                _export("exp_new", expires_days_ago=-3),
                _email("sent", 400),
                _email("sending", 400),  # in flight: stays
                _email("sent", 3),
            ]
        )
    names = ("audit-logs", "error-logs-resolved", "exports-expired", "email-ledger")
    report = await run_retention(_plan(sessions, store=store), _database_only(names))
    assert {t["target"]: t["deleted"] for t in report["targets"]} == {
        "audit-logs": 2,
        "error-logs-resolved": 1,
        "exports-expired": 1,
        "email-ledger": 1,
    }
    async with sessions() as session:
        audits = {(a.tenant_id, a.target_id) for a in await session.scalars(select(AuditLogRow))}
        exports = set(await session.scalars(select(ExportRow.id)))
        ledger = set(await session.scalars(select(EmailSendRow.status)))
    assert audits == {("t-free", "5"), ("t-ent", "200"), ("t-gone", "200")}
    assert exports == {"exp_new"}
    assert not store.exists("exports/t1/exp_old.csv") and store.exists("exports/t1/exp_new.csv")
    assert ledger == {"sending", "sent"} and len(await _ids_of_email(sessions)) == 2


def _audit(tenant: str | None, days: int) -> AuditLogRow:
    return AuditLogRow(
        actor="cli",
        tenant_id=tenant,
        action="thing.done",
        target_type="thing",
        target_id=str(days),
        details={},
        created_at=_ago(days),
    )


def _error(*, resolved: bool, days: int) -> ErrorLogRow:
    return ErrorLogRow(
        queue="q",
        kind="k",
        job_id=f"j{days}{resolved}",
        tenant_id="t1",
        error_type="E",
        error_message="m",
        attempts=1,
        created_at=_ago(days + 1),
        resolved=resolved,
        resolved_at=_ago(days) if resolved else None,
    )


def _export(export_id: str, *, expires_days_ago: int) -> ExportRow:
    return ExportRow(
        id=export_id,
        tenant_id="t1",
        tier="free",
        dataset="audit_log",
        format="csv",
        filters={},
        status="succeeded",
        storage_key=f"exports/t1/{export_id}.csv",
        expires_at=_ago(expires_days_ago),
        created_at=_ago(10),
        updated_at=_ago(10),
    )


def _email(status: str, days: int) -> EmailSendRow:
    return EmailSendRow(
        tenant_id="t1",
        idempotency_key=f"k-{status}-{days}",
        recipient="ann@example.com",
        template="welcome",
        status=status,
        attempts=1,
        job_id="j1",
        provider="outbox",
        created_at=_ago(days),
        updated_at=_ago(days),
    )


async def _ids_of_email(sessions: Sessions) -> list[str]:
    async with sessions() as session:
        return list(await session.scalars(select(EmailSendRow.idempotency_key)))
