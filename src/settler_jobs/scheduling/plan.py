"""The scheduled system jobs (the seed's edge functions) as BullMQ job schedulers.

Each schedule is a cron pattern (UTC) from the settings; an empty pattern disables
it. Every worker process registers the schedules of the kinds it serves when it starts
(`register`): a scheduler lives in Redis, owns exactly one waiting job for its next
slot (job id `repeat:<schedule>:<slot ms>`), and the worker that takes that job
creates the following one. So however many processes run, each slot's job exists once
and runs once (BullMQ's lock; at-least-once only if a worker dies mid-run).

Scheduled jobs run for the reserved tenant `system` (tier scale, class LOW), because
every job's envelope names a tenant. `system` is a well-formed tenant id, so tenant
provisioning (the HTTP API) must refuse it as a tenant name; the system-only kinds
(`data-retention`, `webhook-sweep`, cache warming of all tenants) refuse any other.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final

from settler_jobs.config import Settings
from settler_jobs.domain import PriorityClass, Tier

if TYPE_CHECKING:
    from settler_jobs.kinds import Registry
    from settler_jobs.queue import AnyJobQueue
    from settler_jobs.records import ScheduleInfo
    from settler_jobs.scheduling.runs import ScheduleRun

SYSTEM_TENANT: Final = "system"
SYSTEM_TIER: Final = Tier.SCALE
TIMEZONE: Final = "UTC"

DATA_RETENTION: Final = "data-retention"
WEBHOOK_SWEEP: Final = "webhook-sweep"
CACHE_WARMING: Final = "cache-warming"


@dataclass(frozen=True, slots=True)
class Schedule:
    """One scheduled system job: its id (also the scheduler id), kind and cron pattern."""

    id: str
    kind: str
    pattern: str
    """Cron in UTC (5 fields, or 6 with seconds first); empty when disabled."""
    description: str

    @property
    def enabled(self) -> bool:
        return bool(self.pattern)


def configured(settings: Settings) -> list[Schedule]:
    """The schedules the settings describe (disabled ones included)."""
    return [
        Schedule(
            DATA_RETENTION,
            DATA_RETENTION,
            settings.schedule_retention_cron,
            "delete expired data in bounded batches",
        ),
        Schedule(
            WEBHOOK_SWEEP,
            WEBHOOK_SWEEP,
            settings.schedule_webhook_sweep_cron,
            "re-enqueue due or abandoned webhook deliveries",
        ),
        Schedule(
            CACHE_WARMING,
            CACHE_WARMING,
            settings.schedule_cache_warm_cron,
            "KPI snapshots of the active tenants",
        ),
    ]


def job_data(schedule: Schedule) -> dict[str, Any]:
    """The data of every job the schedule produces: the system tenant's envelope."""
    return {
        "tenantId": SYSTEM_TENANT,
        "tenantTier": SYSTEM_TIER.value,
        "priorityClass": PriorityClass.LOW.value,
        "scheduleId": schedule.id,
    }


async def register(queue: AnyJobQueue, settings: Settings, registry: Registry) -> list[str]:
    """Make the queue hold the configured schedulers of the kinds in `registry`; idempotent.

    Disabled schedules are removed. Returns the ids of the enabled ones.
    """
    active = []
    for schedule in configured(settings):
        if schedule.kind not in registry:
            continue
        if not schedule.enabled:
            await queue.remove_schedule(schedule.kind, schedule.id)
            continue
        await queue.upsert_schedule(
            schedule.kind,
            schedule.id,
            data=job_data(schedule),
            pattern=schedule.pattern,
            tz=TIMEZONE,
        )
        active.append(schedule.id)
    return active


def previous_slot(pattern: str, before: datetime) -> datetime:
    """The latest slot of the cron pattern at or before `before` (UTC)."""
    from croniter import croniter

    # croniter's get_prev is strict: nudge so a slot exactly at `before` counts.
    base = before.astimezone(UTC) + timedelta(microseconds=1)
    slot: datetime = croniter(pattern, base, second_at_beginning=True).get_prev(datetime)
    return slot.astimezone(UTC)


def missed_reason(
    schedule: Schedule,
    info: ScheduleInfo | None,
    last_scheduled: ScheduleRun | None,
    now: datetime,
    grace: timedelta,
) -> str | None:
    """Why the schedule looks missed at `now`, or None if it runs as it should.

    Missed: not registered; its next run is overdue by more than `grace` (no worker
    takes it); or no scheduled run started since the previous slot (older than `grace`)
    that came after the scheduler was registered.
    """
    if not schedule.enabled:
        return None
    if info is None:
        return "not registered: no worker serving this kind has started"
    if info.next_run_ms is not None:
        due = datetime.fromtimestamp(info.next_run_ms / 1000, UTC)
        if now - due > grace:
            return f"next run overdue since {due.isoformat(timespec='seconds')}"
    slot = previous_slot(schedule.pattern, now - grace)
    registered = info.registered_at_ms
    if registered is None or slot.timestamp() * 1000 < registered:
        return None
    if last_scheduled is None or last_scheduled.started_at < slot:
        return f"no run since the {slot.isoformat(timespec='seconds')} slot"
    return None
