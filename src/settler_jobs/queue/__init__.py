"""The BullMQ adapter: with its lane loop (`lane_loop.py`), the only code that imports `bullmq`.

Above this border everything is snake_case and typed: `JobQueue` submits and reads
jobs, `LaneWorker` runs one queue's jobs through a processor. BullMQ's camelCase
options, id rules and `UnrecoverableError` stop here.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import string
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Final

import bullmq
from redis.asyncio import Redis

from settler_jobs import envelope
from settler_jobs.config import Settings
from settler_jobs.domain import (
    JobState,
    PriorityClass,
    RetryPolicy,
    Tier,
    bullmq_priority,
    idempotent_job_id,
    new_job_id,
    uses_express_lane,
    validate_tenant_id,
)
from settler_jobs.errors import InvalidJob, InvalidState, NotFound
from settler_jobs.kinds import JobKind, Registry
from settler_jobs.queue.lane_loop import LaneLoop, LaneOptions
from settler_jobs.records import (
    BacklogScan,
    JobRecord,
    QueueCounts,
    ScheduleInfo,
    Submission,
    Submitted,
    TenantBacklog,
)
from settler_jobs.redis_server import redis_errors

log = logging.getLogger(__name__)
_LOOKUP_ID_CHARS: Final = frozenset(string.ascii_letters + string.digits + "_.-")
_BULLMQ_STATES: Final[dict[JobState, tuple[str, ...]]] = {
    JobState.WAITING: ("waiting", "prioritized", "paused"),
    JobState.DELAYED: ("delayed",),
    JobState.ACTIVE: ("active",),
    JobState.COMPLETED: ("completed",),
    JobState.FAILED: ("failed",),
}
_MAX_DELAY_S: Final = 366 * 86_400
_BULK_CHUNK: Final = 1000
_CLOSE_TIMEOUT_S: Final = 10.0
_MAX_LIST_OFFSET: Final = 10_000
# The priority numbers we hand out (12 shared, 4 express); see domain.bullmq_priority.
_PRIORITY_LEVELS: Final = sorted({bullmq_priority(c, t) for c in PriorityClass for t in Tier})
_CANCEL_CHANNEL: Final = "settler:cancel"
# Our own field on BullMQ's job hash (Node ignores it; it goes when the job goes).
_FIRST_FAILED: Final = "settlerFirstFailedOn"
_SCHEDULE_ID: Final = re.compile(r"^[a-z][a-z0-9-]{0,63}$")
# BullMQ keys holding each state's job ids (list or sorted set).
_STATE_KEYS: Final[dict[JobState, tuple[str, ...]]] = {
    JobState.WAITING: ("wait", "prioritized", "paused"),
    JobState.DELAYED: ("delayed",),
    JobState.ACTIVE: ("active",),
    JobState.COMPLETED: ("completed",),
    JobState.FAILED: ("failed",),
}
# (state as reported, BullMQ key) read by the per-tenant backlog scan.
_BACKLOG_SETS: Final = (
    ("waiting", "wait"),
    ("waiting", "paused"),
    ("waiting", "prioritized"),
    ("delayed", "delayed"),
    ("active", "active"),
)


def _retry_policy(kind: JobKind, sub: Submission) -> RetryPolicy:
    try:
        return replace(
            kind.retry,
            attempts=sub.attempts if sub.attempts is not None else kind.retry.attempts,
            base_delay_s=sub.backoff_s if sub.backoff_s is not None else kind.retry.base_delay_s,
            max_delay_s=max(kind.retry.max_delay_s, sub.backoff_s or 0),
        )
    except ValueError as exc:
        raise InvalidJob(str(exc)) from None


def _check_overrides(sub: Submission) -> None:
    if not 0 <= sub.delay_s <= _MAX_DELAY_S:
        raise InvalidJob(f"delay must be between 0 and {_MAX_DELAY_S} seconds")
    if sub.timeout_s is not None and not 0 < sub.timeout_s <= 86_400:
        raise InvalidJob("timeout must be between 0 and 86400 seconds")
    if not isinstance(sub.data, Mapping):
        raise InvalidJob("job data must be a JSON object")


class JobQueue:
    """Producer and reader side of every lane of the registered kinds."""

    def __init__(self, client: Redis, registry: Registry, settings: Settings) -> None:
        self._client = client
        self._registry = registry
        self._settings = settings
        self._queues: dict[str, bullmq.Queue] = {}

    async def close(self) -> None:
        """Close the Redis client this queue was given."""
        await self._client.aclose()

    @property
    def registry(self) -> Registry:
        """The kinds this queue accepts."""
        return self._registry

    def _queue(self, name: str) -> bullmq.Queue:
        if name not in self._queues:
            opts = {"connection": self._client, "prefix": self._settings.queue_prefix}
            self._queues[name] = bullmq.Queue(name, opts)
        return self._queues[name]

    def _prepare(self, sub: Submission, now_ms: int) -> _Prepared:
        kind = self._registry.get(sub.kind)
        _check_overrides(sub)
        try:
            tenant_id = validate_tenant_id(sub.tenant_id)
        except ValueError as exc:
            raise InvalidJob(str(exc)) from None
        try:
            kind.parse_payload(sub.data)
        except ValueError as exc:  # pydantic.ValidationError is a ValueError
            raise InvalidJob(f"invalid data for {kind.name}: {exc}") from None
        priority = sub.priority or kind.priority
        try:
            job_id = (
                idempotent_job_id(tenant_id, kind.name, sub.idempotency_key)
                if sub.idempotency_key is not None
                else new_job_id()
            )
        except ValueError as exc:
            raise InvalidJob(str(exc)) from None
        data = envelope.build(
            sub.data,
            tenant_id=tenant_id,
            tier=sub.tier,
            job_id=job_id,
            priority=priority,
            timeout_s=sub.timeout_s,
        )
        envelope.encoded_size(data, self._settings.max_payload_bytes)
        queue = kind.express_queue if uses_express_lane(sub.tier) else kind.queue
        policy = _retry_policy(kind, sub)
        opts = {
            "jobId": job_id,
            "timestamp": now_ms,
            "priority": bullmq_priority(priority, sub.tier),
            "attempts": policy.attempts,
            "backoff": {
                "type": "exponential",
                "delay": round(policy.base_delay_s * 1000),
                "jitter": policy.jitter,
            },
            "delay": round(sub.delay_s * 1000),
            "removeOnComplete": {
                "age": self._settings.keep_completed_s,
                "count": self._settings.keep_completed_count,
            },
        }
        return _Prepared(queue, kind.name, data, opts, sub.idempotency_key is not None)

    async def submit(self, sub: Submission) -> Submitted:
        """Validate and enqueue one job; an idempotent repeat returns the existing job."""
        return (await self.submit_bulk([sub]))[0]

    async def submit_bulk(self, subs: Sequence[Submission]) -> list[Submitted]:
        """Validate every submission first, then enqueue them all in one pipeline per lane.

        Only jobs with an idempotency key are read back (to return the stored job).
        """
        now_ms = int(time.time() * 1000)
        prepared = [self._prepare(sub, now_ms) for sub in subs]
        async with redis_errors():
            # Random ids cannot exist yet: only idempotent ones are looked up.
            existing = await self._existing([p.job_id for p in prepared if p.idempotent])
            fresh: dict[str, list[dict[str, Any]]] = {}
            first: dict[str, int] = {}
            for index, p in enumerate(prepared):
                if p.job_id not in existing and p.job_id not in first:
                    first[p.job_id] = index
                    fresh.setdefault(p.queue, []).append(
                        {"name": p.kind, "data": p.data, "opts": p.opts}
                    )
            for queue, jobs in fresh.items():
                # Bounded transactions: a huge batch must not block Redis or buffer at once.
                for start in range(0, len(jobs), _BULK_CHUNK):
                    await self._queue(queue).addBulk(jobs[start : start + _BULK_CHUNK])
            return [
                await self._outcome(p, added=first.get(p.job_id) == index)
                for index, p in enumerate(prepared)
            ]

    async def _outcome(self, prepared: _Prepared, *, added: bool) -> Submitted:
        local = _new_record(prepared)
        if added and not prepared.idempotent:
            return Submitted(local, True)  # a random id cannot have been taken
        try:
            stored = await self._get(prepared.job_id)
        except NotFound:  # already run and removed: it was ours if we added it
            return Submitted(local, added)
        # With an idempotency key a concurrent producer may have won the race: then the
        # stored job is theirs, not ours.
        ours = added and stored.created_at_ms == local.created_at_ms
        return Submitted(stored, ours and stored.payload == local.payload)

    async def _existing(self, job_ids: Iterable[str]) -> set[str]:
        ids = list(job_ids)
        queues = self._registry.queues()
        found: set[str] = set()
        for start in range(0, len(ids), _BULK_CHUNK):
            chunk = ids[start : start + _BULK_CHUNK]
            pipe = self._client.pipeline(transaction=False)
            for job_id in chunk:
                for q in queues:
                    pipe.exists(self._key(q, job_id))
            flags = await pipe.execute()
            width = len(queues)
            found.update(
                job_id for i, job_id in enumerate(chunk) if any(flags[i * width : (i + 1) * width])
            )
        return found

    def _key(self, queue: str, suffix: str) -> str:
        return f"{self._settings.queue_prefix}:{queue}:{suffix}"

    async def _locate(self, job_id: str) -> str | None:
        if not job_id or len(job_id) > 128 or not set(job_id) <= _LOOKUP_ID_CHARS:
            return None
        queues = self._registry.queues()
        pipe = self._client.pipeline(transaction=False)
        for q in queues:
            pipe.exists(self._key(q, job_id))
        flags = await pipe.execute()
        hits = [q for q, hit in zip(queues, flags, strict=True) if hit]
        if len(hits) > 1:
            # Only ids we did not issue can repeat (Node numbers jobs per queue).
            raise InvalidState(f"job id {job_id!r} exists in {', '.join(hits)}; it is ambiguous")
        return hits[0] if hits else None

    async def _get(self, job_id: str, tenant_id: str | None = None) -> JobRecord:
        queue_name = await self._locate(job_id)
        if queue_name is None:
            raise NotFound(f"job {job_id!r} not found")
        queue = self._queue(queue_name)
        for _ in range(5):
            # The hash and the state are two reads: keep a pair taken between two equal
            # state reads, so a job finishing meanwhile is never shown half-way.
            state = await queue.getJobState(job_id)
            job = await bullmq.Job.fromId(queue, job_id)
            if job is None or await queue.getJobState(job_id) == state:
                break
        if job is None or (tenant_id is not None and envelope.tenant_of(job.data) != tenant_id):
            raise NotFound(f"job {job_id!r} not found")
        return _record(job, queue_name, self._registry.for_queue(queue_name).name, state)

    async def get(self, job_id: str, *, tenant_id: str | None = None) -> JobRecord:
        """One job; NotFound if missing or owned by another tenant than `tenant_id`."""
        async with redis_errors():
            return await self._get(job_id, tenant_id)

    async def list_jobs(
        self,
        *,
        kind: str | None = None,
        state: JobState | None = None,
        tenant_id: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> list[JobRecord]:
        """Newest jobs first, optionally filtered; the tenant filter applies to the page."""
        limit = max(1, min(limit, 500))
        if not 0 <= offset <= _MAX_LIST_OFFSET:
            raise ValueError(f"offset must be between 0 and {_MAX_LIST_OFFSET}; filter instead")
        kinds = [self._registry.get(kind)] if kind else list(self._registry)
        states = [state] if state else list(_BULLMQ_STATES)
        out: list[JobRecord] = []
        async with redis_errors():
            for k in kinds:
                for q in (k.queue, k.express_queue):
                    for s in states:
                        types = list(_BULLMQ_STATES[s])
                        jobs = await self._queue(q).getJobs(types, 0, offset + limit - 1)
                        out.extend(_record(job, q, k.name, s.value) for job in jobs)
        if tenant_id is not None:
            out = [r for r in out if r.tenant_id == tenant_id]
        out.sort(key=lambda r: r.created_at_ms, reverse=True)
        return out[offset : offset + limit]

    async def cancel(self, job_id: str, *, tenant_id: str | None = None) -> JobState:
        """Cancel a job: waiting or delayed jobs are removed, an active one is interrupted."""
        async with redis_errors():
            record = await self._get(job_id, tenant_id)
            queue = self._queue(record.queue)
            if record.state in (JobState.WAITING, JobState.DELAYED):
                if await queue.remove(job_id, {"removeChildren": False}) == 1:
                    return JobState.CANCELLED
                record = await self._get(job_id, tenant_id)
            if record.state is JobState.ACTIVE:
                message = json.dumps({"queue": record.queue, "id": job_id})
                await self._client.publish(self._key(_CANCEL_CHANNEL, "all"), message)
                return JobState.ACTIVE
            raise InvalidState(f"job {job_id!r} is {record.state.value} and cannot be cancelled")

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

    async def job_logs(
        self, job_id: str, *, tenant_id: str | None = None, limit: int = 200
    ) -> list[str]:
        """The newest `limit` log lines of a job (oldest first)."""
        async with redis_errors():
            record = await self._get(job_id, tenant_id)
            lines = await self._client.lrange(self._key(record.queue, f"{job_id}:logs"), -limit, -1)
            return [str(line) for line in lines]

    async def browse(
        self,
        *,
        kind: str | None = None,
        state: JobState | None = None,
        tenant_id: str | None = None,
        cursor: str = "",
        limit: int = 50,
        scan_limit: int = 2000,
    ) -> JobPage:
        """A page of jobs read segment by segment (lane, state key), newest first inside each.

        Only ids are read from BullMQ's lists and sorted sets, from the cursor on; hashes
        are read for the page alone (plus the `data` field of scanned ids when filtering by
        tenant, at most `scan_limit` of them per page: `next_cursor` goes on from there).
        """
        limit = max(1, min(limit, 200))
        segments = self._segments(kind, state)
        seg, offset = _parse_cursor(cursor, len(segments))
        picked: list[tuple[str, str, str]] = []  # (queue, state, job id)
        scanned = 0
        async with redis_errors():
            while seg < len(segments) and len(picked) < limit and scanned < scan_limit:
                queue, st, key = segments[seg]
                want = limit - len(picked) if tenant_id is None else min(200, scan_limit - scanned)
                ids = await self._ids(queue, key, offset, want)
                if tenant_id is not None:
                    keep = await self._owned(queue, ids, tenant_id)
                    taken = 0
                    for job_id in ids:
                        taken += 1
                        if job_id in keep:
                            picked.append((queue, st, job_id))
                            if len(picked) == limit:
                                break
                    ids = ids[:taken]
                else:
                    picked.extend((queue, st, job_id) for job_id in ids)
                scanned += len(ids)
                offset += len(ids)
                if len(ids) < want and len(picked) < limit:
                    seg, offset = seg + 1, 0
            records = await self._records(picked)
        more = seg < len(segments)
        return JobPage(records, f"{seg}:{offset}" if more else None, scanned)

    def _segments(self, kind: str | None, state: JobState | None) -> list[tuple[str, str, str]]:
        kinds = [self._registry.get(kind)] if kind else list(self._registry)
        states = [state] if state else list(_STATE_KEYS)
        return [
            (q, s.value, key)
            for s in states
            for k in kinds
            for q in (k.queue, k.express_queue)
            for key in _STATE_KEYS[s]
        ]

    async def _ids(self, queue: str, key: str, offset: int, count: int) -> list[str]:
        full = self._key(queue, key)
        if key in ("wait", "paused", "active"):
            ids: list[Any] = await self._client.lrange(full, offset, offset + count - 1)
        elif key in ("completed", "failed"):
            ids = await self._client.zrevrange(full, offset, offset + count - 1)
        else:
            ids = await self._client.zrange(full, offset, offset + count - 1)
        return [str(i) for i in ids]

    async def _owned(self, queue: str, ids: list[str], tenant_id: str) -> set[str]:
        pipe = self._client.pipeline(transaction=False)
        for job_id in ids:
            pipe.hget(self._key(queue, job_id), "data")
        raws = await pipe.execute()
        return {i for i, raw in zip(ids, raws, strict=True) if _tenant_in(raw) == tenant_id}

    async def _records(self, picked: list[tuple[str, str, str]]) -> list[JobRecord]:
        # One pipelined HGETALL for the page, parsed the way Job.fromId parses it.
        pipe = self._client.pipeline(transaction=False)
        for queue, _, job_id in picked:
            pipe.hgetall(self._key(queue, job_id))
        out = []
        for (queue, state, job_id), raw in zip(picked, await pipe.execute(), strict=True):
            if raw:
                job = bullmq.Job.fromJSON(self._queue(queue), raw, job_id)
                kind = self._registry.for_queue(queue).name
                out.append(_record(job, queue, kind, state))
        return out

    async def finished_per_minute(self, minutes: int = 60) -> dict[str, list[tuple[int, int]]]:
        """Per lane, (completed, failed) per minute over the last `minutes`, oldest first.

        Read from the finished sets (scored by finish time): trimmed jobs are not counted.
        """
        now_min = int(time.time()) // 60
        starts = [(now_min - minutes + 1 + i) * 60_000 for i in range(minutes)]
        queues = self._registry.queues()
        async with redis_errors():
            pipe = self._client.pipeline(transaction=False)
            for name in queues:
                for start in starts:
                    for key in ("completed", "failed"):
                        pipe.zcount(self._key(name, key), start, f"({start + 60_000}")
            replies = [int(r) for r in await pipe.execute()]
        out: dict[str, list[tuple[int, int]]] = {}
        for qi, name in enumerate(queues):
            base = qi * minutes * 2
            out[name] = [(replies[base + 2 * m], replies[base + 2 * m + 1]) for m in range(minutes)]
        return out

    async def counts(self) -> list[QueueCounts]:
        """Per-lane counts by state and the age of the oldest waiting job."""
        now_ms = int(time.time() * 1000)
        out = []
        async with redis_errors():
            for name in self._registry.queues():
                raw = await self._queue(name).getJobCounts(
                    "waiting", "prioritized", "paused", "delayed", "active", "completed", "failed"
                )
                counts = {
                    "waiting": int(raw["waiting"]) + int(raw["prioritized"]) + int(raw["paused"]),
                    **{s: int(raw[s]) for s in ("delayed", "active", "completed", "failed")},
                }
                oldest = await self._oldest_waiting(name)
                out.append(QueueCounts(name, counts, now_ms - oldest if oldest else None))
        return out

    async def finished_since(self, window_s: float) -> dict[str, tuple[int, int]]:
        """Per lane: jobs (completed, failed) in the last `window_s` seconds.

        Counted from the finished sets (scored by finish time), so jobs already trimmed
        by `keep_completed_count` are not counted.
        """
        since = int(time.time() * 1000) - round(window_s * 1000)
        queues = self._registry.queues()
        async with redis_errors():
            pipe = self._client.pipeline(transaction=False)
            for name in queues:
                pipe.zcount(self._key(name, "completed"), since, "+inf")
                pipe.zcount(self._key(name, "failed"), since, "+inf")
            replies = await pipe.execute()
        return {
            name: (int(replies[2 * i]), int(replies[2 * i + 1])) for i, name in enumerate(queues)
        }

    async def oldest_active_s(self, *, scan: int = 1000) -> dict[str, float]:
        """Per lane: seconds the longest-active job (of the first `scan`) has run; 0 if none."""
        now_ms = int(time.time() * 1000)
        out: dict[str, float] = {}
        async with redis_errors():
            for name in self._registry.queues():
                ids = await self._client.lrange(self._key(name, "active"), 0, scan - 1)
                pipe = self._client.pipeline(transaction=False)
                for job_id in ids:
                    pipe.hget(self._key(name, str(job_id)), "processedOn")
                stamps = [int(s) for s in (await pipe.execute() if ids else []) if s]
                out[name] = max(0.0, (now_ms - min(stamps)) / 1000) if stamps else 0.0
        return out

    async def _oldest_waiting(self, queue: str) -> int | None:
        # Each priority level is FIFO, so its first member is its oldest job: the
        # oldest waiting job is the oldest of those heads (plus the plain wait list).
        # Levels we never assign (a foreign producer's) are not looked at.
        pipe = self._client.pipeline(transaction=False)
        pipe.lindex(self._key(queue, "wait"), -1)
        for level in _PRIORITY_LEVELS:
            base = level * 0x100000000
            pipe.zrangebyscore(self._key(queue, "prioritized"), base, base + 0xFFFFFFFF, 0, 1)
        replies = await pipe.execute()
        heads = [replies[0]] + [r[0] for r in replies[1:] if r]
        ids = [h for h in heads if h]
        if not ids:
            return None
        pipe = self._client.pipeline(transaction=False)
        for job_id in ids:
            pipe.hget(self._key(queue, job_id), "timestamp")
        stamps = [int(s) for s in await pipe.execute() if s]
        return min(stamps) if stamps else None

    async def failed_since(self, queue: str, after_ms: int, limit: int = 500) -> list[JobRecord]:
        """Failed jobs of a lane whose failure time is at or after `after_ms`, oldest first."""
        kind = self._registry.for_queue(queue).name
        async with redis_errors():
            ids = await self._client.zrangebyscore(
                self._key(queue, "failed"), after_ms, "+inf", 0, limit
            )
            out = []
            for raw_id in ids:
                job_id = str(raw_id)
                job = await bullmq.Job.fromId(self._queue(queue), job_id)
                if job is not None:
                    first = await self._client.hget(self._key(queue, job_id), _FIRST_FAILED)
                    record = _record(job, queue, kind, "failed")
                    out.append(replace(record, first_failed_at_ms=int(first) if first else None))
            return out

    async def dlq_cursor(self, queue: str) -> int:
        """Failure time (ms) up to which this lane's failed jobs were copied to the DLQ."""
        async with redis_errors():
            value = await self._client.hget(self._key("settler", "dlq-cursor"), queue)
            return int(value) if value else 0

    async def set_dlq_cursor(self, queue: str, failed_at_ms: int) -> None:
        """Advance the DLQ copy cursor of a lane."""
        async with redis_errors():
            await self._client.hset(self._key("settler", "dlq-cursor"), queue, failed_at_ms)

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

    # ------------------------------------------------------------ job schedulers

    @property
    def client(self) -> Redis:
        """The Redis connection, for settler's own keys next to the queues."""
        return self._client

    @property
    def key_prefix(self) -> str:
        """The key prefix every queue (and settler's own keys) live under."""
        return self._settings.queue_prefix

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
        if (pattern is None) == (every_ms is None) or (every_ms is not None and every_ms < 100):
            raise InvalidJob("a schedule needs a cron pattern or an interval of >= 100 ms")
        if not _SCHEDULE_ID.fullmatch(schedule_id):
            raise InvalidJob(f"invalid schedule id {schedule_id!r}")
        repeat: dict[str, Any] = {"pattern": pattern, "tz": tz} if pattern else {"every": every_ms}
        queue = self._queue(k.queue)
        async with redis_errors():
            # bullmq 3.4.4's getJobScheduler raises for a missing id: ask first.
            exists = await queue.isJobScheduler(schedule_id)
            current = await queue.getJobScheduler(schedule_id) if exists else None
            if current is None or not _same_schedule(current, kind, repeat, data):
                try:
                    await queue.upsertJobScheduler(
                        schedule_id, repeat, kind, dict(data), self._schedule_opts(k)
                    )
                except (ValueError, KeyError) as exc:  # croniter and zoneinfo errors
                    raise InvalidJob(f"invalid schedule {schedule_id!r}: {exc}") from None
                field_name = f"{k.queue}:{schedule_id}"
                await self._client.hset(
                    self._key("settler", "schedules"), field_name, int(time.time() * 1000)
                )
            return next(s for s in await self._schedules_of(k) if s.id == schedule_id)

    def _schedule_opts(self, kind: JobKind) -> dict[str, Any]:
        return {
            "attempts": kind.retry.attempts,
            "backoff": {"type": "exponential", "delay": round(kind.retry.base_delay_s * 1000)},
            "removeOnComplete": {
                "age": self._settings.keep_completed_s,
                "count": self._settings.keep_completed_count,
            },
        }

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
            template = item.get("template") or {}
            stamp = registered.get(f"{kind.queue}:{item['key']}")
            out.append(
                ScheduleInfo(
                    id=str(item["key"]),
                    kind=kind.name,
                    pattern=item.get("pattern"),
                    every_ms=item.get("every"),
                    tz=item.get("tz"),
                    next_run_ms=int(item["next"]) if item.get("next") is not None else None,
                    iterations=int(item.get("iterationCount") or 0),
                    registered_at_ms=int(stamp) if stamp else None,
                    data=dict(template["data"]) if isinstance(template.get("data"), dict) else {},
                )
            )
        return out

    async def remove_schedule(self, kind: str, schedule_id: str) -> bool:
        """Remove a scheduler and its waiting next job; False if there was none."""
        k = self._registry.get(kind)
        async with redis_errors():
            removed = int(await self._queue(k.queue).removeJobScheduler(schedule_id)) == 0
            await self._client.hdel(self._key("settler", "schedules"), f"{k.queue}:{schedule_id}")
            return removed

    # ------------------------------------------------------ retention and stats

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

    async def tenant_backlog(self, *, per_lane: int = 1000) -> BacklogScan:
        """Unfinished jobs per tenant, from at most `per_lane` jobs per lane and state.

        Waiting jobs are read oldest first (the plain wait list from its tail, the
        prioritized set in run order); `truncated` says some lane held more.
        """
        per_lane = max(1, min(per_lane, 10_000))
        found: list[tuple[str, str, str]] = []  # (queue, state, job id)
        truncated = False
        async with redis_errors():
            pipe = self._client.pipeline(transaction=False)
            lanes = [(q, s, key) for q in self._registry.queues() for s, key in _BACKLOG_SETS]
            for q, _, key in lanes:
                if key in ("wait", "paused", "active"):
                    pipe.lrange(self._key(q, key), -per_lane, -1)
                    pipe.llen(self._key(q, key))
                else:
                    pipe.zrange(self._key(q, key), 0, per_lane - 1)
                    pipe.zcard(self._key(q, key))
            replies = await pipe.execute()
            for index, (q, state, _) in enumerate(lanes):
                ids, total = replies[2 * index], int(replies[2 * index + 1])
                truncated = truncated or total > len(ids)
                found.extend((q, state, str(job_id)) for job_id in ids)
            tenants = await self._tally(found)
        return BacklogScan(tenants, len(found), truncated)

    async def _tally(self, found: list[tuple[str, str, str]]) -> dict[str, TenantBacklog]:
        tenants: dict[str, TenantBacklog] = {}
        for start in range(0, len(found), _BULK_CHUNK):
            chunk = found[start : start + _BULK_CHUNK]
            pipe = self._client.pipeline(transaction=False)
            for q, _, job_id in chunk:
                pipe.hmget(self._key(q, job_id), "data", "timestamp")
            for (q, state, _), (raw, stamp) in zip(chunk, await pipe.execute(), strict=True):
                tenant = _tenant_in(raw)
                if tenant is None:
                    continue
                entry = tenants.setdefault(tenant, TenantBacklog({}, {}, {}, None))
                counts: dict[str, int] = getattr(entry, state)
                kind = self._registry.for_queue(q).name
                counts[kind] = counts.get(kind, 0) + 1
                if state == "waiting" and stamp:
                    oldest = entry.oldest_waiting_created_ms
                    if oldest is None or int(stamp) < oldest:
                        tenants[tenant] = replace(entry, oldest_waiting_created_ms=int(stamp))
        return tenants


@dataclass(frozen=True, slots=True)
class JobPage:
    """One page of `JobQueue.browse`: the jobs, where to go on, and how many ids were read."""

    jobs: list[JobRecord]
    next_cursor: str | None
    scanned: int


def _parse_cursor(cursor: str, segments: int) -> tuple[int, int]:
    if not cursor:
        return 0, 0
    try:
        seg, offset = (int(part) for part in cursor.split(":"))
    except ValueError:
        raise InvalidJob("the page cursor is malformed") from None
    if not (0 <= seg <= segments and 0 <= offset <= 100_000_000):
        raise InvalidJob("the page cursor is out of range")
    return seg, offset


def _finished_set(state: JobState) -> str:
    if state not in (JobState.COMPLETED, JobState.FAILED):
        raise ValueError("only completed or failed jobs are cleaned")
    return state.value


def _same_schedule(
    current: Mapping[str, Any], kind: str, repeat: Mapping[str, Any], data: Mapping[str, Any]
) -> bool:
    template = current.get("template") or {}
    return (
        current.get("name") == kind
        and all(current.get(key) == value for key, value in repeat.items())
        and (template.get("data") or {}) == dict(data)
    )


def _tenant_in(raw: str | None) -> str | None:
    if not raw:
        return None
    try:
        return envelope.tenant_of(json.loads(raw))
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class _Prepared:
    """A validated submission, as it will be written."""

    queue: str
    kind: str
    data: dict[str, Any]
    opts: dict[str, Any]
    idempotent: bool

    @property
    def job_id(self) -> str:
        return str(self.opts["jobId"])


def _new_record(p: _Prepared) -> JobRecord:
    """The record of a job we just added, built from what we wrote (no read-back)."""
    env = envelope.parse(p.data)
    opts = p.opts
    return JobRecord(
        id=p.job_id,
        queue=p.queue,
        kind=p.kind,
        state=JobState.DELAYED if opts["delay"] else JobState.WAITING,
        tenant_id=env.tenant_id,
        tier=env.tier.value,
        priority_class=env.priority.value if env.priority else None,
        bullmq_priority=opts["priority"],
        payload=env.payload,
        progress=0,
        attempts_made=0,
        max_attempts=opts["attempts"],
        created_at_ms=opts["timestamp"],
        processed_at_ms=None,
        finished_at_ms=None,
        delay_ms=opts["delay"],
        result=None,
        failure_reason=None,
    )


def _record(job: Any, queue: str, kind: str, state: str) -> JobRecord:
    data = job.data if isinstance(job.data, dict) else {}
    try:
        env: envelope.Envelope | None = envelope.parse(data)
    except Exception:
        env = None
    stacktrace = job.stacktrace if isinstance(job.stacktrace, list) else []
    return JobRecord(
        id=str(job.id),
        queue=queue,
        kind=kind,
        state=JobState.from_bullmq(state),
        tenant_id=env.tenant_id if env else envelope.tenant_of(data),
        tier=env.tier.value if env else None,
        priority_class=env.priority.value if env and env.priority else None,
        bullmq_priority=int(job.priority or 0),
        payload=env.payload if env else data,
        progress=job.progress,
        attempts_made=int(job.attemptsMade),
        max_attempts=int(job.opts.get("attempts") or 1),
        created_at_ms=int(job.timestamp),
        processed_at_ms=int(job.processedOn) or None,
        finished_at_ms=int(job.finishedOn) or None,
        delay_ms=int(job.delay or 0),
        result=job.returnvalue,
        failure_reason=job.failedReason,
        stacktrace=tuple(str(s) for s in stacktrace),
    )


# ---------------------------------------------------------------- worker side


class AttemptFailed(Exception):
    """Raised by a processor: the attempt failed; retry after the delay, or never (None)."""

    def __init__(self, reason: str, retry_delay_s: float | None) -> None:
        super().__init__(reason)
        self.retry_delay_s = retry_delay_s


@dataclass(slots=True)
class ActiveJob:
    """The job a worker slot is running, with the handle to report progress."""

    id: str
    queue: str
    name: str
    data: Any
    attempts_made: int
    max_attempts: int
    created_at_ms: int
    processed_at_ms: int
    backoff_delay_ms: int | None
    _job: Any = field(repr=False)

    async def report_progress(self, value: int | dict[str, Any]) -> None:
        """Store progress on the job (visible to readers while it runs)."""
        await self._job.updateProgress(value)


def _backoff_delay(backoff: Any) -> int | None:
    if isinstance(backoff, dict) and isinstance(backoff.get("delay"), int):
        return int(backoff["delay"])
    return None


Processor = Callable[[ActiveJob], Awaitable[Any]]
FailureHook = Callable[[JobRecord], Awaitable[None]]


class LaneWorker:
    """Runs one queue's jobs through `processor` on our lane loop (queue/lane_loop.py).

    BullMQ's locks, stalled checks and retries, with fetch-next and a pipelined
    connection; `bullmq.Worker` itself is no longer used. The lane owns `client` and
    closes it in `close`.
    """

    def __init__(
        self,
        queue: str,
        kind: str,
        processor: Processor,
        *,
        concurrency: int,
        client: Redis,
        settings: Settings,
        on_dead: FailureHook,
    ) -> None:
        self.queue = queue
        self._kind = kind
        self._client = client
        self._prefix = settings.queue_prefix
        self._processor = processor
        self._on_dead = on_dead
        self._hooks: set[asyncio.Task[None]] = set()
        options = LaneOptions(
            concurrency=concurrency,
            lock_duration_ms=settings.lock_duration_ms,
            stalled_interval_ms=settings.stalled_interval_ms,
            max_stalled_count=settings.max_stalled_count,
            # A worker option, not a job option: it saves ~30 bytes per waiting job.
            # Failed jobs of Node workers are kept until removed (the DLQ has a copy).
            remove_on_fail={"age": settings.keep_failed_s},
            name=f"settler-{kind}",
        )
        self.loop = LaneLoop(
            queue,
            self._process,
            client=client,
            prefix=settings.queue_prefix,
            options=options,
            on_failed=self._on_failed,
        )

    def start(self) -> None:
        """Begin fetching jobs in the background."""
        self.loop.start()

    async def _process(self, job: Any, token: str) -> Any:
        active = ActiveJob(
            id=str(job.id),
            queue=self.queue,
            name=str(job.name),
            data=job.data,
            attempts_made=int(job.attemptsMade),
            max_attempts=int(job.opts.get("attempts") or 1),
            created_at_ms=int(job.timestamp),
            processed_at_ms=int(job.processedOn) or int(time.time() * 1000),
            backoff_delay_ms=_backoff_delay(job.opts.get("backoff")),
            _job=job,
        )
        try:
            return await self._processor(active)
        except AttemptFailed as failed:
            key = f"{self._prefix}:{self.queue}:{active.id}"
            await self._client.hsetnx(key, _FIRST_FAILED, int(time.time() * 1000))
            if failed.retry_delay_s is None:
                raise bullmq.UnrecoverableError(str(failed)) from failed
            # Only this attempt's local copy changes: the stored options keep the
            # portable exponential backoff that Node workers understand.
            job.opts["backoff"] = {
                "type": "fixed",
                "delay": max(0, round(failed.retry_delay_s * 1000)),
            }
            raise

    def _on_failed(self, job: Any, err: BaseException) -> None:
        """A job failed for good: report it as dead (in the background)."""
        record = _record(job, self.queue, self._kind, "failed")
        task = asyncio.ensure_future(self._report_dead(record))
        self._hooks.add(task)
        task.add_done_callback(self._hooks.discard)

    async def _report_dead(self, record: JobRecord) -> None:
        first = await self._client.hget(f"{self._prefix}:{self.queue}:{record.id}", _FIRST_FAILED)
        await self._on_dead(replace(record, first_failed_at_ms=int(first) if first else None))

    async def pause(self) -> None:
        """Stop fetching (in-flight jobs finish)."""
        await self.loop.pause()

    def resume(self) -> None:
        """Fetch again after `pause`."""
        self.loop.resume()

    def interrupt(self) -> None:
        """Cancel every in-flight job of this lane."""
        self.loop.interrupt()

    async def close(self, grace_s: float) -> bool:
        """Stop fetching, let in-flight jobs finish for `grace_s`, then interrupt them.

        Returns False if jobs had to be interrupted; the stalled-job check hands those
        back to another worker once their locks expire.
        """
        closing = asyncio.ensure_future(self.loop.close(grace_s))
        # Every wait below is bounded: a shutdown must end even if a connection hangs.
        done, _ = await asyncio.wait({closing}, timeout=grace_s + _CLOSE_TIMEOUT_S)
        clean = closing.result() if done else False
        pending = [closing, *self._hooks]
        _, stuck = await asyncio.wait(pending, timeout=_CLOSE_TIMEOUT_S)
        for task in stuck:
            log.warning("lane.close_timeout", extra={"queue": self.queue, "task": where(task)})
            task.cancel()
        if stuck:
            await asyncio.wait(stuck, timeout=_CLOSE_TIMEOUT_S)
            clean = False
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._client.aclose(), _CLOSE_TIMEOUT_S)
        return clean


def where(task: asyncio.Future[Any]) -> str:
    """Where a task is waiting: its innermost frame, for shutdown diagnostics."""
    frames = task.get_stack() if isinstance(task, asyncio.Task) else []
    return " <- ".join(f"{f.f_code.co_name}:{f.f_lineno}" for f in reversed(frames)) or repr(task)
