"""Audit log, error log of dead jobs, and exports (plus an index to export dead letters).

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

AWARE = sa.DateTime(timezone=True)
JSON_DOCUMENT = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
ROW_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TENANT = sa.String(64)

INDEXES: tuple[tuple[str, str, list[str]], ...] = (
    ("ix_audit_logs_tenant_created", "audit_logs", ["tenant_id", "created_at", "id"]),
    ("ix_audit_logs_created", "audit_logs", ["created_at"]),
    ("ix_error_logs_tenant_created", "error_logs", ["tenant_id", "created_at", "id"]),
    ("ix_error_logs_resolved_created", "error_logs", ["resolved", "created_at"]),
    ("ix_exports_tenant_created", "exports", ["tenant_id", "created_at"]),
    ("ix_exports_status_expires", "exports", ["status", "expires_at"]),
    # Keyset pages of the dlq_entries export dataset.
    ("ix_dlq_entries_tenant_created_id", "dlq_entries", ["tenant_id", "created_at", "id"]),
)
TABLES = ("audit_logs", "error_logs", "exports")


def _audit_logs() -> None:
    op.create_table(
        "audit_logs",
        sa.Column("id", ROW_ID, autoincrement=True, nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("tenant_id", TENANT, nullable=True),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("target_type", sa.String(64), nullable=True),
        sa.Column("target_id", sa.String(128), nullable=True),
        sa.Column("details", JSON_DOCUMENT, nullable=False),
        sa.Column("created_at", AWARE, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_logs")),
    )


def _error_logs() -> None:
    op.create_table(
        "error_logs",
        sa.Column("id", ROW_ID, autoincrement=True, nullable=False),
        sa.Column("queue", sa.String(128), nullable=False),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("job_id", sa.String(128), nullable=False),
        sa.Column("tenant_id", TENANT, nullable=True),
        sa.Column("error_type", sa.String(128), nullable=False),
        sa.Column("error_message", sa.Text(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("created_at", AWARE, nullable=False),
        sa.Column("resolved", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("resolved_at", AWARE, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_error_logs")),
    )


def _exports() -> None:
    op.create_table(
        "exports",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("tenant_id", TENANT, nullable=False),
        sa.Column("tier", sa.String(16), nullable=False),
        sa.Column("dataset", sa.String(64), nullable=False),
        sa.Column("format", sa.String(8), nullable=False),
        sa.Column("filters", JSON_DOCUMENT, nullable=False),
        sa.Column("status", sa.String(16), server_default="pending", nullable=False),
        sa.Column("job_id", sa.String(128), nullable=True),
        sa.Column("row_count", sa.Integer(), nullable=True),
        sa.Column("size_bytes", sa.BigInteger(), nullable=True),
        sa.Column("sha256", sa.String(64), nullable=True),
        sa.Column("storage_key", sa.String(512), nullable=True),
        sa.Column("expires_at", AWARE, nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", AWARE, nullable=False),
        sa.Column("updated_at", AWARE, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_exports")),
        sa.CheckConstraint("format IN ('csv', 'pdf')", name=op.f("ck_exports_format")),
        sa.CheckConstraint(
            "status IN ('pending', 'running', 'succeeded', 'failed')",
            name=op.f("ck_exports_status"),
        ),
    )


def upgrade() -> None:
    _audit_logs()
    _error_logs()
    _exports()
    for name, table, columns in INDEXES:
        op.create_index(name, table, columns)


def downgrade() -> None:
    for name, table, _columns in reversed(INDEXES):
        op.drop_index(name, table_name=table)
    for table in reversed(TABLES):
        op.drop_table(table)
