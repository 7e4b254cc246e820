"""What can be exported: a registry of datasets, each a tenant-scoped query with filters.

A dataset names its columns, the column holding the tenant, a unique order (time, id)
used for keyset pagination, and a pydantic model validating its filters. Every query
carries ``tenant_id = :tenant`` (`Dataset.where`); `export_rows.stream_rows` reads the
rows in batches. Rows created after the export was requested are left out, so a retried
export writes the same rows.

Built in:

* ``audit_log``: the tenant's audit rows (`audit.record_audit`).
* ``job_history``: the tenant's jobs that failed for good (the error log). Successful
  jobs live only in Redis, and only for `keep_completed_s`, so they are not a dataset.
* ``dlq_entries``: dead letters with their triage state (payload and stack left out).
* ``webhook_deliveries``: deliveries with their event type and outcome.

More (reconciliation results) join with `register_dataset`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import ColumnElement, FromClause

from settler_jobs.errors import InvalidJob
from settler_jobs.storage.audit_tables import AuditLogRow, ErrorLogRow
from settler_jobs.storage.tables import DlqEntryRow, UTCDateTime
from settler_jobs.storage.webhook_tables import WebhookDeliveryRow, WebhookEventRow

MAX_FILTERS_BYTES: Final = 2048


class Filters(BaseModel):
    """Filters every dataset accepts: a time window on its time column."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    since: AwareDatetime | None = None
    until: AwareDatetime | None = None


Conditions = Callable[[Any], list[ColumnElement[bool]]]


@dataclass(frozen=True)
class Dataset:
    """One exportable, tenant-scoped table or join."""

    name: str
    description: str
    source: FromClause
    tenant_column: ColumnElement[Any]
    time_column: ColumnElement[Any]
    id_column: ColumnElement[Any]
    columns: tuple[tuple[str, ColumnElement[Any]], ...]
    filters_model: type[Filters] = Filters
    conditions: Conditions = lambda _filters: []

    def __post_init__(self) -> None:
        if not isinstance(self.time_column.type, UTCDateTime):
            raise ValueError(f"dataset {self.name!r}: the time column must be a UTCDateTime")
        self.position(self.time_column)
        self.position(self.id_column)

    def position(self, column: ColumnElement[Any]) -> int:
        """Where `column` is among the columns (a dataset shows its time and id columns)."""
        for i, (_, col) in enumerate(self.columns):
            if col is column:
                return i
        raise ValueError(f"dataset {self.name!r} must show its time and id columns")

    @property
    def headers(self) -> list[str]:
        """Column names, in order."""
        return [name for name, _ in self.columns]

    def parse_filters(self, raw: dict[str, Any] | None) -> Filters:
        """Validated filters; InvalidJob naming the problem."""
        raw = raw or {}
        if len(repr(raw)) > MAX_FILTERS_BYTES:
            raise InvalidJob(f"filters are larger than {MAX_FILTERS_BYTES} bytes")
        try:
            return self.filters_model.model_validate(raw)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc'])) or 'filters'}: {e['msg']}" for e in exc.errors()
            )
            raise InvalidJob(f"invalid filters for {self.name}: {problems}") from None

    def where(self, tenant_id: str, filters: Filters, until: datetime) -> list[ColumnElement[bool]]:
        """Every condition of a query: tenant, time window, dataset filters."""
        conds = [self.tenant_column == tenant_id, self.time_column <= until]
        if filters.since is not None:
            conds.append(self.time_column >= filters.since)
        if filters.until is not None:
            conds.append(self.time_column <= filters.until)
        return conds + self.conditions(filters)


_REGISTRY: dict[str, Dataset] = {}


def register_dataset(dataset: Dataset) -> None:
    """Make a dataset exportable; a name registers once."""
    if dataset.name in _REGISTRY:
        raise ValueError(f"dataset {dataset.name!r} is already registered")
    _REGISTRY[dataset.name] = dataset


def get_dataset(name: str) -> Dataset:
    """The dataset called `name`; InvalidJob listing the known ones."""
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY))
        raise InvalidJob(f"unknown dataset {name!r}; known datasets: {known}") from None


def dataset_names() -> list[str]:
    """Every registered dataset name, sorted."""
    return sorted(_REGISTRY)


# --- built-in datasets --------------------------------------------------------------------


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


def _builtins() -> list[Dataset]:
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


for _dataset in _builtins():
    register_dataset(_dataset)
