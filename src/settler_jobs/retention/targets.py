"""Data retention: a registry of targets, each deleting expired rows in bounded batches.

A run (`run_retention`) asks every registered `RetentionTarget` to delete what has
expired at `now` (or, with `dry_run`, to count it). Targets delete by primary key, at
most `batch_size` rows per transaction and `max_batches` batches per run, so no run
holds long locks or runs unbounded; what is left is taken by the next run. One
target's failure is reported and does not stop the others.

Plugging in a table (audit logs, error logs, exports, the email ledger...): build a
`TableTarget` with the table, its primary key column and a condition made from the
run (`tiered_before(...)` for tenant data with a tier column, or a plain cutoff), and
register it in `default_targets` (or on the registry passed to `run_retention`).
Targets with side effects beyond rows (export files) implement `RetentionTarget`
themselves: delete the files of a batch first, then its rows.

Tenant data is kept per tier (`retention_<tier>_days`); a row whose tier is missing or
unknown gets the LONGEST retention of all tiers, never the shortest.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final, Protocol

from sqlalchemy import ColumnElement, and_, delete, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import QueryableAttribute

from settler_jobs.config import Settings
from settler_jobs.domain import JobState, Tier, failure_reason
from settler_jobs.ports import QueueOps
from settler_jobs.storage.audit_tables import AuditLogRow, ErrorLogRow
from settler_jobs.storage.email_tables import EmailSendRow
from settler_jobs.storage.export_tables import ExportRow
from settler_jobs.storage.files import ObjectStore, object_store
from settler_jobs.storage.schedule_tables import ScheduleRunRow
from settler_jobs.storage.tables import Base, DlqEntryRow
from settler_jobs.storage.tenant_tables import TenantRow
from settler_jobs.storage.webhook_tables import (
    TenantNotificationRow,
    WebhookDeliveryRow,
    WebhookEventRow,
)

log = logging.getLogger(__name__)

FINAL_DELIVERY_STATUSES: Final = ("succeeded", "failed", "cancelled")
_TIER_ALIASES: Final = {"pro": Tier.GROWTH}


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    """How long each kind of data is kept (days)."""

    tier_days: dict[Tier, int]
    dlq_resolved_days: int
    schedule_runs_days: int
    keep_completed_s: int
    keep_failed_s: int

    @classmethod
    def from_settings(cls, settings: Settings) -> RetentionPolicy:
        """The policy the settings describe."""
        return cls(
            tier_days={
                Tier.FREE: settings.retention_free_days,
                Tier.STARTER: settings.retention_starter_days,
                Tier.GROWTH: settings.retention_growth_days,
                Tier.SCALE: settings.retention_scale_days,
                Tier.ENTERPRISE: settings.retention_enterprise_days,
            },
            dlq_resolved_days=settings.retention_dlq_resolved_days,
            schedule_runs_days=settings.retention_schedule_runs_days,
            keep_completed_s=settings.keep_completed_s,
            keep_failed_s=settings.keep_failed_s,
        )

    @property
    def longest_days(self) -> int:
        """The longest tier retention: what rows of an unknown tier get."""
        return max(self.tier_days.values())

    def days_for_tier(self, tier: str | None) -> int:
        """Days kept for a stored tier value; missing or unknown tiers get the longest."""
        if tier is None:
            return self.longest_days
        name = tier.strip().lower()
        parsed = _TIER_ALIASES.get(name) or next((t for t in Tier if t.value == name), None)
        return self.tier_days.get(parsed, self.longest_days) if parsed else self.longest_days


@dataclass(frozen=True, slots=True)
class RetentionRun:
    """One retention run: when it counts from, what it may do, and its handles."""

    now: datetime
    policy: RetentionPolicy
    sessions: async_sessionmaker[AsyncSession]
    queue_ops: QueueOps | None
    dry_run: bool = False
    batch_size: int = 1000
    max_batches: int = 1000
    store: ObjectStore | None = None
    """Where export files live (expired ones are deleted with their records)."""

    def before_days(self, days: int) -> datetime:
        """The cutoff `days` before `now`."""
        return self.now - timedelta(days=days)


@dataclass(slots=True)
class TargetReport:
    """What one target did: rows matched (dry run) or deleted, and whether it finished."""

    target: str
    matched: int = 0
    deleted: int = 0
    batches: int = 0
    complete: bool = True
    error: str | None = None


class RetentionTarget(Protocol):
    """Something that holds data with an expiry."""

    @property
    def name(self) -> str: ...

    async def apply(self, run: RetentionRun) -> TargetReport:
        """Delete (or with `run.dry_run` count) what has expired at `run.now`."""
        ...


Condition = Callable[[RetentionRun], ColumnElement[bool]]


def tiered_before(
    tier: QueryableAttribute[Any], moment: QueryableAttribute[Any], run: RetentionRun
) -> ColumnElement[bool]:
    """Rows older than their tier's retention; unknown or missing tiers get the longest."""
    clauses = []
    for t in Tier:
        names = [t.value, *(alias for alias, target in _TIER_ALIASES.items() if target is t)]
        cutoff = run.before_days(run.policy.tier_days[t])
        clauses.append(and_(tier.in_(names), moment < cutoff))
    known = [t.value for t in Tier] + list(_TIER_ALIASES)
    longest = run.before_days(run.policy.longest_days)
    clauses.append(and_(or_(tier.is_(None), tier.not_in(known)), moment < longest))
    return or_(*clauses)


@dataclass(frozen=True)
class TableTarget:
    """Rows of one table matching a condition, deleted by primary key in batches."""

    name: str
    model: type[Base]
    key: QueryableAttribute[Any]
    condition: Condition

    async def apply(self, run: RetentionRun) -> TargetReport:
        report = TargetReport(self.name)
        where = self.condition(run)
        if run.dry_run:
            async with run.sessions() as session:
                query = select(func.count()).select_from(self.model).where(where)
                count = await session.scalar(query)
            report.matched = int(count or 0)
            return report
        while report.batches < run.max_batches:
            # One short transaction per batch: other writers wait at most one batch.
            async with run.sessions() as session, session.begin():
                ids = list(
                    await session.scalars(
                        select(self.key).where(where).order_by(self.key).limit(run.batch_size)
                    )
                )
                if ids:
                    # The condition again: a non-unique key must not take other rows along.
                    await session.execute(
                        delete(self.model)
                        .where(self.key.in_(ids), where)
                        .execution_options(synchronize_session=False)
                    )
            if not ids:
                return report
            report.batches += 1
            report.deleted += len(ids)
            report.matched += len(ids)
            if len(ids) < run.batch_size:
                return report
        report.complete = False
        return report


@dataclass(frozen=True)
class FinishedJobsTarget:
    """Completed and failed BullMQ jobs past the keep settings, cleaned through the queue.

    Ages count from this machine's clock (BullMQ's `clean`), not from `run.now`.
    """

    name: str = "bullmq-finished-jobs"

    async def apply(self, run: RetentionRun) -> TargetReport:
        report = TargetReport(self.name)
        ops = run.queue_ops
        if ops is None:
            report.error = "no queue connection"
            return report
        plan = (
            (JobState.COMPLETED, run.policy.keep_completed_s),
            (JobState.FAILED, run.policy.keep_failed_s),
        )
        for queue in ops.registry.queues():
            for state, keep_s in plan:
                if run.dry_run:
                    report.matched += await ops.finished_before(queue, state, keep_s)
                    continue
                while report.batches < run.max_batches:
                    removed = await ops.clean_finished(queue, state, keep_s, run.batch_size)
                    report.batches += 1
                    report.deleted += removed
                    report.matched += removed
                    if removed < run.batch_size:
                        break
                else:
                    report.complete = False
        return report


@dataclass
class RetentionRegistry:
    """The retention targets, run in registration order."""

    _targets: dict[str, RetentionTarget] = field(default_factory=dict)

    def register(self, target: RetentionTarget) -> None:
        """Add a target; a name registers once."""
        if target.name in self._targets:
            raise ValueError(f"retention target {target.name!r} is already registered")
        self._targets[target.name] = target

    def __iter__(self) -> Iterator[RetentionTarget]:
        return iter(self._targets.values())

    @property
    def names(self) -> list[str]:
        """Target names in run order."""
        return list(self._targets)


@dataclass(frozen=True)
class ExpiredExportsTarget:
    """Exports past their expiry, or failed ones as old as the longest retention.

    Per batch the files go first, then the records: a crash in between leaves records
    whose file is gone (deleted again next run), never a file nobody can find.
    """

    name: str = "exports-expired"

    def _where(self, run: RetentionRun) -> ColumnElement[bool]:
        expired = and_(ExportRow.expires_at.is_not(None), ExportRow.expires_at < run.now)
        stale = and_(
            ExportRow.status == "failed",
            ExportRow.updated_at < run.before_days(run.policy.longest_days),
        )
        return or_(expired, stale)

    async def apply(self, run: RetentionRun) -> TargetReport:
        report = TargetReport(self.name)
        where = self._where(run)
        if run.dry_run:
            async with run.sessions() as session:
                count = await session.scalar(
                    select(func.count()).select_from(ExportRow).where(where)
                )
            report.matched = int(count or 0)
            return report
        while report.batches < run.max_batches:
            async with run.sessions() as session:
                rows = list(
                    (
                        await session.execute(
                            select(ExportRow.id, ExportRow.storage_key)
                            .where(where)
                            .order_by(ExportRow.id)
                            .limit(run.batch_size)
                        )
                    ).all()
                )
            if not rows:
                return report
            for _, key in rows:
                if key and run.store is not None:
                    await asyncio.to_thread(run.store.delete, key)
            async with run.sessions() as session, session.begin():
                ids = [export_id for export_id, _ in rows]
                await session.execute(delete(ExportRow).where(ExportRow.id.in_(ids)))
            report.batches += 1
            report.deleted += len(rows)
            report.matched += len(rows)
            if len(rows) < run.batch_size:
                return report
        report.complete = False
        return report


def _audit_tier() -> Any:
    """The tier of an audit row's tenant (None for system rows or unknown tenants)."""
    return select(TenantRow.tier).where(TenantRow.id == AuditLogRow.tenant_id).scalar_subquery()


def _unreferenced_events(run: RetentionRun) -> ColumnElement[bool]:
    referenced = select(WebhookDeliveryRow.event_id).where(
        WebhookDeliveryRow.event_id == WebhookEventRow.id
    )
    # Events carry no tier: they get the longest tenant retention.
    return and_(
        WebhookEventRow.created_at < run.before_days(run.policy.longest_days),
        ~referenced.exists(),
    )


def default_targets() -> RetentionRegistry:
    """The targets of the data this branch owns (add other tables here)."""
    registry = RetentionRegistry()
    dlq = DlqEntryRow
    deliveries = WebhookDeliveryRow
    notes = TenantNotificationRow
    runs = ScheduleRunRow
    for target in (
        TableTarget(
            "dlq-resolved",
            dlq,
            dlq.id,
            lambda r: and_(
                dlq.status.in_(("resolved", "retried")),
                dlq.updated_at < r.before_days(r.policy.dlq_resolved_days),
            ),
        ),
        # Attempts go with their delivery (ON DELETE CASCADE).
        TableTarget(
            "webhook-deliveries",
            deliveries,
            deliveries.id,
            lambda r: and_(
                deliveries.status.in_(FINAL_DELIVERY_STATUSES),
                tiered_before(deliveries.tier, deliveries.created_at, r),
            ),
        ),
        TableTarget(
            "webhook-events",
            WebhookEventRow,
            WebhookEventRow.id,
            _unreferenced_events,
        ),
        # Notifications carry no tier: they get the longest tenant retention.
        TableTarget(
            "tenant-notifications",
            notes,
            notes.id,
            lambda r: notes.created_at < r.before_days(r.policy.longest_days),
        ),
        TableTarget(
            "schedule-runs",
            runs,
            runs.id,
            lambda r: and_(
                runs.status != "running",
                runs.started_at < r.before_days(r.policy.schedule_runs_days),
            ),
        ),
        # Audit rows follow their tenant's tier; system rows and unknown tenants the longest.
        TableTarget(
            "audit-logs",
            AuditLogRow,
            AuditLogRow.id,
            lambda r: tiered_before(_audit_tier(), AuditLogRow.created_at, r),
        ),
        TableTarget(
            "error-logs-resolved",
            ErrorLogRow,
            ErrorLogRow.id,
            lambda r: and_(
                ErrorLogRow.resolved.is_(True),
                ErrorLogRow.resolved_at < r.before_days(r.policy.dlq_resolved_days),
            ),
        ),
        ExpiredExportsTarget(),
        # The sent-ledger only has to outlive retries: the longest tenant retention is ample.
        TableTarget(
            "email-ledger",
            EmailSendRow,
            EmailSendRow.created_at,
            lambda r: and_(
                EmailSendRow.status.in_(("sent", "failed")),
                EmailSendRow.updated_at < r.before_days(r.policy.longest_days),
            ),
        ),
        FinishedJobsTarget(),
    ):
        registry.register(target)
    return registry


async def run_retention(
    run: RetentionRun, registry: RetentionRegistry | None = None
) -> dict[str, Any]:
    """Apply every target; the report lists each target's counts (and error, if any)."""
    reports = []
    for target in registry or default_targets():
        try:
            report = await target.apply(run)
        except Exception as exc:
            log.exception("retention.target_failed", extra={"target": target.name})
            report = TargetReport(target.name, complete=False, error=failure_reason(exc)[:500])
        reports.append(report)
    return {
        "dryRun": run.dry_run,
        "now": run.now.isoformat(timespec="seconds"),
        "batchSize": run.batch_size,
        "tierDays": {t.value: d for t, d in run.policy.tier_days.items()},
        "targets": [asdict(r) for r in reports],
        "deleted": sum(r.deleted for r in reports),
        "matched": sum(r.matched for r in reports),
        "complete": all(r.complete and r.error is None for r in reports),
    }


def retention_run(
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    queue_ops: QueueOps | None,
    now: datetime,
    *,
    dry_run: bool = False,
) -> RetentionRun:
    """A run configured from the settings."""
    return RetentionRun(
        now=now,
        policy=RetentionPolicy.from_settings(settings),
        sessions=sessions,
        queue_ops=queue_ops,
        dry_run=dry_run,
        batch_size=settings.retention_batch_size,
        max_batches=settings.retention_max_batches,
        store=object_store(settings),
    )
