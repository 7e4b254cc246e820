"""Dead-letter queue entries.

Revision ID: 0001
Revises:
Create Date: 2024-11-28
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLE = "dlq_entries"


def _columns() -> list[sa.Column[Any]]:
    aware = sa.DateTime(timezone=True)
    return [
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("queue", sa.String(128), nullable=False),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("job_id", sa.String(128), nullable=False),
        sa.Column("tenant_id", sa.String(64), nullable=True),
        sa.Column("tier", sa.String(16), nullable=True),
        sa.Column(
            "payload", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False
        ),
        sa.Column("error_type", sa.String(128), nullable=False),
        sa.Column("error_message", sa.Text(), nullable=False),
        sa.Column("stacktrace", sa.Text(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("failed_at_ms", sa.BigInteger(), nullable=False),
        sa.Column("first_failed_at", aware, nullable=False),
        sa.Column("last_failed_at", aware, nullable=False),
        sa.Column("status", sa.String(16), server_default="open", nullable=False),
        sa.Column("notes", sa.Text(), server_default="", nullable=False),
        sa.Column("retried_job_id", sa.String(128), nullable=True),
        sa.Column("resolved_by", sa.String(128), nullable=True),
        sa.Column("created_at", aware, nullable=False),
        sa.Column("updated_at", aware, nullable=False),
    ]


def upgrade() -> None:
    op.create_table(
        TABLE,
        *_columns(),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dlq_entries")),
        sa.UniqueConstraint(
            "queue", "job_id", "failed_at_ms", name=op.f("uq_dlq_entries_queue_job_id_failed_at_ms")
        ),
        sa.CheckConstraint(
            "status IN ('open', 'resolved', 'retried')", name=op.f("ck_dlq_entries_status")
        ),
    )
    op.create_index(
        "ix_dlq_entries_tenant_status_created", TABLE, ["tenant_id", "status", "created_at"]
    )
    op.create_index("ix_dlq_entries_kind_status_created", TABLE, ["kind", "status", "created_at"])
    op.create_index("ix_dlq_entries_status_created", TABLE, ["status", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_dlq_entries_status_created", table_name=TABLE)
    op.drop_index("ix_dlq_entries_kind_status_created", table_name=TABLE)
    op.drop_index("ix_dlq_entries_tenant_status_created", table_name=TABLE)
    op.drop_table(TABLE)
