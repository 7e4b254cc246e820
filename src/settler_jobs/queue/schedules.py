"""Job schedules: register, list and remove the BullMQ job schedulers that feed each kind."""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from typing import Any, Final

from settler_jobs.config import Settings
from settler_jobs.errors import InvalidJob
from settler_jobs.kinds import JobKind
from settler_jobs.queue.base import QueueBase
from settler_jobs.records import ScheduleInfo
from settler_jobs.redis_server import redis_errors

_SCHEDULE_ID: Final = re.compile(r"^[a-z][a-z0-9-]{0,63}$")


class Schedules(QueueBase):
    """BullMQ job schedulers feeding the kinds' shared lanes."""

    async def upsert_schedule(
        self,
        kind: str,
        schedule_id: str,
        *,
        data: Mapping[str, Any],
        pattern: str | None = None,
        every_ms: int | None = None,
        tz: str = "UTC",
    ) -> ScheduleInfo:
        """Register (or change) the scheduler `schedule_id` that feeds `kind`'s shared lane.

        Give a cron `pattern` (5 fields, or 6 with seconds first) or `every_ms`. An
        unchanged scheduler is left alone, so restarting workers neither drop nor
        repeat the slot already waiting; any process may call this at any time.
        """
        k = self._registry.get(kind)
        repeat = schedule_repeat(schedule_id, pattern, every_ms, tz)
        queue = self._queue(k.queue)
        async with redis_errors():
            # bullmq 3.4.4's getJobScheduler raises for a missing id: ask first.
            exists = await queue.isJobScheduler(schedule_id)
            current = await queue.getJobScheduler(schedule_id) if exists else None
            if current is None or not same_schedule(current, kind, repeat, data):
                try:
                    await queue.upsertJobScheduler(
                        schedule_id, repeat, kind, dict(data), schedule_opts(k, self._settings)
                    )
                except (ValueError, KeyError) as exc:  # croniter and zoneinfo errors
                    raise InvalidJob(f"invalid schedule {schedule_id!r}: {exc}") from None
                field_name = f"{k.queue}:{schedule_id}"
                await self._client.hset(
                    self._key("settler", "schedules"), field_name, int(time.time() * 1000)
                )
            return next(s for s in await self._schedules_of(k) if s.id == schedule_id)

    async def list_schedules(self) -> list[ScheduleInfo]:
        """Every scheduler on the lanes of the registered kinds, by kind then id."""
        out: list[ScheduleInfo] = []
        async with redis_errors():
            for kind in self._registry:
                out.extend(sorted(await self._schedules_of(kind), key=lambda s: s.id))
        return out

    async def _schedules_of(self, kind: JobKind) -> list[ScheduleInfo]:
        raw = await self._queue(kind.queue).getJobSchedulers(0, 99, True)
        registered = await self._client.hgetall(self._key("settler", "schedules"))
        out = []
        for item in raw:
            stamp = registered.get(f"{kind.queue}:{item['key']}")
            out.append(schedule_info(kind, item, int(stamp) if stamp else None))
        return out

    async def remove_schedule(self, kind: str, schedule_id: str) -> bool:
        """Remove a scheduler and its waiting next job; False if there was none."""
        k = self._registry.get(kind)
        async with redis_errors():
            removed = int(await self._queue(k.queue).removeJobScheduler(schedule_id)) == 0
            await self._client.hdel(self._key("settler", "schedules"), f"{k.queue}:{schedule_id}")
            return removed


def schedule_repeat(
    schedule_id: str, pattern: str | None, every_ms: int | None, tz: str
) -> dict[str, Any]:
    """bullmq's repeat options for a checked schedule (InvalidJob otherwise)."""
    if (pattern is None) == (every_ms is None) or (every_ms is not None and every_ms < 100):
        raise InvalidJob("a schedule needs a cron pattern or an interval of >= 100 ms")
    if not _SCHEDULE_ID.fullmatch(schedule_id):
        raise InvalidJob(f"invalid schedule id {schedule_id!r}")
    return {"pattern": pattern, "tz": tz} if pattern else {"every": every_ms}


def schedule_opts(kind: JobKind, settings: Settings) -> dict[str, Any]:
    """bullmq job options of the jobs a scheduler of `kind` adds."""
    return {
        "attempts": kind.retry.attempts,
        "backoff": {"type": "exponential", "delay": round(kind.retry.base_delay_s * 1000)},
        "removeOnComplete": {
            "age": settings.keep_completed_s,
            "count": settings.keep_completed_count,
        },
    }


def schedule_info(
    kind: JobKind, item: Mapping[str, Any], registered_at_ms: int | None
) -> ScheduleInfo:
    """The record of one of bullmq's scheduler entries (`getJobSchedulers`) of `kind`."""
    template = item.get("template") or {}
    data = template.get("data")
    return ScheduleInfo(
        id=str(item["key"]),
        kind=kind.name,
        pattern=item.get("pattern"),
        every_ms=item.get("every"),
        tz=item.get("tz"),
        next_run_ms=int(item["next"]) if item.get("next") is not None else None,
        iterations=int(item.get("iterationCount") or 0),
        registered_at_ms=registered_at_ms,
        data=dict(data) if isinstance(data, dict) else {},
    )


def same_schedule(
    current: Mapping[str, Any], kind: str, repeat: Mapping[str, Any], data: Mapping[str, Any]
) -> bool:
    """True if bullmq's scheduler `current` already feeds `kind` with `repeat` and `data`."""
    template = current.get("template") or {}
    return (
        current.get("name") == kind
        and all(current.get(key) == value for key, value in repeat.items())
        and (template.get("data") or {}) == dict(data)
    )
