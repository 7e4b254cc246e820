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

Tenant data is kept per tier (see `retention.policy`); the kinds of target are in
`retention.target_types`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any, Final

from sqlalchemy import ColumnElement, and_, select

from settler_jobs.domain import failure_reason
from settler_jobs.retention.policy import (
    RetentionPolicy,
    RetentionRun,
    retention_run,
    tiered_before,
)
from settler_jobs.retention.target_types import (
    ExpiredExportsTarget,
    FinishedJobsTarget,
    RetentionTarget,
    TableTarget,
    TargetReport,
)
from settler_jobs.storage.audit_tables import AuditLogRow, ErrorLogRow
from settler_jobs.storage.email_tables import EmailSendRow
from settler_jobs.storage.schedule_tables import ScheduleRunRow
from settler_jobs.storage.tables import DlqEntryRow
from settler_jobs.storage.tenant_tables import TenantRow
from settler_jobs.storage.webhook_tables import (
    TenantNotificationRow,
    WebhookDeliveryRow,
    WebhookEventRow,
)

__all__ = [
    "FINAL_DELIVERY_STATUSES",
    "ExpiredExportsTarget",
    "FinishedJobsTarget",
    "RetentionPolicy",
    "RetentionRegistry",
    "RetentionRun",
    "RetentionTarget",
    "TableTarget",
    "TargetReport",
    "default_targets",
    "retention_run",
    "run_retention",
    "tiered_before",
]

log = logging.getLogger(__name__)

FINAL_DELIVERY_STATUSES: Final = ("succeeded", "failed", "cancelled")


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
