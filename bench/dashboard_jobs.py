"""Dashboard job listing at scale: `JobQueue.browse` pages over N failed jobs.

Seeds N failed jobs in one lane (copies of a real job's hash, ids in the `failed` sorted
set; 1 in 10,000 belongs to tenant `rare`, the rest to `common`), then times pages:
the first page, a page deep in (cursor at offset N/2), the first page of "any state"
(every lane and state key walked in order), and a tenant-filtered page (bounded scan
of at most 2,000 ids). `list_jobs` (the API's list) is timed on the first page for
comparison.

    python bench/dashboard_jobs.py                 # 1,000,000 jobs, private redis-server
    python bench/dashboard_jobs.py --jobs 100000
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import common
from settler_jobs.context import JobContext
from settler_jobs.domain import JobState, Tier
from settler_jobs.kinds import JobKind, Registry
from settler_jobs.queue import JobQueue
from settler_jobs.records import Submission
from settler_jobs.redis_server import redis_client
from settler_jobs.registry import default_registry

CHUNK = 5000


async def _echo(payload: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    return payload


async def seed(queue: JobQueue, kind: str, jobs: int) -> None:
    sub = await queue.submit(Submission(kind, {"n": 0}, "common", Tier.STARTER, delay_s=3600))
    lane = sub.job.queue
    client = queue.client
    prefix = queue.key_prefix
    raw = await client.hgetall(f"{prefix}:{lane}:{sub.job.id}")
    template = {str(k): str(v) for k, v in raw.items()}
    await queue.cancel(sub.job.id)
    base = int(time.time() * 1000) - jobs
    for start in range(0, jobs, CHUNK):
        pipe = client.pipeline(transaction=False)
        scores: dict[str, int] = {}
        for n in range(start, min(start + CHUNK, jobs)):
            job_id = f"bench-{n:08d}"
            tenant = "rare" if n % 10_000 == 0 else "common"
            fields: dict[Any, Any] = {
                **template,
                "data": template["data"].replace('"common"', f'"{tenant}"'),
                "timestamp": base + n,
                "finishedOn": base + n,
                "processedOn": base + n,
                "failedReason": "boom",
                "attemptsMade": 1,
            }
            pipe.hset(f"{prefix}:{lane}:{job_id}", mapping=fields)
            scores[job_id] = base + n
        pipe.zadd(f"{prefix}:{lane}:failed", scores)
        await pipe.execute()


async def timed(call: Callable[[], Awaitable[Any]], runs: int) -> tuple[float, Any]:
    samples = []
    result = None
    for _ in range(runs):
        start = time.perf_counter()
        result = await call()
        samples.append((time.perf_counter() - start) * 1000)
    return common.median(samples), result


async def main(args: argparse.Namespace) -> None:
    with (
        common.redis_for(args) as url,
        common.scoped_prefix(url, "dash") as prefix,
        tempfile.TemporaryDirectory() as tmp,
    ):
        settings = common.settings(url, prefix, Path(tmp))
        registry = Registry([*default_registry(), JobKind("bench-echo", _echo)])
        kind = "bench-echo"
        queue = JobQueue(redis_client(url, settings), registry, settings)
        started = time.perf_counter()
        await seed(queue, kind, args.jobs)
        seeded_s = time.perf_counter() - started
        deep = f"{_segment(queue, kind)}:{args.jobs // 2}"
        cases: list[tuple[str, Callable[[], Awaitable[Any]]]] = [
            ("browse failed, first page", lambda: queue.browse(state=JobState.FAILED)),
            (
                f"browse failed, page at offset {args.jobs // 2:,}",
                lambda: queue.browse(state=JobState.FAILED, cursor=deep),
            ),
            ("browse any state, first page", lambda: queue.browse()),
            (
                "browse tenant 'rare' (1 in 10,000), first page",
                lambda: queue.browse(state=JobState.FAILED, tenant_id="rare"),
            ),
            (
                "list_jobs failed (API list), first page",
                lambda: queue.list_jobs(state=JobState.FAILED),
            ),
        ]
        rows = []
        for name, call in cases:
            ms, result = await timed(call, args.runs)
            found = len(result.jobs) if hasattr(result, "jobs") else len(result)
            scanned = result.scanned if hasattr(result, "scanned") else "-"
            rows.append((name, round(ms, 1), found, scanned))
        print(common.machine(url))
        print(f"\nseeded {args.jobs:,} failed jobs in {seeded_s:.0f} s")
        common.table(
            f"Dashboard job pages over {args.jobs:,} jobs (median of {args.runs} runs)",
            ["page", "ms", "jobs shown", "ids read"],
            rows,
        )
        await queue.close()


def _segment(queue: JobQueue, kind: str) -> int:
    """Index of the kind's normal lane in the failed-state segments."""
    segments = [q for k in queue.registry for q in (k.queue, k.express_queue)]
    return segments.index(queue.registry.get(kind).queue)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=5)
    common.add_redis_args(parser)
    asyncio.run(main(parser.parse_args()))
