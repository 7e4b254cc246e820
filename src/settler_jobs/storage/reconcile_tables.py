"""Reconciliation tables: definitions, runs, and each run's matches, discrepancies, unmatched.

Declared on `tables.Base` (the migration environment imports this module); migration
0006 mirrors them. Result rows are keyed by (run, position), so a run's results are
replaced by deleting them by run id, and pages are read in position order. Amounts are
integer minor units of `currency`; adapter secrets are sealed (`secrets_box`).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Final

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from settler_jobs.storage.tables import JSON_DOCUMENT, Base, UTCDateTime

RUN_STATUSES: Final = ("pending", "running", "succeeded", "failed")
SIDES: Final = ("source", "target")
_RUN_STATUS_CHECK: Final = "status IN ({})".format(", ".join(f"'{s}'" for s in RUN_STATUSES))
_SIDE_CHECK: Final = "side IN ({})".format(", ".join(f"'{s}'" for s in SIDES))
_RUN_FK: Final = "reconciliation_runs.id"


def new_id() -> str:
    """A fresh definition or run id (uuid4, 32 hex digits)."""
    return uuid.uuid4().hex


class ReconciliationDefinitionRow(Base):
    """A tenant's reconciliation: source and target adapters (secrets sealed) and rules."""

    __tablename__ = "reconciliation_definitions"
    __table_args__ = (UniqueConstraint("tenant_id", "name"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(200))
    source_config: Mapped[dict[str, Any]] = mapped_column(JSON_DOCUMENT)
    """The source spec without its secret fields."""
    source_secret: Mapped[str | None] = mapped_column(Text)
    """`SecretBox` token of the source's secret fields (JSON), if it has any."""
    target_config: Mapped[dict[str, Any]] = mapped_column(JSON_DOCUMENT)
    target_secret: Mapped[str | None] = mapped_column(Text)
    rules: Mapped[dict[str, Any]] = mapped_column(JSON_DOCUMENT)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class ReconciliationRunRow(Base):
    """One run of a definition: status, progress, counts and per-currency totals."""

    __tablename__ = "reconciliation_runs"
    __table_args__ = (
        CheckConstraint(_RUN_STATUS_CHECK, name="status"),
        UniqueConstraint("tenant_id", "job_id"),
        Index("ix_reconciliation_runs_tenant_created", "tenant_id", "created_at"),
        Index("ix_reconciliation_runs_definition_created", "definition_id", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(String(64))
    definition_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("reconciliation_definitions.id", ondelete="CASCADE")
    )
    job_id: Mapped[str | None] = mapped_column(String(128))
    status: Mapped[str] = mapped_column(String(16), default="pending", server_default="pending")
    progress: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    stage: Mapped[str] = mapped_column(String(64), default="", server_default="")
    source_records: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    target_records: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    matched: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    discrepancies: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    unmatched_source: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    unmatched_target: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    malformed_source: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    malformed_target: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    totals: Mapped[dict[str, Any] | None] = mapped_column(JSON_DOCUMENT, nullable=True)
    """currency -> matched_source, matched_target, unmatched_source, unmatched_target."""
    error: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    duration_ms: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class ReconciliationMatchRow(Base):
    """A pair of records the run matched, with the rule and its confidence."""

    __tablename__ = "reconciliation_matches"

    run_id: Mapped[str] = mapped_column(
        String(32), ForeignKey(_RUN_FK, ondelete="CASCADE"), primary_key=True
    )
    position: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    rule: Mapped[str] = mapped_column(String(32))
    confidence: Mapped[float] = mapped_column(Float)
    currency: Mapped[str] = mapped_column(String(3))
    source_line: Mapped[int] = mapped_column(BigInteger)
    source_id: Mapped[str | None] = mapped_column(Text)
    source_amount: Mapped[int] = mapped_column(BigInteger)
    source_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    source_reference: Mapped[str | None] = mapped_column(Text)
    target_line: Mapped[int] = mapped_column(BigInteger)
    target_id: Mapped[str | None] = mapped_column(Text)
    target_amount: Mapped[int] = mapped_column(BigInteger)
    target_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    target_reference: Mapped[str | None] = mapped_column(Text)


class ReconciliationDiscrepancyRow(Base):
    """A pair sharing an id or reference whose amount or currency differs."""

    __tablename__ = "reconciliation_discrepancies"

    run_id: Mapped[str] = mapped_column(
        String(32), ForeignKey(_RUN_FK, ondelete="CASCADE"), primary_key=True
    )
    position: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    rule: Mapped[str] = mapped_column(String(32))
    kind: Mapped[str] = mapped_column(String(32))
    source_line: Mapped[int] = mapped_column(BigInteger)
    source_id: Mapped[str | None] = mapped_column(Text)
    source_amount: Mapped[int] = mapped_column(BigInteger)
    source_currency: Mapped[str] = mapped_column(String(3))
    source_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    target_line: Mapped[int] = mapped_column(BigInteger)
    target_id: Mapped[str | None] = mapped_column(Text)
    target_amount: Mapped[int] = mapped_column(BigInteger)
    target_currency: Mapped[str] = mapped_column(String(3))
    target_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    difference: Mapped[int | None] = mapped_column(BigInteger)
    """target - source amount; null when the currencies differ."""


class ReconciliationUnmatchedRow(Base):
    """A record of one side that the run could not pair, and why (malformed rows too)."""

    __tablename__ = "reconciliation_unmatched"
    __table_args__ = (CheckConstraint(_SIDE_CHECK, name="side"),)

    run_id: Mapped[str] = mapped_column(
        String(32), ForeignKey(_RUN_FK, ondelete="CASCADE"), primary_key=True
    )
    side: Mapped[str] = mapped_column(String(6), primary_key=True)
    position: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    line: Mapped[int] = mapped_column(BigInteger)
    external_id: Mapped[str | None] = mapped_column(Text)
    amount: Mapped[int | None] = mapped_column(BigInteger)
    currency: Mapped[str | None] = mapped_column(Text)
    occurred_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    reference: Mapped[str | None] = mapped_column(Text)
    description: Mapped[str | None] = mapped_column(Text)
    reason: Mapped[str] = mapped_column(String(32))
    detail: Mapped[str | None] = mapped_column(Text)
    """For malformed rows: what is wrong with the row."""
