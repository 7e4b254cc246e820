"""The kinds of retention target: the protocol and its report, rows of a table deleted
by primary key in batches, BullMQ's finished jobs, and expired exports with their files.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import ColumnElement, and_, delete, func, or_, select
from sqlalchemy.orm import QueryableAttribute

from settler_jobs.domain import JobState
from settler_jobs.retention.policy import RetentionRun
from settler_jobs.storage.export_tables import ExportRow
from settler_jobs.storage.tables import Base


@dataclass(slots=True)
class TargetReport:
    """What one target did: rows matched (dry run) or deleted, and whether it finished."""

    target: str
    matched: int = 0
    deleted: int = 0
    batches: int = 0
    complete: bool = True
    error: str | None = None


class RetentionTarget(Protocol):
    """Something that holds data with an expiry."""

    @property
    def name(self) -> str: ...

    async def apply(self, run: RetentionRun) -> TargetReport:
        """Delete (or with `run.dry_run` count) what has expired at `run.now`."""
        ...


Condition = Callable[[RetentionRun], ColumnElement[bool]]


@dataclass(frozen=True)
class TableTarget:
    """Rows of one table matching a condition, deleted by primary key in batches."""

    name: str
    model: type[Base]
    key: QueryableAttribute[Any]
    condition: Condition

    async def apply(self, run: RetentionRun) -> TargetReport:
        report = TargetReport(self.name)
        where = self.condition(run)
        if run.dry_run:
            async with run.sessions() as session:
                query = select(func.count()).select_from(self.model).where(where)
                count = await session.scalar(query)
            report.matched = int(count or 0)
            return report
        while report.batches < run.max_batches:
            # One short transaction per batch: other writers wait at most one batch.
            async with run.sessions() as session, session.begin():
                ids = list(
                    await session.scalars(
                        select(self.key).where(where).order_by(self.key).limit(run.batch_size)
                    )
                )
                if ids:
                    # The condition again: a non-unique key must not take other rows along.
                    await session.execute(
                        delete(self.model)
                        .where(self.key.in_(ids), where)
                        .execution_options(synchronize_session=False)
                    )
            if not ids:
                return report
            report.batches += 1
            report.deleted += len(ids)
            report.matched += len(ids)
            if len(ids) < run.batch_size:
                return report
        report.complete = False
        return report


@dataclass(frozen=True)
class FinishedJobsTarget:
    """Completed and failed BullMQ jobs past the keep settings, cleaned through the queue.

    Ages count from this machine's clock (BullMQ's `clean`), not from `run.now`.
    """

    name: str = "bullmq-finished-jobs"

    async def apply(self, run: RetentionRun) -> TargetReport:
        report = TargetReport(self.name)
        ops = run.queue_ops
        if ops is None:
            report.error = "no queue connection"
            return report
        plan = (
            (JobState.COMPLETED, run.policy.keep_completed_s),
            (JobState.FAILED, run.policy.keep_failed_s),
        )
        for queue in ops.registry.queues():
            for state, keep_s in plan:
                if run.dry_run:
                    report.matched += await ops.finished_before(queue, state, keep_s)
                    continue
                while report.batches < run.max_batches:
                    removed = await ops.clean_finished(queue, state, keep_s, run.batch_size)
                    report.batches += 1
                    report.deleted += removed
                    report.matched += removed
                    if removed < run.batch_size:
                        break
                else:
                    report.complete = False
        return report


@dataclass(frozen=True)
class ExpiredExportsTarget:
    """Exports past their expiry, or failed ones as old as the longest retention.

    Per batch the files go first, then the records: a crash in between leaves records
    whose file is gone (deleted again next run), never a file nobody can find.
    """

    name: str = "exports-expired"

    def _where(self, run: RetentionRun) -> ColumnElement[bool]:
        expired = and_(ExportRow.expires_at.is_not(None), ExportRow.expires_at < run.now)
        stale = and_(
            ExportRow.status == "failed",
            ExportRow.updated_at < run.before_days(run.policy.longest_days),
        )
        return or_(expired, stale)

    async def apply(self, run: RetentionRun) -> TargetReport:
        report = TargetReport(self.name)
        where = self._where(run)
        if run.dry_run:
            async with run.sessions() as session:
                count = await session.scalar(
                    select(func.count()).select_from(ExportRow).where(where)
                )
            report.matched = int(count or 0)
            return report
        while report.batches < run.max_batches:
            async with run.sessions() as session:
                rows = list(
                    (
                        await session.execute(
                            select(ExportRow.id, ExportRow.storage_key)
                            .where(where)
                            .order_by(ExportRow.id)
                            .limit(run.batch_size)
                        )
                    ).all()
                )
            if not rows:
                return report
            for _, key in rows:
                if key and run.store is not None:
                    await asyncio.to_thread(run.store.delete, key)
            async with run.sessions() as session, session.begin():
                ids = [export_id for export_id, _ in rows]
                await session.execute(delete(ExportRow).where(ExportRow.id.in_(ids)))
            report.batches += 1
            report.deleted += len(rows)
            report.matched += len(rows)
            if len(rows) < run.batch_size:
                return report
        report.complete = False
        return report
