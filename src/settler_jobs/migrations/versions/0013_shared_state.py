"""Shared state in the database (heartbeats, rate limits, leases, caches, accounting)
for the PostgreSQL backend; created everywhere so one schema serves both backends.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

AWARE = sa.DateTime(timezone=True)
ROW_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "shared_values",
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("value", sa.Text(), nullable=True),
        sa.Column("tokens", sa.Float(), nullable=True),
        sa.Column("touched_at", AWARE, nullable=True),
        sa.Column("expires_at", AWARE, nullable=True),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_shared_values")),
    )
    op.create_index("ix_shared_values_expires_at", "shared_values", ["expires_at"])
    op.create_table(
        "shared_collections",
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("expires_at", AWARE, nullable=True),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_shared_collections")),
    )
    op.create_index("ix_shared_collections_expires_at", "shared_collections", ["expires_at"])
    op.create_table(
        "shared_hash_fields",
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("key", "name", name=op.f("pk_shared_hash_fields")),
    )
    op.create_table(
        "shared_list_items",
        sa.Column("id", ROW_ID, autoincrement=True, nullable=False),
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_shared_list_items")),
    )
    op.create_index("ix_shared_list_items_key_id", "shared_list_items", ["key", "id"])
    op.create_table(
        "shared_scores",
        sa.Column("board", sa.Text(), nullable=False),
        sa.Column("member", sa.Text(), nullable=False),
        sa.Column("score", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("board", "member", name=op.f("pk_shared_scores")),
    )
    op.create_index("ix_shared_scores_board_score", "shared_scores", ["board", "score"])


def downgrade() -> None:
    op.drop_table("shared_scores")
    op.drop_table("shared_list_items")
    op.drop_table("shared_hash_fields")
    op.drop_table("shared_collections")
    op.drop_table("shared_values")
