"""Per-tenant KPI snapshots: computed from the accounting and a backlog scan, cached in the
shared state.

Keys (TTL `kpi_cache_ttl_s`): `<prefix>:settler:cache:<tenant>:kpi-health` and
`<prefix>:settler:cache:<tenant>:recent-jobs`. `warm` fills them for many tenants
(one backlog scan for all); `kpi_snapshot` / `recent_jobs` serve from the cache and
compute on a miss.

Limits, stated plainly: completed/failed numbers come from `tenant_stats` (hour buckets,
5-minute slots for the last hour; up to one flush interval behind). Waiting, delayed and
active counts and the oldest waiting age come from a bounded scan of each lane
(`kpi_scan_per_lane` jobs per lane and state); when a lane holds more,
`backlogScan.truncated` is true and the per-tenant numbers are lower bounds.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any, Final

from settler_jobs.config import Settings
from settler_jobs.domain import validate_tenant_id
from settler_jobs.ports import QueueOps
from settler_jobs.records import BacklogScan, TenantBacklog
from settler_jobs.scheduling import SYSTEM_TENANT
from settler_jobs.shared_state import SharedState
from settler_jobs.tenants import stats as ts

MAX_TENANTS_PER_WARM: Final = 10_000
ACTIVE_WINDOW: Final = timedelta(days=1)
_EMPTY: Final = TenantBacklog({}, {}, {}, None)


def cache_key(prefix: str, tenant: str, name: str) -> str:
    return f"{prefix}:settler:cache:{tenant}:{name}"


def _rate(completed: int, failed: int) -> dict[str, Any]:
    total = completed + failed
    return {
        "completed": completed,
        "failed": failed,
        "rate": round(failed / total, 4) if total else None,
    }


def _sum_day(hashes: list[dict[str, str]]) -> dict[str, dict[str, int]]:
    per_outcome: dict[str, dict[str, int]] = {o: {} for o in ts.OUTCOMES}
    for fields in hashes:
        for name, value in fields.items():
            outcome, sep, kind = name.partition(":")
            if sep and outcome in per_outcome:
                per_outcome[outcome][kind] = per_outcome[outcome].get(kind, 0) + int(value)
    return per_outcome


def _last_hour(current: dict[str, str], previous: dict[str, str], now: datetime) -> dict[str, int]:
    """Totals per outcome over the last twelve 5-minute slots (this one included)."""
    slot = now.minute // ts.SLOT_MINUTES
    slots_per_hour = 60 // ts.SLOT_MINUTES
    totals = dict.fromkeys(ts.OUTCOMES, 0)
    for outcome in ts.OUTCOMES:
        for n in range(slots_per_hour):
            source = current if n <= slot else previous
            totals[outcome] += int(source.get(f"{outcome}@{n}", 0))
    return totals


async def _hour_hashes(
    state: SharedState, prefix: str, tenant: str, now: datetime
) -> list[dict[str, str]]:
    keys = [
        ts.stats_key(prefix, tenant, ts.hour_bucket(now - timedelta(hours=hours_ago)))
        for hours_ago in range(24)
    ]
    return await state.read_hashes(keys)


async def compute(
    ops: QueueOps,
    state: SharedState,
    tenant: str,
    scan: BacklogScan,
    per_lane: int,
    now: datetime,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The KPI snapshot and the recent-jobs list of one tenant."""
    hashes = await _hour_hashes(state, ops.key_prefix, tenant, now)
    day = _sum_day(hashes)
    hour = _last_hour(hashes[0], hashes[1], now)
    backlog = scan.tenants.get(tenant, _EMPTY)
    oldest = backlog.oldest_waiting_created_ms
    generated = now.isoformat(timespec="seconds")
    snapshot = {
        "tenantId": tenant,
        "generatedAt": generated,
        "jobs": {
            "waiting": backlog.waiting,
            "delayed": backlog.delayed,
            "active": backlog.active,
            "completedLastDay": day["completed"],
            "failedLastDay": day["failed"],
            "retriedLastDay": day["retried"],
            "cancelledLastDay": day["cancelled"],
        },
        "failureRate": {
            "lastHour": _rate(hour["completed"], hour["failed"]),
            "lastDay": _rate(sum(day["completed"].values()), sum(day["failed"].values())),
        },
        "oldestWaitingAgeS": (
            max(0.0, round(now.timestamp() - oldest / 1000, 3)) if oldest is not None else None
        ),
        "backlogScan": {"perLane": per_lane, "scanned": scan.scanned, "truncated": scan.truncated},
    }
    [raw] = await state.read_lists([ts.recent_key(ops.key_prefix, tenant)], -1)
    recent = {"tenantId": tenant, "generatedAt": generated, "jobs": [json.loads(r) for r in raw]}
    return snapshot, recent


async def active_tenants(ops: QueueOps, state: SharedState, now: datetime) -> list[str]:
    """Tenants with a finished job in the last day, the system tenant aside (older entries
    are trimmed)."""
    now_ms = int(now.timestamp() * 1000)
    members = await state.members_since(
        ts.tenants_key(ops.key_prefix),
        now_ms - int(ACTIVE_WINDOW.total_seconds() * 1000),
        MAX_TENANTS_PER_WARM,
        forget_upto=now_ms - ts.STATS_TTL_S * 1000,
    )
    return [m for m in members if m != SYSTEM_TENANT]


async def warm(
    ops: QueueOps,
    state: SharedState,
    settings: Settings,
    now: datetime,
    tenants: list[str] | None = None,
) -> dict[str, Any]:
    """Compute and cache the snapshots of `tenants` (default: the active ones)."""
    targets = (
        [validate_tenant_id(t) for t in tenants]
        if tenants is not None
        else await active_tenants(ops, state, now)
    )
    scan = await ops.tenant_backlog(per_lane=settings.kpi_scan_per_lane)
    ttl = settings.kpi_cache_ttl_s
    for tenant in targets:
        snapshot, recent = await compute(ops, state, tenant, scan, settings.kpi_scan_per_lane, now)
        for name, value in (("kpi-health", snapshot), ("recent-jobs", recent)):
            await state.put(cache_key(ops.key_prefix, tenant, name), json.dumps(value), ttl * 1000)
    return {
        "tenants": len(targets),
        "scanned": scan.scanned,
        "truncated": scan.truncated,
        "ttlS": ttl,
    }


async def _cached(
    ops: QueueOps, state: SharedState, settings: Settings, tenant: str, name: str, now: datetime
) -> dict[str, Any]:
    tenant = validate_tenant_id(tenant)
    key = cache_key(ops.key_prefix, tenant, name)
    raw = await state.get(key)
    if raw is None:
        await warm(ops, state, settings, now, [tenant])
        raw = await state.get(key)
    value: dict[str, Any] = json.loads(raw) if raw else {}
    return value


async def kpi_snapshot(
    ops: QueueOps, state: SharedState, settings: Settings, tenant: str, now: datetime
) -> dict[str, Any]:
    """The tenant's KPI snapshot: from the cache, computed (and cached) on a miss."""
    return await _cached(ops, state, settings, tenant, "kpi-health", now)


async def recent_jobs(
    ops: QueueOps, state: SharedState, settings: Settings, tenant: str, now: datetime
) -> dict[str, Any]:
    """The tenant's recent jobs: from the cache, computed (and cached) on a miss."""
    return await _cached(ops, state, settings, tenant, "recent-jobs", now)
