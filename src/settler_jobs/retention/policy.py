"""What retention keeps and for how long: the policy from the settings, one run's
parameters, and the per-tier cutoff condition for tenant data.

Tenant data is kept per tier (`retention_<tier>_days`); a row whose tier is missing or
unknown gets the LONGEST retention of all tiers, never the shortest.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

from sqlalchemy import ColumnElement, and_, or_
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import QueryableAttribute

from settler_jobs.config import Settings
from settler_jobs.domain import Tier
from settler_jobs.ports import QueueCleanup
from settler_jobs.storage.files import ObjectStore, object_store

_TIER_ALIASES: Final = {"pro": Tier.GROWTH}


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    """How long each kind of data is kept (days)."""

    tier_days: dict[Tier, int]
    dlq_resolved_days: int
    schedule_runs_days: int
    keep_completed_s: int
    keep_failed_s: int

    @classmethod
    def from_settings(cls, settings: Settings) -> RetentionPolicy:
        """The policy the settings describe."""
        return cls(
            tier_days={
                Tier.FREE: settings.retention_free_days,
                Tier.STARTER: settings.retention_starter_days,
                Tier.GROWTH: settings.retention_growth_days,
                Tier.SCALE: settings.retention_scale_days,
                Tier.ENTERPRISE: settings.retention_enterprise_days,
            },
            dlq_resolved_days=settings.retention_dlq_resolved_days,
            schedule_runs_days=settings.retention_schedule_runs_days,
            keep_completed_s=settings.keep_completed_s,
            keep_failed_s=settings.keep_failed_s,
        )

    @property
    def longest_days(self) -> int:
        """The longest tier retention: what rows of an unknown tier get."""
        return max(self.tier_days.values())

    def days_for_tier(self, tier: str | None) -> int:
        """Days kept for a stored tier value; missing or unknown tiers get the longest."""
        if tier is None:
            return self.longest_days
        name = tier.strip().lower()
        parsed = _TIER_ALIASES.get(name) or next((t for t in Tier if t.value == name), None)
        return self.tier_days.get(parsed, self.longest_days) if parsed else self.longest_days


@dataclass(frozen=True, slots=True)
class RetentionRun:
    """One retention run: when it counts from, what it may do, and its handles."""

    now: datetime
    policy: RetentionPolicy
    sessions: async_sessionmaker[AsyncSession]
    queue_ops: QueueCleanup | None
    dry_run: bool = False
    batch_size: int = 1000
    max_batches: int = 1000
    store: ObjectStore | None = None
    """Where export files live (expired ones are deleted with their records)."""

    def before_days(self, days: int) -> datetime:
        """The cutoff `days` before `now`."""
        return self.now - timedelta(days=days)


def retention_run(
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    queue_ops: QueueCleanup | None,
    now: datetime,
    *,
    dry_run: bool = False,
) -> RetentionRun:
    """A run configured from the settings."""
    return RetentionRun(
        now=now,
        policy=RetentionPolicy.from_settings(settings),
        sessions=sessions,
        queue_ops=queue_ops,
        dry_run=dry_run,
        batch_size=settings.retention_batch_size,
        max_batches=settings.retention_max_batches,
        store=object_store(settings),
    )


def tiered_before(
    tier: QueryableAttribute[Any], moment: QueryableAttribute[Any], run: RetentionRun
) -> ColumnElement[bool]:
    """Rows older than their tier's retention; unknown or missing tiers get the longest."""
    clauses = []
    for t in Tier:
        names = [t.value, *(alias for alias, target in _TIER_ALIASES.items() if target is t)]
        cutoff = run.before_days(run.policy.tier_days[t])
        clauses.append(and_(tier.in_(names), moment < cutoff))
    known = [t.value for t in Tier] + list(_TIER_ALIASES)
    longest = run.before_days(run.policy.longest_days)
    clauses.append(and_(or_(tier.is_(None), tier.not_in(known)), moment < longest))
    return or_(*clauses)
