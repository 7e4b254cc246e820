"""What alerting looks at: one `Snapshot` of queues, workers, schedules and the DLQ.

A worker takes a snapshot every `alert_interval_s`, exports it as Prometheus gauges
(`export`, read by the rules in deploy/prometheus) and hands it to the built-in
evaluator (`alerts.evaluate`), so both check the same numbers. Nothing here is
labelled by tenant or job id.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from settler_jobs import heartbeat
from settler_jobs.config import Settings
from settler_jobs.dlq import count_open
from settler_jobs.domain import DlqStatus
from settler_jobs.metrics import Metrics
from settler_jobs.queue import AnyJobQueue
from settler_jobs.scheduling import configured, last_runs, missed_reason
from settler_jobs.shared_state import SharedState
from settler_jobs.storage.schedule_tables import ScheduleRunRow
from settler_jobs.storage.tables import DlqEntryRow


@dataclass(frozen=True)
class LaneState:
    """One queue (lane): its backlog, ages and recent outcomes."""

    waiting: int
    oldest_waiting_s: float
    oldest_active_s: float
    completed: int
    """Jobs completed within `alert_failure_window_s`."""
    failed: int
    """Jobs failed for good within `alert_failure_window_s`."""


@dataclass(frozen=True)
class Snapshot:
    """Everything the alert conditions read, taken at `at`."""

    at: datetime
    lanes: dict[str, LaneState]
    workers_alive: int
    schedule_missed: dict[str, str | None]
    """Enabled schedules: the missed reason, or None when on time."""
    schedule_last_success: dict[str, datetime | None]
    dlq_open: int
    dlq_open_recent: int


async def take(
    queue: AnyJobQueue,
    sessions: async_sessionmaker[AsyncSession],
    state: SharedState,
    settings: Settings,
    *,
    worker_id: str | None = None,
) -> Snapshot:
    """Read the current state (queue, shared state, database); bounded reads only.

    `worker_id`, the process taking the snapshot, counts as alive even before its
    first heartbeat is written.
    """
    now = datetime.now(UTC)
    finished = await queue.finished_since(settings.alert_failure_window_s)
    active = await queue.oldest_active_s()
    lanes = {
        c.queue: LaneState(
            waiting=c.counts.get("waiting", 0),
            oldest_waiting_s=(c.oldest_waiting_ms or 0) / 1000,
            oldest_active_s=active.get(c.queue, 0.0),
            completed=finished.get(c.queue, (0, 0))[0],
            failed=finished.get(c.queue, (0, 0))[1],
        )
        for c in await queue.counts()
    }
    live = {w.id for w in await heartbeat.live_workers(state, settings.queue_prefix)}
    alive = len(live | ({worker_id} if worker_id else set()))
    enabled = [s for s in configured(settings) if s.enabled]
    infos = {i.id: i for i in await queue.list_schedules()}
    grace = timedelta(seconds=settings.schedule_missed_grace_s)
    since = now - timedelta(seconds=settings.alert_dlq_window_s)
    async with sessions() as session:
        last = await last_runs(session, [s.id for s in enabled], trigger="schedule")
        success = {s.id: await _last_success(session, s.id) for s in enabled}
        open_total = await count_open(session)
        recent = await session.scalar(
            select(func.count())
            .select_from(DlqEntryRow)
            .where(DlqEntryRow.status == DlqStatus.OPEN.value, DlqEntryRow.created_at >= since)
        )
    missed = {s.id: missed_reason(s, infos.get(s.id), last.get(s.id), now, grace) for s in enabled}
    return Snapshot(now, lanes, alive, missed, success, open_total, int(recent or 0))


async def _last_success(session: AsyncSession, schedule_id: str) -> datetime | None:
    stmt = select(func.max(ScheduleRunRow.started_at)).where(
        ScheduleRunRow.schedule_id == schedule_id, ScheduleRunRow.status == "succeeded"
    )
    moment: datetime | None = await session.scalar(stmt)
    return moment


def export(snapshot: Snapshot, metrics: Metrics) -> None:
    """Set the alerting gauges from a snapshot."""
    for name, lane in snapshot.lanes.items():
        metrics.active_oldest.labels(name).set(lane.oldest_active_s)
    metrics.workers_alive.set(snapshot.workers_alive)
    for schedule_id, reason in snapshot.schedule_missed.items():
        metrics.schedule_missed.labels(schedule_id).set(0 if reason is None else 1)
    for schedule_id, moment in snapshot.schedule_last_success.items():
        metrics.schedule_last_success.labels(schedule_id).set(moment.timestamp() if moment else 0)
    metrics.dlq_open.set(snapshot.dlq_open)
    metrics.dlq_open_recent.set(snapshot.dlq_open_recent)
