"""Fair-share settings: per-tier caps and quotas are validated and normalised."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from settler_jobs.config import Settings


def test_tier_names_are_normalised_and_pro_is_growth() -> None:
    s = Settings(tenant_concurrency_caps={"PRO": 3}, tenant_backlog_quotas={" Free ": 7})
    assert s.tenant_concurrency_caps == {"growth": 3}
    assert s.tenant_backlog_quotas == {"free": 7}


@pytest.mark.parametrize(
    "update",
    [
        {"tenant_concurrency_caps": {"free": -1}},
        {"tenant_backlog_quotas": {"platinum": 5}},
        {"fair_horizon": 2_000_000},  # with the rebase point, past BullMQ's 2,097,151
        {"fair_rebase_at": 10},
    ],
)
def test_bad_fair_settings_are_refused(update: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        Settings(**update)  # type: ignore[arg-type]


def test_defaults_keep_every_priority_inside_bullmqs_range() -> None:
    s = Settings()
    assert s.fair_share is True
    assert s.fair_rebase_at + s.fair_horizon + 200 <= 2_097_151
    assert s.tenant_concurrency_caps["enterprise"] == 0  # the express lane has its own slots
    assert s.tenant_backlog_quotas["free"] < s.tenant_backlog_quotas["scale"]
