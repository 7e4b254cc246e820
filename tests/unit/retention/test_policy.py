"""Retention policy rules: per-tier days, and the longest retention for unknown tiers."""

from __future__ import annotations

import pytest

from settler_jobs.config import Settings
from settler_jobs.domain import Tier
from settler_jobs.retention.targets import RetentionPolicy


def _policy(**days: int) -> RetentionPolicy:
    tier_days = {Tier(name): value for name, value in days.items()}
    return RetentionPolicy(tier_days, 30, 30, 86_400, 86_400)


@pytest.mark.parametrize(
    ("tier", "days"),
    [
        ("free", 7),
        ("starter", 30),
        ("growth", 90),
        ("pro", 90),
        ("GROWTH", 90),
        ("scale", 180),
        ("enterprise", 60),
        # Unknown or missing tiers get the longest retention of all: 180 here, which is
        # not enterprise's, so "longest" cannot be mistaken for "enterprise".
        ("gold", 180),
        ("", 180),
        (None, 180),
    ],
)
def test_days_per_tier_and_the_longest_for_unknown_tiers(tier: str | None, days: int) -> None:
    policy = _policy(free=7, starter=30, growth=90, scale=180, enterprise=60)
    assert policy.days_for_tier(tier) == days


def test_unknown_tier_never_gets_the_shortest_retention() -> None:
    policy = _policy(free=365, starter=1, growth=2, scale=3, enterprise=4)
    assert policy.days_for_tier("platinum") == 365
    assert policy.longest_days == 365


def test_policy_from_settings() -> None:
    settings = Settings(retention_free_days=3, retention_enterprise_days=400)
    policy = RetentionPolicy.from_settings(settings)
    assert policy.tier_days[Tier.FREE] == 3
    assert policy.days_for_tier("unknown") == 400
    assert policy.keep_completed_s == settings.keep_completed_s


@pytest.mark.parametrize("pattern", ["nonsense", "61 * * * *", "* * *"])
def test_invalid_cron_settings_are_refused(pattern: str) -> None:
    with pytest.raises(ValueError, match="invalid cron pattern"):
        Settings(schedule_retention_cron=pattern)


def test_an_empty_cron_disables_a_schedule() -> None:
    assert Settings(schedule_cache_warm_cron="  ").schedule_cache_warm_cron == ""
