"""The built-in datasets:

* ``audit_log``: the tenant's audit rows (`audit.record_audit`).
* ``job_history``: the tenant's jobs that failed for good (the error log). Successful
  jobs live only in Redis, and only for `keep_completed_s`, so they are not a dataset.
* ``dlq_entries``: dead letters with their triage state (payload and stack left out).
* ``webhook_deliveries``: deliveries with their event type and outcome.

* ``reconciliation_matches`` / ``_discrepancies`` / ``_unmatched``: one run's results
  (filter ``run_id`` required), joined to the run for its tenant.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field
from sqlalchemy import ColumnElement, FromClause

from settler_jobs.exports.definition import Conditions, Dataset, Filters
from settler_jobs.storage.audit_tables import AuditLogRow, ErrorLogRow
from settler_jobs.storage.reconcile_tables import (
    ReconciliationDiscrepancyRow,
    ReconciliationMatchRow,
    ReconciliationRunRow,
    ReconciliationUnmatchedRow,
)
from settler_jobs.storage.tables import DlqEntryRow
from settler_jobs.storage.webhook_tables import WebhookDeliveryRow, WebhookEventRow


class AuditFilters(Filters):
    """Audit log filters."""

    action: str | None = Field(default=None, max_length=64)
    actor: str | None = Field(default=None, max_length=128)
    target_type: str | None = Field(default=None, max_length=64)


def _audit_conditions(f: AuditFilters) -> list[ColumnElement[bool]]:
    conds: list[ColumnElement[bool]] = []
    if f.action is not None:
        conds.append(AuditLogRow.action == f.action)
    if f.actor is not None:
        conds.append(AuditLogRow.actor == f.actor)
    if f.target_type is not None:
        conds.append(AuditLogRow.target_type == f.target_type)
    return conds


class JobHistoryFilters(Filters):
    """Error log filters."""

    kind: str | None = Field(default=None, max_length=64)
    resolved: bool | None = None


def _job_conditions(f: JobHistoryFilters) -> list[ColumnElement[bool]]:
    conds: list[ColumnElement[bool]] = []
    if f.kind is not None:
        conds.append(ErrorLogRow.kind == f.kind)
    if f.resolved is not None:
        conds.append(ErrorLogRow.resolved.is_(f.resolved))
    return conds


class DlqFilters(Filters):
    """Dead-letter filters."""

    kind: str | None = Field(default=None, max_length=64)
    status: Literal["open", "resolved", "retried"] | None = None


def _dlq_conditions(f: DlqFilters) -> list[ColumnElement[bool]]:
    conds: list[ColumnElement[bool]] = []
    if f.kind is not None:
        conds.append(DlqEntryRow.kind == f.kind)
    if f.status is not None:
        conds.append(DlqEntryRow.status == f.status)
    return conds


class DeliveryFilters(Filters):
    """Webhook delivery filters."""

    status: Literal["pending", "delivering", "succeeded", "failed", "cancelled"] | None = None
    endpoint_id: str | None = Field(default=None, max_length=32)
    event_type: str | None = Field(default=None, max_length=128)


def _delivery_conditions(f: DeliveryFilters) -> list[ColumnElement[bool]]:
    conds: list[ColumnElement[bool]] = []
    if f.status is not None:
        conds.append(WebhookDeliveryRow.status == f.status)
    if f.endpoint_id is not None:
        conds.append(WebhookDeliveryRow.endpoint_id == f.endpoint_id)
    if f.event_type is not None:
        conds.append(WebhookEventRow.event_type == f.event_type)
    return conds


class RunFilters(Filters):
    """Which reconciliation run (required); `since`/`until` apply to the run's start."""

    run_id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")


class UnmatchedFilters(RunFilters):
    """One side of a run's unmatched items (positions count per side)."""

    side: Literal["source", "target"]


def _run_conditions(table: Any) -> Conditions:
    def conditions(f: RunFilters) -> list[ColumnElement[bool]]:
        conds = [table.c.run_id == f.run_id]
        side = getattr(f, "side", None)
        if side is not None:
            conds.append(table.c.side == side)
        return conds

    return conditions


def reconciliation() -> list[Dataset]:
    """One reconciliation run's matches, discrepancies and unmatched items."""
    runs = ReconciliationRunRow.__table__
    m = ReconciliationMatchRow.__table__
    d = ReconciliationDiscrepancyRow.__table__
    u = ReconciliationUnmatchedRow.__table__

    def of_run(table: Any) -> FromClause:
        joined: FromClause = table.join(runs, table.c.run_id == runs.c.id)
        return joined

    return [
        Dataset(
            "reconciliation_matches",
            "One reconciliation run's matched pairs (filter run_id).",
            of_run(m),
            runs.c.tenant_id,
            runs.c.created_at,
            m.c.position,
            (
                ("position", m.c.position),
                ("run_started", runs.c.created_at),
                ("rule", m.c.rule),
                ("confidence", m.c.confidence),
                ("currency", m.c.currency),
                ("source_line", m.c.source_line),
                ("source_id", m.c.source_id),
                ("source_amount_minor", m.c.source_amount),
                ("source_at", m.c.source_at),
                ("target_line", m.c.target_line),
                ("target_id", m.c.target_id),
                ("target_amount_minor", m.c.target_amount),
                ("target_at", m.c.target_at),
            ),
            RunFilters,
            _run_conditions(m),
        ),
        Dataset(
            "reconciliation_discrepancies",
            "One reconciliation run's discrepancies (filter run_id).",
            of_run(d),
            runs.c.tenant_id,
            runs.c.created_at,
            d.c.position,
            (
                ("position", d.c.position),
                ("run_started", runs.c.created_at),
                ("rule", d.c.rule),
                ("kind", d.c.kind),
                ("source_id", d.c.source_id),
                ("source_amount_minor", d.c.source_amount),
                ("source_currency", d.c.source_currency),
                ("target_id", d.c.target_id),
                ("target_amount_minor", d.c.target_amount),
                ("target_currency", d.c.target_currency),
                ("difference_minor", d.c.difference),
            ),
            RunFilters,
            _run_conditions(d),
        ),
        Dataset(
            "reconciliation_unmatched",
            "One side of a reconciliation run's unmatched items (filter run_id and side).",
            of_run(u),
            runs.c.tenant_id,
            runs.c.created_at,
            u.c.position,
            (
                ("position", u.c.position),
                ("run_started", runs.c.created_at),
                ("side", u.c.side),
                ("line", u.c.line),
                ("external_id", u.c.external_id),
                ("amount_minor", u.c.amount),
                ("currency", u.c.currency),
                ("occurred_at", u.c.occurred_at),
                ("reason", u.c.reason),
                ("detail", u.c.detail),
            ),
            UnmatchedFilters,
            _run_conditions(u),
        ),
    ]


def tables() -> list[Dataset]:
    """The audit log, job history, dead letters and webhook deliveries."""
    tables = (AuditLogRow, ErrorLogRow, DlqEntryRow, WebhookDeliveryRow, WebhookEventRow)
    a, e, d, w, ev = (t.__table__.c for t in tables)
    return [
        Dataset(
            "audit_log",
            "Who changed what, when.",
            a.tenant_id.table,
            a.tenant_id,
            a.created_at,
            a.id,
            (
                ("id", a.id),
                ("time", a.created_at),
                ("actor", a.actor),
                ("action", a.action),
                ("target_type", a.target_type),
                ("target_id", a.target_id),
                ("details", a.details),
            ),
            AuditFilters,
            _audit_conditions,
        ),
        Dataset(
            "job_history",
            "Jobs that failed for good (the error log).",
            e.tenant_id.table,
            e.tenant_id,
            e.created_at,
            e.id,
            (
                ("id", e.id),
                ("failed_at", e.created_at),
                ("kind", e.kind),
                ("queue", e.queue),
                ("job_id", e.job_id),
                ("attempts", e.attempts),
                ("error_type", e.error_type),
                ("error_message", e.error_message),
                ("resolved", e.resolved),
                ("resolved_at", e.resolved_at),
            ),
            JobHistoryFilters,
            _job_conditions,
        ),
        Dataset(
            "dlq_entries",
            "Dead letters and their triage state.",
            d.tenant_id.table,
            d.tenant_id,
            d.created_at,
            d.id,
            (
                ("id", d.id),
                ("created_at", d.created_at),
                ("kind", d.kind),
                ("job_id", d.job_id),
                ("status", d.status),
                ("attempts", d.attempts),
                ("error_type", d.error_type),
                ("error_message", d.error_message),
                ("last_failed_at", d.last_failed_at),
                ("retried_job_id", d.retried_job_id),
                ("resolved_by", d.resolved_by),
                ("notes", d.notes),
            ),
            DlqFilters,
            _dlq_conditions,
        ),
        Dataset(
            "webhook_deliveries",
            "Webhook deliveries and their outcome.",
            w.id.table.join(ev.id.table, w.event_id == ev.id),
            w.tenant_id,
            w.created_at,
            w.id,
            (
                ("id", w.id),
                ("created_at", w.created_at),
                ("event_type", ev.event_type),
                ("event_id", w.event_id),
                ("endpoint_id", w.endpoint_id),
                ("status", w.status),
                ("attempts", w.attempts),
                ("last_status_code", w.last_status_code),
                ("last_error", w.last_error),
                ("updated_at", w.updated_at),
            ),
            DeliveryFilters,
            _delivery_conditions,
        ),
    ]
