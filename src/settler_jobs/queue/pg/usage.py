"""Fair-share visibility on PostgreSQL: a tenant's waiting and running jobs, quota use
and cap hits per lane, and per-tier totals for metrics — the records of queue/usage.py.

Waiting and running jobs are counted from the job rows (a flow's backlog is its rows
here); cap hits and quota refusals are counters in `settler_fair_counter`, written by
the claim and submit paths. Caps hold a capped tenant's jobs back in the claim rather
than moving them aside, so no job is ever parked and `parked` is 0.
"""

from __future__ import annotations

from collections.abc import Sequence

from settler_jobs.domain import Tier
from settler_jobs.queue.pg.base import PgQueueBase
from settler_jobs.queue.pg.pool import pg_errors
from settler_jobs.records import LaneUsage, TenantUsage


class PgUsage(PgQueueBase):
    """Per-tenant fair-share figures (exact waiting and running counts)."""

    async def fair_usage(self, tenant_id: str) -> dict[str, int]:
        """Waiting jobs of a tenant per lane, as its backlog quota counts them."""
        async with pg_errors():
            waiting = await self._tenant_counts([tenant_id])
        return {q: waiting.get((q, tenant_id, "waiting"), 0) for q in self._registry.queues()}

    async def tenant_usage(self, tenant_id: str, tier: Tier) -> TenantUsage:
        """Waiting, running and parked jobs and cap hits of one tenant, lane by lane."""
        return (await self.tenants_usage([(tenant_id, tier)]))[0]

    async def tenants_usage(self, tenants: Sequence[tuple[str, Tier]]) -> list[TenantUsage]:
        """`tenant_usage` for many tenants, in two queries."""
        queues = self._registry.queues()
        ids = [t for t, _ in tenants]
        async with pg_errors():
            counts = await self._tenant_counts(ids)
            rows = await self._pool.fetch(
                "SELECT queue, field, n FROM settler_fair_counter"
                " WHERE kind = 'cap_hit' AND queue = ANY(%s) AND field = ANY(%s)",
                (queues, [f"t:{t}" for t in ids]),
            )
        hits = {(str(r["queue"]), str(r["field"])[2:]): int(r["n"]) for r in rows}
        s = self._settings
        out = []
        for tenant_id, tier in tenants:
            lanes = [
                LaneUsage(
                    queue=q,
                    waiting=counts.get((q, tenant_id, "waiting"), 0),
                    active=counts.get((q, tenant_id, "active"), 0),
                    parked=0,
                    cap_hits=hits.get((q, tenant_id), 0),
                )
                for q in queues
            ]
            quota = s.tenant_backlog_quotas.get(tier.value, 0)
            cap = s.tenant_concurrency_caps.get(tier.value, 0)
            out.append(TenantUsage(tenant_id, tier.value, quota, cap, lanes))
        return out

    async def _tenant_counts(self, tenant_ids: list[str]) -> dict[tuple[str, str, str], int]:
        rows = await self._pool.fetch(
            "SELECT queue, data->>'tenantId' AS tenant, state::text AS state, count(*) AS n"
            " FROM job WHERE queue = ANY(%s) AND data->>'tenantId' = ANY(%s)"
            " AND state IN ('waiting', 'active') GROUP BY 1, 2, 3",
            (self._registry.queues(), tenant_ids),
        )
        return {(str(r["queue"]), str(r["tenant"]), str(r["state"])): int(r["n"]) for r in rows}

    async def tier_totals(self) -> dict[str, dict[str, int]]:
        """Per tier: cap hits and quota refusals so far, and running jobs now (for metrics)."""
        queues = self._registry.queues()
        totals: dict[str, dict[str, int]] = {
            t.value: {"cap_hits": 0, "quota_refusals": 0, "active": 0} for t in Tier
        }
        async with pg_errors():
            counters = await self._pool.fetch(
                "SELECT kind, field, sum(n) AS n FROM settler_fair_counter"
                " WHERE (kind = 'cap_hit' AND queue = ANY(%s)) OR kind = 'refusal'"
                " GROUP BY 1, 2",
                (queues,),
            )
            active = await self._pool.fetch(
                "SELECT data->>'tenantTier' AS tier, count(*) AS n FROM job"
                " WHERE queue = ANY(%s) AND state = 'active' GROUP BY 1",
                (queues,),
            )
        for row in counters:
            field = str(row["field"])
            if field in totals:
                key = "cap_hits" if row["kind"] == "cap_hit" else "quota_refusals"
                totals[field][key] += int(row["n"])
        for row in active:
            if row["tier"] in totals:
                totals[str(row["tier"])]["active"] += int(row["n"])
        return totals
