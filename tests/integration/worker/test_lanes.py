"""The runtime's lanes on the lane loop: per-kind concurrency and the express lane."""

from __future__ import annotations

import asyncio
from typing import Any

from settler_jobs.config import Settings
from settler_jobs.context import JobContext
from settler_jobs.domain import JobState, Tier
from settler_jobs.kinds import JobKind, Registry
from settler_jobs.records import Submission
from tests.harness import system
from tests.helpers import eventually


class Gate:
    """Handlers that record their start and wait for their own release."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self.releases: dict[str, asyncio.Event] = {}

    async def handler(self, payload: dict[str, Any], ctx: JobContext) -> str:
        self.started.append(ctx.job_id)
        await self.releases.setdefault(ctx.job_id, asyncio.Event()).wait()
        return ctx.queue

    def release(self, job_id: str) -> None:
        self.releases.setdefault(job_id, asyncio.Event()).set()

    async def count(self) -> int:
        return len(self.started)


async def test_a_kind_never_runs_more_jobs_than_its_concurrency(settings: Settings) -> None:
    gate = Gate()
    async with system(settings, Registry([JobKind("capped", gate.handler, concurrency=3)])) as s:
        for n in range(6):
            await s.queue.submit(Submission("capped", {"n": n}, "t1", Tier.FREE))
        await eventually(gate.count, lambda n: n == 3)
        [counts] = [c for c in await s.queue.counts() if c.queue == "capped"]
        assert counts.counts["active"] == 3 and counts.counts["waiting"] == 3
        gate.release(gate.started[0])
        await eventually(gate.count, lambda n: n == 4)  # one slot freed, one more job
        for job_id in list(gate.started):
            gate.release(job_id)
        await eventually(gate.count, lambda n: n == 6)
        for job_id in gate.started[4:]:
            gate.release(job_id)


async def test_enterprise_jobs_start_while_every_shared_slot_is_busy(settings: Settings) -> None:
    gate = Gate()
    async with system(settings, Registry([JobKind("busy", gate.handler, concurrency=1)])) as s:
        shared = (await s.queue.submit(Submission("busy", {}, "t1", Tier.FREE))).job
        await eventually(gate.count, lambda n: n == 1)
        urgent = (await s.queue.submit(Submission("busy", {}, "t2", Tier.ENTERPRISE))).job
        await eventually(gate.count, lambda n: n == 2)
        assert gate.started == [shared.id, urgent.id]
        gate.release(urgent.id)
        done = await eventually(
            lambda: s.queue.get(urgent.id), lambda j: j.state is JobState.COMPLETED
        )
        assert done.result == "busy-express"
        assert (await s.queue.get(shared.id)).state is JobState.ACTIVE
        gate.release(shared.id)
