"""Fair-share visibility on PostgreSQL: a tenant's waiting and running jobs, quota use
and cap hits per lane, and per-tier totals for metrics — the records of queue/usage.py.

Waiting jobs are counted as the backlog quota counts them, from the flows' finish tags
and the lane's clock (`settler_fair_flow`, `settler_fair_lane`: queue/fair.py's rule);
running jobs from the active rows. Cap hits and quota refusals are the counters the
claim and submit paths keep in `settler_fair_counter`. Caps hold a capped tenant's jobs
back in the claim rather than moving them aside; `parked` counts the waiting jobs of a
tenant that runs at its cap in that lane, the jobs the claim is skipping.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from settler_jobs.domain import Tier
from settler_jobs.queue.fair import REFUSALS_KEY
from settler_jobs.queue.pg.pool import pg_errors
from settler_jobs.queue.pg.rows import PgSql
from settler_jobs.records import LaneUsage, TenantUsage

# Per (lane, tenant): sum over the tenant's flows of ceil((F - clock) / step), where the
# clock is just below the waiting head's tag (or the lane's latest tag when none waits).
_BACKLOG: Final = """
WITH c AS (
  SELECT l.q,
         CASE WHEN h.p IS NOT NULL THEN GREATEST(COALESCE(fa.v, 0), h.p - 1)
              ELSE GREATEST(COALESCE(fa.v, 0), COALESCE(fa.fmaxw, 0)) END AS n
    FROM unnest(%(lanes)s::text[]) AS l(q)
    LEFT JOIN settler_fair_lane fa ON fa.queue = l.q
    LEFT JOIN LATERAL (
      SELECT priority AS p FROM job
       WHERE queue = l.q AND state = 'waiting' AND priority > 0
       ORDER BY priority, seq LIMIT 1
    ) h ON true
)
SELECT fl.queue, fl.tenant, SUM(CEIL((fl.f - c.n)::numeric / fl.w))::bigint AS n
  FROM settler_fair_flow fl JOIN c ON c.q = fl.queue
 WHERE fl.tenant = ANY(%(tenants)s::text[]) AND fl.w > 0 AND fl.f > c.n
 GROUP BY 1, 2
"""


class PgUsage(PgSql):
    """Per-tenant fair-share figures (exact running counts, quota-counted waiting ones)."""

    async def fair_usage(self, tenant_id: str) -> dict[str, int]:
        """Waiting jobs of a tenant per lane, as its backlog quota counts them."""
        async with pg_errors():
            backlog = await self._backlog([tenant_id])
        return {q: backlog.get((q, tenant_id), 0) for q in self._registry.queues()}

    async def tenant_usage(self, tenant_id: str, tier: Tier) -> TenantUsage:
        """Waiting, running and parked jobs and cap hits of one tenant, lane by lane."""
        return (await self.tenants_usage([(tenant_id, tier)]))[0]

    async def tenants_usage(self, tenants: Sequence[tuple[str, Tier]]) -> list[TenantUsage]:
        """`tenant_usage` for many tenants, in three queries (four when one is at its cap)."""
        queues = self._registry.queues()
        ids = [t for t, _ in tenants]
        async with pg_errors():
            backlog = await self._backlog(ids)
            active = await self._rows(
                "SELECT queue, data->>'tenantId' AS tenant, count(*) AS n FROM job"
                " WHERE queue = ANY(%s) AND state = 'active'"
                " AND data->>'tenantId' = ANY(%s) GROUP BY 1, 2",
                (queues, ids),
            )
            hits = await self._rows(
                "SELECT queue, key, n FROM settler_fair_counter"
                " WHERE queue = ANY(%s) AND key = ANY(%s)",
                (queues, [f"t:{t}" for t in ids]),
            )
        running = {(str(r["queue"]), str(r["tenant"])): int(r["n"]) for r in active}
        capped = {(str(r["queue"]), str(r["key"])[2:]): int(r["n"]) for r in hits}
        s = self._settings
        caps = {t: s.tenant_concurrency_caps.get(tier.value, 0) for t, tier in tenants}
        at_cap = sorted({t for (_, t), n in running.items() if 0 < caps.get(t, 0) <= n})
        held = await self._held(queues, at_cap) if at_cap else {}
        out = []
        for tenant_id, tier in tenants:
            lanes = [
                LaneUsage(
                    queue=q,
                    waiting=backlog.get((q, tenant_id), 0),
                    active=running.get((q, tenant_id), 0),
                    parked=(
                        held.get((q, tenant_id), 0)
                        if 0 < caps[tenant_id] <= running.get((q, tenant_id), 0)
                        else 0
                    ),
                    cap_hits=capped.get((q, tenant_id), 0),
                )
                for q in queues
            ]
            quota = s.tenant_backlog_quotas.get(tier.value, 0)
            cap = s.tenant_concurrency_caps.get(tier.value, 0)
            out.append(TenantUsage(tenant_id, tier.value, quota, cap, lanes))
        return out

    async def _held(self, queues: list[str], tenant_ids: list[str]) -> dict[tuple[str, str], int]:
        """Waiting jobs per (lane, tenant) of tenants at their cap somewhere."""
        async with pg_errors():
            rows = await self._rows(
                "SELECT queue, data->>'tenantId' AS tenant, count(*) AS n FROM job"
                " WHERE queue = ANY(%s) AND state = 'waiting'"
                " AND data->>'tenantId' = ANY(%s) GROUP BY 1, 2",
                (queues, tenant_ids),
            )
        return {(str(r["queue"]), str(r["tenant"])): int(r["n"]) for r in rows}

    async def _backlog(self, tenant_ids: list[str]) -> dict[tuple[str, str], int]:
        rows = await self._rows(_BACKLOG, {"lanes": self._registry.queues(), "tenants": tenant_ids})
        return {(str(r["queue"]), str(r["tenant"])): int(r["n"]) for r in rows}

    async def tier_totals(self) -> dict[str, dict[str, int]]:
        """Per tier: cap hits and quota refusals so far, and running jobs now (for metrics)."""
        queues = self._registry.queues()
        totals: dict[str, dict[str, int]] = {
            t.value: {"cap_hits": 0, "quota_refusals": 0, "active": 0} for t in Tier
        }
        async with pg_errors():
            counters = await self._rows(
                "SELECT queue = %s AS refusal, key, sum(n) AS n FROM settler_fair_counter"
                " WHERE queue = ANY(%s) OR queue = %s GROUP BY 1, 2",
                (REFUSALS_KEY, queues, REFUSALS_KEY),
            )
            active = await self._rows(
                "SELECT data->>'tenantTier' AS tier, count(*) AS n FROM job"
                " WHERE queue = ANY(%s) AND state = 'active' GROUP BY 1",
                (queues,),
            )
        for row in counters:
            key = str(row["key"])
            if key in totals:
                totals[key]["quota_refusals" if row["refusal"] else "cap_hits"] += int(row["n"])
        for row in active:
            if row["tier"] in totals:
                totals[str(row["tier"])]["active"] += int(row["n"])
        return totals
