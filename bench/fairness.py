"""Fair share between tenants: a late small tenant behind a huge backlog, and tier shares.

1. Starvation: tenant A (growth) submits N jobs (default 100,000) in bulks of 1,000 while
   one worker process (ours, concurrency 10) runs the no-op kind; 10 s after A started,
   tenant B (growth) submits 100 jobs in one bulk. Reported: B's submit-to-start
   latency (p50, p95, max) and A's waiting backlog when B submitted. Target p95 <= 5 s.
2. Shares: a free and a scale tenant each submit 20,000 NORMAL jobs, then the worker
   runs until 10,000 have completed; reported: each tenant's share of the first 10,000
   (by finish time). Weights 5 (free) and 50 (scale): expected 1 to 10.

Runs the code on PYTHONPATH, so the same script measures any checkout:

    python bench/fairness.py                       # N=100000, one round of each scenario
    python bench/fairness.py --jobs 20000 --skip-shares
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import common
import workload
from settler_jobs.cli.serve import run
from settler_jobs.domain import PriorityClass, Tier
from settler_jobs.queue import JobQueue
from settler_jobs.records import Submission
from settler_jobs.redis_server import redis_client

NO_QUOTAS: dict[str, Any] = {"tenant_backlog_quotas": {}}


def _sub(tenant: str, tier: Tier, i: int, **extra: Any) -> Submission:
    data = {**workload.seed_payload(i), **extra}
    return Submission(workload.KIND, data, tenant, tier, PriorityClass.NORMAL)


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def starvation(url: str, n: int, late: int, delay_s: float) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp, common.scoped_prefix(url, "fair") as prefix:
        cfg = common.settings(url, prefix, Path(tmp), **NO_QUOTAS)
        queue = JobQueue(redis_client(url, cfg), workload.noop_registry(10), cfg)
        workers = workload.Workers(url, prefix, "ours", 1, 10)
        workers.go()
        t0 = time.monotonic()
        backlog_at_b = 0.0

        async def tenant_a() -> None:
            for start in range(0, n, 1000):
                await queue.submit_bulk(
                    [_sub("tenant-a", Tier.GROWTH, i) for i in range(start, min(n, start + 1000))]
                )

        async def tenant_b() -> list[str]:
            nonlocal backlog_at_b
            await asyncio.sleep(max(0.0, t0 + delay_s - time.monotonic()))  # the scenario's 10 s
            [lane] = [c for c in await queue.counts() if c.queue == workload.KIND]
            backlog_at_b = lane.counts["waiting"]
            subs = [_sub("tenant-b", Tier.GROWTH, i, submittedAt=time.time()) for i in range(late)]
            return [s.job.id for s in await queue.submit_bulk(subs)]

        a_task = asyncio.ensure_future(tenant_a())
        b_ids = await tenant_b()
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            states = [(await queue.get(job_id)).state.value for job_id in b_ids[-20:]]
            pending = [s for s in states if s in ("waiting", "delayed")]
            if not pending:
                break
            await asyncio.sleep(0.25)
        await a_task
        [report] = workers.stop()
        await queue.close()
    lat = [float(x) for x in report["latencies"]]
    return {
        "b_started": len(lat),
        "a_waiting_when_b_submitted": backlog_at_b,
        "p50_s": statistics.median(lat),
        "p95_s": _pct(lat, 0.95),
        "max_s": max(lat),
    }


async def shares(url: str, each: int, first: int) -> dict[str, int]:
    with tempfile.TemporaryDirectory() as tmp, common.scoped_prefix(url, "share") as prefix:
        cfg = common.settings(url, prefix, Path(tmp), **NO_QUOTAS)
        queue = JobQueue(redis_client(url, cfg), workload.noop_registry(10), cfg)
        for tenant, tier in (("tenant-free", Tier.FREE), ("tenant-scale", Tier.SCALE)):
            for start in range(0, each, 1000):
                await queue.submit_bulk(
                    [_sub(tenant, tier, i) for i in range(start, min(each, start + 1000))]
                )
        workers = workload.Workers(url, prefix, "ours", 1, 10)
        workers.go()
        completed = f"{prefix}:{workload.KIND}:completed"
        while int(await queue.client.zcard(completed)) < first:
            await asyncio.sleep(0.2)
        workers.stop()
        ids = await queue.client.zrange(completed, 0, first - 1)
        pipe = queue.client.pipeline(transaction=False)
        for job_id in ids:
            pipe.hget(f"{prefix}:{workload.KIND}:{job_id!s}", "data")
        counts: dict[str, int] = {}
        for raw in await pipe.execute():
            tenant = "tenant-scale" if raw and '"tenant-scale"' in raw else "tenant-free"
            counts[tenant] = counts.get(tenant, 0) + 1
        await queue.close()
    return counts


async def main(args: argparse.Namespace, url: str) -> None:
    if not args.skip_starvation:
        for _ in range(args.rounds):
            result = await starvation(url, args.jobs, args.late, args.delay_s)
            print(
                f"starvation: A={args.jobs} growth, B={args.late} growth after {args.delay_s:g}s: "
                + ", ".join(
                    f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}"
                    for k, v in result.items()
                ),
                flush=True,
            )
    if not args.skip_shares:
        for _ in range(args.rounds):
            counts = await shares(url, args.each, args.first)
            free, scale = counts.get("tenant-free", 0), counts.get("tenant-scale", 0)
            print(
                f"shares of the first {args.first}: scale={scale} ({scale / args.first:.1%}), "
                f"free={free} ({free / args.first:.1%}), ratio={scale / max(free, 1):.1f}",
                flush=True,
            )


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    common.add_redis_args(p)
    p.add_argument("--jobs", type=int, default=100_000, help="tenant A's jobs")
    p.add_argument("--late", type=int, default=100, help="tenant B's jobs")
    p.add_argument("--delay-s", type=float, default=10.0, help="when B submits, after A starts")
    p.add_argument("--each", type=int, default=20_000, help="jobs per tenant (shares)")
    p.add_argument("--first", type=int, default=10_000, help="completed jobs counted (shares)")
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--skip-starvation", action="store_true")
    p.add_argument("--skip-shares", action="store_true")
    return p.parse_args()


if __name__ == "__main__":
    arguments = parse()
    with common.redis_for(arguments) as redis_url:
        run(main(arguments, redis_url))
