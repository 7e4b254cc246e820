"""Fair-share metrics by tier (never by tenant): running jobs, quota refusals, cap hits."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import generate_latest

from settler_jobs.config import Settings
from settler_jobs.context import JobContext
from settler_jobs.domain import PriorityClass, Tier
from settler_jobs.errors import QuotaExceeded
from settler_jobs.kinds import JobKind, Registry
from settler_jobs.records import Submission
from tests.harness import system
from tests.helpers import eventually


async def test_tier_gauges_show_running_jobs_refusals_and_cap_hits(settings: Settings) -> None:
    fair = settings.model_copy(
        update={
            "tenant_backlog_quotas": {"free": 2},
            "tenant_concurrency_caps": {"free": 1},
        }
    )
    release = asyncio.Event()

    async def handler(payload: dict[str, int], ctx: JobContext) -> None:
        await release.wait()

    registry = Registry([JobKind("held", handler, concurrency=3)])
    async with system(fair, registry, start=False) as sys_:
        queue = sys_.queue
        await queue.submit_bulk([Submission("held", {"i": i}, "f1", Tier.FREE) for i in range(2)])
        with pytest.raises(QuotaExceeded):
            await queue.submit(Submission("held", {"i": 2}, "f1", Tier.FREE))
        await queue.submit(Submission("held", {"i": 0}, "s1", Tier.SCALE))
        # Due after f1's second job: keeps it parked (others wait) while f2 runs.
        await queue.submit(Submission("held", {"i": 0}, "f2", Tier.FREE, PriorityClass.LOW))
        await sys_.runtime.start()

        async def scrape() -> str:
            return generate_latest(sys_.runtime.metrics.registry).decode()

        text = await eventually(
            scrape,
            lambda t: (
                'tenant_active_jobs{tier="free"} 2.0' in t
                and 'tenant_active_jobs{tier="scale"} 1.0' in t
            ),
            timeout_s=20,
        )
        assert 'tenant_quota_refusals{tier="free"} 1.0' in text
        assert 'tenant_cap_hits{tier="free"} 1.0' in text  # f1's second job was parked
        assert "f1" not in text and "s1" not in text  # bounded labels: no tenant ids
        usage = await queue.tenant_usage("f1", Tier.FREE)
        assert (usage.active, usage.lanes[0].parked, usage.cap_hits) == (1, 1, 1)
        release.set()
