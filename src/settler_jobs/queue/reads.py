"""Reading jobs and lanes: get, list and browse (with `JobPage`), counts, finish rates,
waiting and active ages, recent failures, job logs and the per-tenant backlog.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from typing import Any, Final

import bullmq

from settler_jobs import envelope
from settler_jobs.domain import JobState
from settler_jobs.errors import InvalidJob
from settler_jobs.queue.base import _BULK_CHUNK, _FIRST_FAILED, QueueBase, _record
from settler_jobs.queue.fair import lua
from settler_jobs.records import BacklogScan, JobRecord, QueueCounts, TenantBacklog
from settler_jobs.redis_server import redis_errors

_BULLMQ_STATES: Final[dict[JobState, tuple[str, ...]]] = {
    JobState.WAITING: ("waiting", "prioritized", "paused"),
    JobState.DELAYED: ("delayed",),
    JobState.ACTIVE: ("active",),
    JobState.COMPLETED: ("completed",),
    JobState.FAILED: ("failed",),
}
_MAX_LIST_OFFSET: Final = 10_000
# Flow heads sit within one largest step (200) of the head's level (queue/fair.py).
_HEAD_WINDOW: Final = 201 * 0x100000000
_HEAD_SCAN: Final = 2000
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


def page_limit(limit: int, offset: int) -> int:
    """`limit` clamped to 1..500; ValueError for an offset past what a list may skip."""
    if not 0 <= offset <= _MAX_LIST_OFFSET:
        raise ValueError(f"offset must be between 0 and {_MAX_LIST_OFFSET}; filter instead")
    return max(1, min(limit, 500))


class Reader(QueueBase):
    """Reading jobs and lanes: one job, lists and pages, counts and finish rates, backlogs."""

    _oldest_script: Any = None  # lua/oldest.lua, registered on first use

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
        limit = page_limit(limit, offset)
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
        seg, offset = parse_cursor(cursor, len(segments))
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
                    "waiting": int(raw["waiting"])
                    + int(raw["prioritized"])
                    + int(raw["paused"])
                    + await self._parked(name),
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
        # Each flow is FIFO and a waiting flow's head is tagged within one step of the
        # lane's clock, so the oldest job is among the jobs of the first 201 levels (up
        # to _HEAD_SCAN of them), the plain wait list's tail or a parked tenant's head:
        # one script reads their creation times (lua/oldest.lua), not a reply per job.
        if self._oldest_script is None:
            self._oldest_script = self._client.register_script(lua("oldest"))
        keys = [self._key(queue, k) for k in ("prioritized", "wait", "sf:parked")]
        args = [self._key(queue, ""), _HEAD_WINDOW, _HEAD_SCAN]
        oldest = await self._oldest_script(keys=keys, args=args)
        return int(oldest) if oldest else None

    async def _parked(self, queue: str) -> int:
        """Waiting jobs parked by tenant caps (outside BullMQ's own sets)."""
        tenants = await self._client.zrange(self._key(queue, "sf:parked"), 0, -1)
        if not tenants:
            return 0
        pipe = self._client.pipeline(transaction=False)
        for tenant in tenants:
            pipe.zcard(self._key(queue, f"sf:park:{tenant!s}"))
        return sum(int(n) for n in await pipe.execute())

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


def parse_cursor(cursor: str, segments: int) -> tuple[int, int]:
    """(segment, offset) of a page cursor "<segment>:<offset>"; InvalidJob if malformed."""
    if not cursor:
        return 0, 0
    try:
        seg, offset = (int(part) for part in cursor.split(":"))
    except ValueError:
        raise InvalidJob("the page cursor is malformed") from None
    if not (0 <= seg <= segments and 0 <= offset <= 100_000_000):
        raise InvalidJob("the page cursor is out of range")
    return seg, offset


def _tenant_in(raw: str | None) -> str | None:
    if not raw:
        return None
    try:
        return envelope.tenant_of(json.loads(raw))
    except ValueError:
        return None
