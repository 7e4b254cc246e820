"""Acting on jobs and lanes: cancel, retry, promote, pause and resume, cancel requests,
the DLQ copy cursor and retention of finished jobs.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Final

import bullmq

from settler_jobs.domain import JobState, PriorityClass, Tier, fair_step
from settler_jobs.errors import InvalidState
from settler_jobs.queue.base import QueueBase
from settler_jobs.records import JobRecord
from settler_jobs.redis_server import redis_errors

_CANCEL_CHANNEL: Final = "settler:cancel"


class Control(QueueBase):
    """Acting on jobs and lanes: cancel, retry, promote, pause, resume, clean up."""

    async def cancel(self, job_id: str, *, tenant_id: str | None = None) -> JobState:
        """Cancel a job: waiting or delayed jobs are removed, an active one is interrupted."""
        async with redis_errors():
            record = await self._get(job_id, tenant_id)
            queue = self._queue(record.queue)
            if record.state in (JobState.WAITING, JobState.DELAYED):
                parked = self._key(record.queue, f"sf:park:{record.tenant_id}")
                await self._client.zrem(parked, job_id)
                if await queue.remove(job_id, {"removeChildren": False}) == 1:
                    await self._refund(record)
                    return JobState.CANCELLED
                record = await self._get(job_id, tenant_id)
            if record.state is JobState.ACTIVE:
                message = json.dumps({"queue": record.queue, "id": job_id})
                await self._client.publish(self._key(_CANCEL_CHANNEL, "all"), message)
                return JobState.ACTIVE
            raise InvalidState(f"job {job_id!r} is {record.state.value} and cannot be cancelled")

    async def _refund(self, record: JobRecord) -> None:
        """A cancelled waiting job gives its flow's virtual time back (its quota use too)."""
        if not (record.tenant_id and record.tier and record.priority_class):
            return
        priority, tier = PriorityClass(record.priority_class), Tier(record.tier)
        step = fair_step(priority, tier)
        await self._tagger.refund(record.queue, record.tenant_id, priority, step)

    async def retry(self, job_id: str, *, tenant_id: str | None = None) -> JobRecord:
        """Run a failed job again from the start, with its attempts reset."""
        async with redis_errors():
            record = await self._get(job_id, tenant_id)
            if record.state is not JobState.FAILED:
                raise InvalidState(
                    f"job {job_id!r} is {record.state.value}; only failed jobs retry"
                )
            job = await bullmq.Job.fromId(self._queue(record.queue), job_id)
            await job.retry("failed", {"resetAttemptsMade": True, "resetAttemptsStarted": True})
            return await self._get(job_id, tenant_id)

    async def promote(self, job_id: str, *, tenant_id: str | None = None) -> JobRecord:
        """Run a delayed job now."""
        async with redis_errors():
            record = await self._get(job_id, tenant_id)
            if record.state is not JobState.DELAYED:
                raise InvalidState(
                    f"job {job_id!r} is {record.state.value}; only delayed jobs are promoted"
                )
            job = await bullmq.Job.fromId(self._queue(record.queue), job_id)
            await job.promote()
            return await self._get(job_id, tenant_id)

    async def pause(self, kind: str) -> None:
        """Stop every worker from starting new jobs of this kind (both lanes)."""
        k = self._registry.get(kind)
        async with redis_errors():
            for q in (k.queue, k.express_queue):
                await self._queue(q).pause()

    async def resume(self, kind: str) -> None:
        """Undo `pause`."""
        k = self._registry.get(kind)
        async with redis_errors():
            for q in (k.queue, k.express_queue):
                await self._queue(q).resume()

    async def cancellation_requests(self) -> AsyncIterator[tuple[str, str]]:
        """Yield (queue, job id) for every cancel request of an active job."""
        pubsub = self._client.pubsub()
        await pubsub.subscribe(self._key(_CANCEL_CHANNEL, "all"))
        try:
            async for message in pubsub.listen():
                if message.get("type") != "message":
                    continue
                try:
                    body = json.loads(message["data"])
                    yield str(body["queue"]), str(body["id"])
                except (ValueError, KeyError, TypeError):
                    continue
        finally:
            await pubsub.aclose()

    async def dlq_cursor(self, queue: str) -> int:
        """Failure time (ms) up to which this lane's failed jobs were copied to the DLQ."""
        async with redis_errors():
            value = await self._client.hget(self._key("settler", "dlq-cursor"), queue)
            return int(value) if value else 0

    async def set_dlq_cursor(self, queue: str, failed_at_ms: int) -> None:
        """Advance the DLQ copy cursor of a lane."""
        async with redis_errors():
            await self._client.hset(self._key("settler", "dlq-cursor"), queue, failed_at_ms)

    async def finished_before(self, queue: str, state: JobState, older_than_s: int) -> int:
        """How many completed/failed jobs of a lane finished more than `older_than_s` ago."""
        cutoff = int(time.time() * 1000) - older_than_s * 1000
        async with redis_errors():
            return int(
                await self._client.zcount(self._key(queue, _finished_set(state)), "-inf", cutoff)
            )

    async def clean_finished(
        self, queue: str, state: JobState, older_than_s: int, limit: int
    ) -> int:
        """Delete up to `limit` completed/failed jobs of a lane older than `older_than_s`."""
        async with redis_errors():
            removed = await self._queue(queue).clean(
                older_than_s * 1000, max(1, limit), _finished_set(state)
            )
            return len(removed or [])


def _finished_set(state: JobState) -> str:
    if state not in (JobState.COMPLETED, JobState.FAILED):
        raise ValueError("only completed or failed jobs are cleaned")
    return state.value
