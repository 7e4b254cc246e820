"""Job schedules on PostgreSQL: bullmq's job schedulers (its `scheduler` table), driven
through its Queue on the PostgreSQL backend, with the same records as queue/schedules.py.

Each slot's job has the id `repeat:<scheduler>:<millis>` and `add_job` ignores a
second insert of an id, so any number of processes upserting or advancing the same
scheduler still produce one job per slot.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, Final

from settler_jobs.errors import InvalidJob
from settler_jobs.kinds import JobKind
from settler_jobs.queue.pg.pool import pg_errors
from settler_jobs.queue.pg.rows import PgSql
from settler_jobs.queue.schedules import (
    same_schedule,
    schedule_info,
    schedule_opts,
    schedule_repeat,
)
from settler_jobs.records import ScheduleInfo

# "SCHD": advisory lock class of scheduler upserts.
_TURN_KEY: Final = 0x53434844


class PgSchedules(PgSql):
    """bullmq job schedulers feeding the kinds' shared lanes."""

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
        key = f"{k.queue}\t{schedule_id}"
        # bullmq's add_job_scheduler refuses a second first-time insert racing the first
        # (a job id collision): processes starting together take turns per scheduler.
        async with pg_errors(), self._pool.connection() as turn:
            await turn.execute("SELECT pg_advisory_lock(%s, hashtext(%s))", (_TURN_KEY, key))
            try:
                exists = await queue.isJobScheduler(schedule_id)
                current = await queue.getJobScheduler(schedule_id) if exists else None
                if current is None or not same_schedule(current, kind, repeat, data):
                    try:
                        await queue.upsertJobScheduler(
                            schedule_id, repeat, kind, dict(data), schedule_opts(k, self._settings)
                        )
                    except (ValueError, KeyError) as exc:  # croniter and zoneinfo errors
                        raise InvalidJob(f"invalid schedule {schedule_id!r}: {exc}") from None
                    await self._rows(
                        "INSERT INTO settler_schedule (queue, schedule_id, registered_at_ms)"
                        " VALUES (%s, %s, %s) ON CONFLICT (queue, schedule_id)"
                        " DO UPDATE SET registered_at_ms = EXCLUDED.registered_at_ms",
                        (k.queue, schedule_id, int(time.time() * 1000)),
                    )
            finally:
                await turn.execute("SELECT pg_advisory_unlock(%s, hashtext(%s))", (_TURN_KEY, key))
            return next(s for s in await self._schedules_of(k) if s.id == schedule_id)

    async def list_schedules(self) -> list[ScheduleInfo]:
        """Every scheduler on the lanes of the registered kinds, by kind then id."""
        out: list[ScheduleInfo] = []
        async with pg_errors():
            for kind in self._registry:
                out.extend(sorted(await self._schedules_of(kind), key=lambda s: s.id))
        return out

    async def _schedules_of(self, kind: JobKind) -> list[ScheduleInfo]:
        raw = await self._queue(kind.queue).getJobSchedulers(0, 99, True)
        rows = await self._rows(
            "SELECT schedule_id, registered_at_ms FROM settler_schedule WHERE queue = %s",
            (kind.queue,),
        )
        registered = {str(r["schedule_id"]): int(r["registered_at_ms"]) for r in rows}
        return [schedule_info(kind, item, registered.get(str(item["key"]))) for item in raw]

    async def remove_schedule(self, kind: str, schedule_id: str) -> bool:
        """Remove a scheduler and its waiting next job; False if there was none."""
        k = self._registry.get(kind)
        async with pg_errors():
            removed = int(await self._queue(k.queue).removeJobScheduler(schedule_id)) == 0
            await self._rows(
                "DELETE FROM settler_schedule WHERE queue = %s AND schedule_id = %s",
                (k.queue, schedule_id),
            )
            return removed
