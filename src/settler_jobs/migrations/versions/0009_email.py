"""The email sent-ledger.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

AWARE = sa.DateTime(timezone=True)


def upgrade() -> None:
    statuses = ", ".join(f"'{s}'" for s in ("pending", "sending", "sent", "failed"))
    op.create_table(
        "email_sends",
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("idempotency_key", sa.String(255), nullable=False),
        sa.Column("recipient", sa.String(254), nullable=False),
        sa.Column("template", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("job_id", sa.String(128), nullable=False),
        sa.Column("provider", sa.String(16), nullable=False),
        sa.Column("provider_message_id", sa.String(255), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", AWARE, nullable=False),
        sa.Column("updated_at", AWARE, nullable=False),
        sa.PrimaryKeyConstraint(
            "tenant_id", "idempotency_key", "recipient", name=op.f("pk_email_sends")
        ),
        sa.CheckConstraint(f"status IN ({statuses})", name=op.f("ck_email_sends_status")),
    )
    op.create_index("ix_email_sends_tenant_created", "email_sends", ["tenant_id", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_email_sends_tenant_created", table_name="email_sends")
    op.drop_table("email_sends")
