"""Fetching for the lane loop's idle slots: moveToActive, fetch-next replies, the marker
wait, and adopting a job a lost reply moved to active.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Final

from bullmq.scripts import array2obj
from redis.exceptions import ConnectionError, RedisError

from settler_jobs.queue.lane_base import _RETRY_S, LaneBase, _now_ms
from settler_jobs.queue.lane_jobs import job_from_raw

# The whole lane loop logs as its main module, lane_loop.py.
log = logging.getLogger("settler_jobs.queue.lane_loop")
_MAX_BLOCK_S: Final = 10.0  # as bullmq: a BZPOPMIN never blocks longer (reconnects)
_MIN_BLOCK_S: Final = 0.002  # Redis < 7.0.8 turns 1 ms blocks into "forever"


class LaneFetcher(LaneBase):
    """How idle slots get their next job."""

    async def _fetch(self, token: str) -> Any:
        """The next job for an idle slot (one slot fetches at a time); None to re-check."""
        async with self._fetch_lock:
            if not self._caps_ready.is_set():
                await self._caps_ready.wait()
            while self._fetching():
                limit_s = (self._limit_until - _now_ms()) / 1000
                if limit_s > 0:
                    await self._nap(limit_s)
                    continue
                if self._drained and not await self._wait_for_marker():
                    continue
                try:
                    raw = await self._scripts.moveToActive(token, self._view.opts)
                except (RedisError, OSError) as exc:
                    log.warning("lane.fetch_failed", extra={"queue": self.queue, "error": str(exc)})
                    await self._nap(self._o.retry_s)
                    if isinstance(exc, ConnectionError | OSError):
                        orphan = await self._adopt(token)
                        if orphan is not None:
                            return orphan
                    continue
                job = await self._next(raw, token)
                if job is not None:
                    return job
        return None

    async def _adopt(self, token: str) -> Any:
        """The job a lost fetch reply moved to active for this slot, if any.

        It is locked with the slot's token and no slot runs it. Without this it would
        wait for its lock to expire and come back through the stalled check (one stall).
        """
        for attempt, pause in enumerate(_RETRY_S * 2):
            try:
                return await self._find_orphan(token)
            except (RedisError, OSError) as exc:
                log.warning(
                    "lane.adopt_failed",
                    extra={"queue": self.queue, "error": str(exc), "attempt": attempt},
                )
                await asyncio.sleep(pause)
        return None

    async def _find_orphan(self, token: str) -> Any:
        base = self._keys[""]
        ids = await self.pipe.execute("LRANGE", self._keys["active"], 0, -1)
        for start in range(0, len(ids), 1000):
            chunk = ids[start : start + 1000]
            locks = await self.pipe.execute("MGET", *(f"{base}{i}:lock" for i in chunk))
            for job_id, lock in zip(chunk, locks, strict=True):
                if lock != token or job_id in self._locks.tracked_jobs:
                    continue
                raw = await self.pipe.execute("HGETALL", base + job_id)
                if raw:
                    log.info("lane.adopted", extra={"queue": self.queue, "job_id": job_id})
                    return await self._next([array2obj(raw), job_id, 0, 0], token)
        return None

    async def _next(self, raw: list[Any], token: str) -> Any:
        """The job of a fetch reply (moveToActive or fetch-next), noting limits and delays."""
        job_data, job_id, limit_ms, delay_until = raw
        limit_ms = max(int(limit_ms or 0), 0)
        self._limit_until = _now_ms() + limit_ms if limit_ms else 0
        if not job_data:
            if not self._drained and not limit_ms:
                self._drained = True
                self._block_until = 0
            if delay_until:
                self._block_until = max(int(delay_until), 0)
            return None
        self._drained = False
        job = job_from_raw(self._view, job_data, job_id)
        job.token = token
        if job.repeatJobKey:
            await self._next_iteration(job)
        return job

    async def _next_iteration(self, job: Any) -> None:
        """Materialise the next run of the job scheduler that produced `job`."""
        try:
            await self._schedulers.upsertJobScheduler(
                job.repeatJobKey,
                (job.opts or {}).get("repeat"),
                job.name,
                job.data,
                job.opts,
                override=False,
                producer_id=job.id,
            )
        except Exception:
            log.exception("lane.scheduler_failed", extra={"queue": self.queue, "job_id": job.id})

    async def _wait_for_marker(self) -> bool:
        """Block on the queue's marker; True when it is time to fetch."""
        now = _now_ms()
        if self._block_until and self._block_until <= now:
            self._block_until = 0
            return True
        if self._block_until:
            timeout = min(max((self._block_until - now) / 1000, _MIN_BLOCK_S), _MAX_BLOCK_S)
        else:
            timeout = max(self._o.drain_delay_s, _MIN_BLOCK_S)
        if self._marker_wait is None:
            command = ("BZPOPMIN", self._keys["marker"], round(timeout, 3))
            self._marker_wait = asyncio.ensure_future(self.blocking.execute(*command))
        waiting = self._marker_wait
        woken = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait(
                {waiting, woken}, timeout=timeout + 5, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            woken.cancel()
        if not waiting.done():
            if self._fetching():  # no answer long past the timeout: a dead socket
                self.blocking.drop()
            return False
        self._marker_wait = None
        try:
            reply = waiting.result()
        except (RedisError, OSError) as exc:
            if self._fetching():
                log.warning("lane.wait_failed", extra={"queue": self.queue, "error": str(exc)})
                await self._nap(self._o.retry_s)
            return False
        self._block_until = int(float(reply[2])) if reply and reply[1] else 0
        return self._block_until <= _now_ms()
