"""Fair-share visibility: a tenant's waiting and running jobs, quota use and cap hits per
lane, and per-tier totals for metrics (cap hits, quota refusals, running jobs).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from settler_jobs import envelope
from settler_jobs.domain import Tier
from settler_jobs.queue.base import QueueBase
from settler_jobs.queue.fair import REFUSALS_KEY
from settler_jobs.records import LaneUsage, TenantUsage
from settler_jobs.redis_server import redis_errors


class Usage(QueueBase):
    """Per-tenant fair-share figures (exact running counts, quota-counted waiting ones)."""

    async def fair_usage(self, tenant_id: str) -> dict[str, int]:
        """Waiting jobs of a tenant per lane, as its backlog quota counts them."""
        async with redis_errors():
            return await self._tagger.backlog(self._registry.queues(), tenant_id)

    async def tenant_usage(self, tenant_id: str, tier: Tier) -> TenantUsage:
        """Waiting, running and parked jobs and cap hits of one tenant, lane by lane."""
        return (await self.tenants_usage([(tenant_id, tier)]))[0]

    async def tenants_usage(self, tenants: Sequence[tuple[str, Tier]]) -> list[TenantUsage]:
        """`tenant_usage` for many tenants (the active lists are read once)."""
        queues = self._registry.queues()
        out = []
        async with redis_errors():
            active = await self._active_by_tenant(queues)
            for tenant_id, tier in tenants:
                waiting = await self._tagger.backlog(queues, tenant_id)
                pipe = self._client.pipeline(transaction=False)
                for q in queues:
                    pipe.zcard(self._key(q, f"sf:park:{tenant_id}"))
                    pipe.hget(self._key(q, "sf:hits"), f"t:{tenant_id}")
                replies = await pipe.execute()
                lanes = [
                    LaneUsage(
                        queue=q,
                        waiting=waiting[q],
                        active=active.get((q, tenant_id), 0),
                        parked=int(replies[2 * i]),
                        cap_hits=int(replies[2 * i + 1] or 0),
                    )
                    for i, q in enumerate(queues)
                ]
                s = self._settings
                quota = s.tenant_backlog_quotas.get(tier.value, 0)
                cap = s.tenant_concurrency_caps.get(tier.value, 0)
                out.append(TenantUsage(tenant_id, tier.value, quota, cap, lanes))
        return out

    async def _active_by_tenant(self, queues: list[str]) -> dict[tuple[str, str], int]:
        """Running jobs per (lane, tenant): active lists are as long as the slots in use."""
        out: dict[tuple[str, str], int] = {}
        for q in queues:
            for raw in await self._active_data(q):
                tenant = _tenant(raw)
                if tenant is not None:
                    out[(q, tenant)] = out.get((q, tenant), 0) + 1
        return out

    async def _active_data(self, queue: str) -> list[Any]:
        """The data field of every job in the lane's active list."""
        ids = await self._client.lrange(self._key(queue, "active"), 0, -1)
        if not ids:
            return []
        pipe = self._client.pipeline(transaction=False)
        for job_id in ids:
            pipe.hget(self._key(queue, str(job_id)), "data")
        return list(await pipe.execute())

    async def tier_totals(self) -> dict[str, dict[str, int]]:
        """Per tier: cap hits and quota refusals so far, and running jobs now (for metrics)."""
        queues = self._registry.queues()
        totals: dict[str, dict[str, int]] = {
            t.value: {"cap_hits": 0, "quota_refusals": 0, "active": 0} for t in Tier
        }
        async with redis_errors():
            pipe = self._client.pipeline(transaction=False)
            for q in queues:
                pipe.hgetall(self._key(q, "sf:hits"))
            pipe.hgetall(self._key(REFUSALS_KEY, "all"))
            *hits, refusals = await pipe.execute()
            for lane_hits in hits:
                for field, n in lane_hits.items():
                    if str(field) in totals:
                        totals[str(field)]["cap_hits"] += int(n)
            for tier, n in refusals.items():
                if str(tier) in totals:
                    totals[str(tier)]["quota_refusals"] += int(n)
            for q in queues:
                for raw in await self._active_data(q):
                    tier = _tier(raw)
                    if tier in totals:
                        totals[tier]["active"] += 1
        return totals


def _parsed(raw: str | None) -> dict[str, object] | None:
    if not raw:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _tenant(raw: str | None) -> str | None:
    data = _parsed(raw)
    return envelope.tenant_of(data) if data is not None else None


def _tier(raw: str | None) -> str | None:
    data = _parsed(raw)
    tier = data.get("tenantTier") if data is not None else None
    return tier if isinstance(tier, str) else None
