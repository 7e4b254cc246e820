"""The shared base of `JobQueue`'s parts: client, registry and settings, BullMQ queue
handles, key names, job lookup, and BullMQ jobs read back as `JobRecord`s.
"""

from __future__ import annotations

import string
from typing import Any, Final

import bullmq
from redis.asyncio import Redis

from settler_jobs import envelope
from settler_jobs.config import Settings
from settler_jobs.domain import JobState
from settler_jobs.errors import InvalidState, NotFound
from settler_jobs.kinds import Registry
from settler_jobs.queue.cluster_bulk import ClusterBulkAdder
from settler_jobs.queue.fair import FairTagger
from settler_jobs.records import JobRecord
from settler_jobs.redis_cluster import is_cluster

_LOOKUP_ID_CHARS: Final = frozenset(string.ascii_letters + string.digits + "_.-")
_BULK_CHUNK: Final = 1000
# Our own field on BullMQ's job hash (Node ignores it; it goes when the job goes).
_FIRST_FAILED: Final = "settlerFirstFailedOn"


class QueueBase:
    """What every part of `JobQueue` shares: the client, the kinds, the settings, job lookup."""

    def __init__(self, client: Redis, registry: Registry, settings: Settings) -> None:
        self._client = client
        self._registry = registry
        self._settings = settings
        self._queues: dict[str, bullmq.Queue] = {}
        # On a cluster, bulk adds bypass the client's thread-per-command transactions.
        self._cluster_adds = (
            ClusterBulkAdder(client, settings.queue_prefix) if is_cluster(client) else None
        )
        self._tagger = FairTagger(
            client,
            settings.queue_prefix,
            horizon=settings.fair_horizon,
            rebase_at=settings.fair_rebase_at,
        )

    async def close(self) -> None:
        """Close the Redis client this queue was given."""
        if self._cluster_adds is not None:
            await self._cluster_adds.close()
        await self._client.aclose()

    async def ping(self) -> None:
        """Raise if Redis does not answer."""
        await self._client.ping()

    @property
    def registry(self) -> Registry:
        """The kinds this queue accepts."""
        return self._registry

    @property
    def client(self) -> Redis:
        """The Redis connection, for settler's own keys next to the queues."""
        return self._client

    @property
    def key_prefix(self) -> str:
        """The key prefix every queue (and settler's own keys) live under."""
        return self._settings.queue_prefix

    def _queue(self, name: str) -> bullmq.Queue:
        if name not in self._queues:
            opts = {"connection": self._client, "prefix": self._settings.queue_prefix}
            self._queues[name] = bullmq.Queue(name, opts)
        return self._queues[name]

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
        if state == "unknown" and await self._is_parked(queue_name, job_id, job.data):
            state = "waiting"
        return _record(job, queue_name, self._registry.for_queue(queue_name).name, state)

    async def _is_parked(self, queue: str, job_id: str, data: Any) -> bool:
        """True if a tenant cap parked this waiting job (see queue/lua/pop.lua)."""
        tenant = envelope.tenant_of(data) if isinstance(data, dict) else None
        if tenant is None:
            return False
        key = self._key(queue, f"sf:park:{tenant}")
        return await self._client.zscore(key, job_id) is not None


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
