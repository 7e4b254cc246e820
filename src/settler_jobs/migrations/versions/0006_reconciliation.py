"""Reconciliation: definitions, runs, matches, discrepancies and unmatched items.

Revision ID: 0006
Revises: 0003
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0006"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

AWARE = sa.DateTime(timezone=True)
JSON_DOCUMENT = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
TENANT = sa.String(64)
RUN_ID = sa.String(32)

INDEXES: tuple[tuple[str, str, list[str]], ...] = (
    ("ix_reconciliation_runs_tenant_created", "reconciliation_runs", ["tenant_id", "created_at"]),
    (
        "ix_reconciliation_runs_definition_created",
        "reconciliation_runs",
        ["definition_id", "created_at"],
    ),
)
TABLES = (
    "reconciliation_definitions",
    "reconciliation_runs",
    "reconciliation_matches",
    "reconciliation_discrepancies",
    "reconciliation_unmatched",
)
COUNTS = (
    "source_records",
    "target_records",
    "matched",
    "discrepancies",
    "unmatched_source",
    "unmatched_target",
    "malformed_source",
    "malformed_target",
)


def _run_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["run_id"],
        ["reconciliation_runs.id"],
        name=op.f(f"fk_{table}_run_id_reconciliation_runs"),
        ondelete="CASCADE",
    )


def _pair_side(side: str, *, currency: bool) -> list[sa.Column[object]]:
    columns: list[sa.Column[object]] = [
        sa.Column(f"{side}_line", sa.BigInteger(), nullable=False),
        sa.Column(f"{side}_id", sa.Text(), nullable=True),
        sa.Column(f"{side}_amount", sa.BigInteger(), nullable=False),
    ]
    if currency:
        columns.append(sa.Column(f"{side}_currency", sa.String(3), nullable=False))
    columns.append(sa.Column(f"{side}_at", AWARE, nullable=True))
    return columns


def _definitions() -> None:
    op.create_table(
        "reconciliation_definitions",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("tenant_id", TENANT, nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("source_config", JSON_DOCUMENT, nullable=False),
        sa.Column("source_secret", sa.Text(), nullable=True),
        sa.Column("target_config", JSON_DOCUMENT, nullable=False),
        sa.Column("target_secret", sa.Text(), nullable=True),
        sa.Column("rules", JSON_DOCUMENT, nullable=False),
        sa.Column("created_at", AWARE, nullable=False),
        sa.Column("updated_at", AWARE, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reconciliation_definitions")),
        sa.UniqueConstraint(
            "tenant_id", "name", name=op.f("uq_reconciliation_definitions_tenant_id_name")
        ),
    )


def _runs() -> None:
    statuses = ", ".join(f"'{s}'" for s in ("pending", "running", "succeeded", "failed"))
    op.create_table(
        "reconciliation_runs",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("tenant_id", TENANT, nullable=False),
        sa.Column("definition_id", sa.String(32), nullable=False),
        sa.Column("job_id", sa.String(128), nullable=True),
        sa.Column("status", sa.String(16), server_default="pending", nullable=False),
        sa.Column("progress", sa.Float(), server_default="0", nullable=False),
        sa.Column("stage", sa.String(64), server_default="", nullable=False),
        *(sa.Column(name, sa.Integer(), server_default="0", nullable=False) for name in COUNTS),
        sa.Column("totals", JSON_DOCUMENT, nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("started_at", AWARE, nullable=True),
        sa.Column("finished_at", AWARE, nullable=True),
        sa.Column("duration_ms", sa.BigInteger(), nullable=True),
        sa.Column("created_at", AWARE, nullable=False),
        sa.Column("updated_at", AWARE, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reconciliation_runs")),
        sa.ForeignKeyConstraint(
            ["definition_id"],
            ["reconciliation_definitions.id"],
            name=op.f("fk_reconciliation_runs_definition_id_reconciliation_definitions"),
            ondelete="CASCADE",
        ),
        sa.UniqueConstraint(
            "tenant_id", "job_id", name=op.f("uq_reconciliation_runs_tenant_id_job_id")
        ),
        sa.CheckConstraint(f"status IN ({statuses})", name=op.f("ck_reconciliation_runs_status")),
    )


def _matches() -> None:
    op.create_table(
        "reconciliation_matches",
        sa.Column("run_id", RUN_ID, nullable=False),
        sa.Column("position", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("rule", sa.String(32), nullable=False),
        sa.Column("confidence", sa.Float(), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        *_pair_side("source", currency=False),
        sa.Column("source_reference", sa.Text(), nullable=True),
        *_pair_side("target", currency=False),
        sa.Column("target_reference", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("run_id", "position", name=op.f("pk_reconciliation_matches")),
        _run_fk("reconciliation_matches"),
    )


def _discrepancies() -> None:
    op.create_table(
        "reconciliation_discrepancies",
        sa.Column("run_id", RUN_ID, nullable=False),
        sa.Column("position", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("rule", sa.String(32), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        *_pair_side("source", currency=True),
        *_pair_side("target", currency=True),
        sa.Column("difference", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("run_id", "position", name=op.f("pk_reconciliation_discrepancies")),
        _run_fk("reconciliation_discrepancies"),
    )


def _unmatched() -> None:
    op.create_table(
        "reconciliation_unmatched",
        sa.Column("run_id", RUN_ID, nullable=False),
        sa.Column("side", sa.String(6), nullable=False),
        sa.Column("position", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("line", sa.BigInteger(), nullable=False),
        sa.Column("external_id", sa.Text(), nullable=True),
        sa.Column("amount", sa.BigInteger(), nullable=True),
        sa.Column("currency", sa.Text(), nullable=True),
        sa.Column("occurred_at", AWARE, nullable=True),
        sa.Column("reference", sa.Text(), nullable=True),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("reason", sa.String(32), nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint(
            "run_id", "side", "position", name=op.f("pk_reconciliation_unmatched")
        ),
        _run_fk("reconciliation_unmatched"),
        sa.CheckConstraint(
            "side IN ('source', 'target')", name=op.f("ck_reconciliation_unmatched_side")
        ),
    )


def upgrade() -> None:
    _definitions()
    _runs()
    _matches()
    _discrepancies()
    _unmatched()
    for name, table, columns in INDEXES:
        op.create_index(name, table, columns)


def downgrade() -> None:
    for name, table, _columns in reversed(INDEXES):
        op.drop_index(name, table_name=table)
    for table in reversed(TABLES):
        op.drop_table(table)
