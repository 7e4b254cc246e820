"""ORM table of scheduled and on-demand runs of the system jobs (migration 0008).

Importing this module registers the table on `tables.Base.metadata`.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Final

from sqlalchemy import CheckConstraint, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from settler_jobs.storage.tables import JSON_DOCUMENT, Base, UTCDateTime

RUN_STATUSES: Final = ("running", "succeeded", "failed")
RUN_TRIGGERS: Final = ("schedule", "job", "cli")
_STATUS_CHECK: Final = "status IN ({})".format(", ".join(f"'{s}'" for s in RUN_STATUSES))
_TRIGGER_CHECK: Final = "trigger IN ({})".format(", ".join(f"'{s}'" for s in RUN_TRIGGERS))


def new_run_id() -> str:
    return uuid.uuid4().hex


class ScheduleRunRow(Base):
    """One execution of a system job: a scheduler's slot, a submitted job or a CLI run.

    Every execution is its own row, so a slot that ran twice shows up twice.
    """

    __tablename__ = "schedule_runs"
    __table_args__ = (
        CheckConstraint(_STATUS_CHECK, name="status"),
        CheckConstraint(_TRIGGER_CHECK, name="trigger"),
        Index("ix_schedule_runs_schedule_id_started_at", "schedule_id", "started_at"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_run_id)
    schedule_id: Mapped[str] = mapped_column(String(64))
    trigger: Mapped[str] = mapped_column(String(16))
    job_id: Mapped[str | None] = mapped_column(String(160))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    status: Mapped[str] = mapped_column(String(16))
    report: Mapped[dict[str, Any] | None] = mapped_column(JSON_DOCUMENT, nullable=True)
    error: Mapped[str | None] = mapped_column(Text)
