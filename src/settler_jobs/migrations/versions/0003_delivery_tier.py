"""Webhook deliveries remember the tenant tier they were published with.

The outbox and the retry sweep enqueue deliveries long after `publish`; the tier decides
the job's priority and lane, so it is stored with the delivery.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("webhook_deliveries") as batch:
        tier = sa.Column("tier", sa.String(16), server_default="starter", nullable=False)
        batch.add_column(tier)


def downgrade() -> None:
    with op.batch_alter_table("webhook_deliveries") as batch:
        batch.drop_column("tier")
