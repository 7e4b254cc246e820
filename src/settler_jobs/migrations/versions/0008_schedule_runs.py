"""Runs of the scheduled system jobs; deliveries indexed by event (for retention).

Revision ID: 0008
Revises: 0006
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0008"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

AWARE = sa.DateTime(timezone=True)
JSON_DOCUMENT = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "schedule_runs",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("schedule_id", sa.String(64), nullable=False),
        sa.Column("trigger", sa.String(16), nullable=False),
        sa.Column("job_id", sa.String(160), nullable=True),
        sa.Column("started_at", AWARE, nullable=False),
        sa.Column("finished_at", AWARE, nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("report", JSON_DOCUMENT, nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.CheckConstraint(
            "status IN ('running', 'succeeded', 'failed')", name=op.f("ck_schedule_runs_status")
        ),
        sa.CheckConstraint(
            "trigger IN ('schedule', 'job', 'cli')", name=op.f("ck_schedule_runs_trigger")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_schedule_runs")),
    )
    op.create_index(
        "ix_schedule_runs_schedule_id_started_at", "schedule_runs", ["schedule_id", "started_at"]
    )
    # Retention deletes events that no delivery references: look deliveries up by event.
    op.create_index("ix_webhook_deliveries_event_id", "webhook_deliveries", ["event_id"])


def downgrade() -> None:
    op.drop_index("ix_webhook_deliveries_event_id", table_name="webhook_deliveries")
    op.drop_index("ix_schedule_runs_schedule_id_started_at", table_name="schedule_runs")
    op.drop_table("schedule_runs")
