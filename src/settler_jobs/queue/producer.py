"""Submitting jobs: validation, BullMQ job options and ids, bulk adds, idempotent repeats."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Final

import bullmq

from settler_jobs import envelope
from settler_jobs.config import Settings
from settler_jobs.domain import (
    JobState,
    RetryPolicy,
    Tier,
    bullmq_priority,
    fair_step,
    idempotent_job_id,
    new_job_id,
    uses_express_lane,
    validate_tenant_id,
)
from settler_jobs.errors import InvalidJob, NotFound, QuotaExceeded
from settler_jobs.kinds import JobKind, Registry
from settler_jobs.queue.base import _BULK_CHUNK, QueueBase
from settler_jobs.queue.fair import REFUSALS_KEY, Tagged
from settler_jobs.records import JobRecord, Submission, Submitted
from settler_jobs.redis_server import redis_errors

_MAX_DELAY_S: Final = 366 * 86_400
# bullmq's key lists of its prioritized and delayed add scripts (scripts.py, 3.4.4).
_PRIORITIZED_KEYS: Final = [
    "marker",
    "meta",
    "id",
    "prioritized",
    "delayed",
    "completed",
    "active",
    "events",
    "pc",
]
_DELAYED_KEYS: Final = ["marker", "meta", "id", "delayed", "completed", "events"]


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


def prepare(registry: Registry, settings: Settings, sub: Submission, now_ms: int) -> _Prepared:
    """Validate one submission and build what will be written (any queue backend)."""
    kind = registry.get(sub.kind)
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
    envelope.encoded_size(data, settings.max_payload_bytes)
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
            "age": settings.keep_completed_s,
            "count": settings.keep_completed_count,
        },
    }
    return _Prepared(
        queue,
        kind.name,
        data,
        opts,
        sub.idempotency_key is not None,
        tenant_id,
        sub.tier,
        Tagged(queue, tenant_id, priority, fair_step(priority, sub.tier), sub.delay_s > 0),
    )


class Producer(QueueBase):
    """Submitting jobs: one or many, validated first, idempotent repeats answered."""

    def _prepare(self, sub: Submission, now_ms: int) -> _Prepared:
        return prepare(self._registry, self._settings, sub, now_ms)

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
            first: dict[str, int] = {}
            for index, p in enumerate(prepared):
                if p.job_id not in existing and p.job_id not in first:
                    first[p.job_id] = index
            adding = [prepared[i] for i in first.values()]
            fair = bool(adding) and self._settings.fair_share
            if fair and len({p.queue for p in adding}) == 1 and len(adding) <= _BULK_CHUNK:
                await self._fair_add(adding)  # the common case: one script, one round trip
            else:
                if fair:
                    await self._tag(adding)
                fresh: dict[str, list[_Prepared]] = {}
                for p in adding:
                    fresh.setdefault(p.queue, []).append(p)
                for queue, jobs in fresh.items():
                    # Bounded transactions: a huge batch must not block Redis or buffer.
                    for start in range(0, len(jobs), _BULK_CHUNK):
                        await self._add(queue, jobs[start : start + _BULK_CHUNK])
            return [
                await self._outcome(p, added=first.get(p.job_id) == index)
                for index, p in enumerate(prepared)
            ]

    def _quotas(
        self, adding: list[_Prepared]
    ) -> tuple[dict[str, tuple[int, int]], dict[str, tuple[int, int]], list[str]]:
        """(tenant -> (quota, adds)) for all, for those with a quota, and the lanes to sum."""
        quotas: dict[str, tuple[int, int]] = {}
        for p in adding:
            quota, count = quotas.get(p.tenant_id, (self._quota(p.tier), 0))
            quotas[p.tenant_id] = (quota, count + 1)
        checks = {t: q for t, q in quotas.items() if q[0] > 0}
        lanes = self._registry.queues() if checks else sorted({p.queue for p in adding})
        return quotas, checks, lanes

    async def _tag(self, adding: list[_Prepared]) -> None:
        """Fair-share priorities for the jobs about to be added; QuotaExceeded refuses all."""
        quotas, checks, lanes = self._quotas(adding)
        reply = await self._tagger.tag(lanes, [p.tagged for p in adding], checks)
        await self._apply(adding, quotas, reply)

    async def _fair_add(self, adding: list[_Prepared]) -> None:
        """Tag and add jobs of one lane in one script (bullmq's add scripts inside it)."""
        quotas, checks, lanes = self._quotas(adding)
        q = self._queue(adding[0].queue)
        scripts = q.backend.scripts
        keys = scripts.getKeys(_PRIORITIZED_KEYS) + scripts.getKeys(_DELAYED_KEYS)
        args = [
            scripts.addJobArgs(bullmq.Job(q, p.kind, p.data, p.opts, job_id=p.job_id))
            for p in adding
        ]
        reply = await self._tagger.add(lanes, [p.tagged for p in adding], checks, keys, args)
        await self._apply(adding, quotas, reply)

    async def _apply(
        self, adding: list[_Prepared], quotas: dict[str, tuple[int, int]], reply: Any
    ) -> None:
        if not isinstance(reply, list):
            tier = next(p.tier for p in adding if p.tenant_id == reply.tenant_id)
            await self._client.hincrby(self._key(REFUSALS_KEY, "all"), tier.value, 1)
            adds = quotas[reply.tenant_id][1]
            retry = self._settings.quota_retry_after_s
            raise QuotaExceeded(reply.tenant_id, reply.backlog, adds, reply.quota, retry)
        for p, priority in zip(adding, reply, strict=True):
            p.opts["priority"] = priority

    def _quota(self, tier: Tier) -> int:
        return self._settings.tenant_backlog_quotas.get(tier.value, 0)

    async def _add(self, queue: str, jobs: list[_Prepared]) -> None:
        """bullmq's own add scripts, one transaction per chunk (as Queue.addBulk)."""
        q = self._queue(queue)
        if self._cluster_adds is not None:
            # On a cluster, bulk adds bypass the client's thread-per-command transactions.
            dicts = [{"name": p.kind, "data": p.data, "opts": p.opts} for p in jobs]
            await self._cluster_adds.add(q, dicts)
            return
        instances = [bullmq.Job(q, p.kind, p.data, p.opts, job_id=p.job_id) for p in jobs]
        scripts = q.backend.scripts
        async with self._client.pipeline(transaction=len(jobs) > 1) as pipe:
            for job in instances:
                await scripts.addJob(job, pipe)
            await pipe.execute()

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


@dataclass(frozen=True, slots=True)
class _Prepared:
    """A validated submission, as it will be written."""

    queue: str
    kind: str
    data: dict[str, Any]
    opts: dict[str, Any]
    idempotent: bool
    tenant_id: str
    tier: Tier
    tagged: Tagged

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
