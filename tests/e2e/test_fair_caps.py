"""Tenant concurrency caps across two worker processes (real Redis, real `serve`)."""

from __future__ import annotations

import json

from settler_jobs.domain import JobState, PriorityClass, Tier
from settler_jobs.queue import JobQueue
from settler_jobs.records import Submission
from tests.e2e.fleet import Workers
from tests.e2e.slow_worker import KIND
from tests.helpers import eventually

CAPS = json.dumps({"free": 2, "starter": 0})


async def test_a_capped_tenant_never_exceeds_its_cap_while_others_wait(
    workers: Workers, job_queue: JobQueue
) -> None:
    # The capped tenant weighs twice the other (free CRITICAL 20, starter NORMAL 10): it
    # is due for most slots, and only its cap keeps it from taking them.
    capped = await job_queue.submit_bulk(
        [Submission(KIND, {"n": i}, "capped", Tier.FREE, PriorityClass.CRITICAL) for i in range(12)]
    )
    other = await job_queue.submit_bulk(
        [Submission(KIND, {"n": i}, "other", Tier.STARTER) for i in range(80)]
    )
    capped_ids = {s.job.id for s in capped}
    other_ids = {s.job.id for s in other}
    for _ in range(2):  # 2 processes x 4 slots
        workers.start("0.2", SETTLER_TENANT_CONCURRENCY_CAPS=CAPS)

    async def finished() -> int:
        return sum(1 for e, *_ in workers.events() if e == "done")

    await eventually(finished, lambda n: n == 92, timeout_s=60)
    running: set[str] = set()
    peak = 0
    last_capped_start = last_other_start = -1
    for index, (event, job_id, _, _) in enumerate(workers.events()):
        if job_id in capped_ids:
            if event == "start":
                running.add(job_id)
                last_capped_start = index
            else:
                running.discard(job_id)
            peak = max(peak, len(running))
        elif event == "start":
            last_other_start = index
    assert peak == 2  # the cap binds (and is used)
    assert last_other_start > last_capped_start  # the other tenant was waiting throughout
    assert {j for e, j, *_ in workers.events() if e == "done"} == capped_ids | other_ids
    usage = await job_queue.tenant_usage("capped", Tier.FREE)
    assert usage.cap_hits > 0 and usage.waiting == 0 and usage.active == 0
    for sub in capped:
        assert (await job_queue.get(sub.job.id)).state is JobState.COMPLETED
