"""Tables of the shared state when it lives in the database (SETTLER_QUEUE_BACKEND=postgres).

Only the PostgreSQL implementation (`settler_jobs.shared_state.on_postgres`) writes them;
they exist on SQLite too so one schema serves both. An expired row is ignored by every
read and deleted by the periodic purge.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Float, Index, Text
from sqlalchemy.orm import Mapped, mapped_column

from settler_jobs.storage.tables import Base, UTCDateTime
from settler_jobs.storage.webhook_tables import ROW_ID


class SharedValueRow(Base):
    """A value, counter, lease or token bucket (`tokens` at `touched_at`) under one key."""

    __tablename__ = "shared_values"
    __table_args__ = (Index("ix_shared_values_expires_at", "expires_at"),)

    key: Mapped[str] = mapped_column(Text, primary_key=True)
    value: Mapped[str | None] = mapped_column(Text)
    tokens: Mapped[float | None] = mapped_column(Float)
    touched_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class SharedCollectionRow(Base):
    """The expiry of a hash or list key (no row: it never expires)."""

    __tablename__ = "shared_collections"
    __table_args__ = (Index("ix_shared_collections_expires_at", "expires_at"),)

    key: Mapped[str] = mapped_column(Text, primary_key=True)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class SharedHashFieldRow(Base):
    """One field of a hash."""

    __tablename__ = "shared_hash_fields"

    key: Mapped[str] = mapped_column(Text, primary_key=True)
    name: Mapped[str] = mapped_column(Text, primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class SharedListItemRow(Base):
    """One item of a list; the highest id is the head (newest)."""

    __tablename__ = "shared_list_items"
    __table_args__ = (Index("ix_shared_list_items_key_id", "key", "id"),)

    id: Mapped[int] = mapped_column(ROW_ID, primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(Text)
    value: Mapped[str] = mapped_column(Text)


class SharedScoreRow(Base):
    """A member of a score board."""

    __tablename__ = "shared_scores"
    __table_args__ = (Index("ix_shared_scores_board_score", "board", "score"),)

    board: Mapped[str] = mapped_column(Text, primary_key=True)
    member: Mapped[str] = mapped_column(Text, primary_key=True)
    score: Mapped[int] = mapped_column(BigInteger)
