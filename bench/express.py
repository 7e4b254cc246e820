"""Enterprise express lane under a full shared lane: submit-to-start latency.

The shared lane of the kind is filled with N waiting jobs (submit_bulk, batches of 250).
A WorkerRuntime in a subprocess serves both lanes; with --shared busy (default) its
shared-lane slots are all held by jobs that block until the end, with --shared running
they run no-op jobs as fast as they can. Then this process submits enterprise jobs one
at a time (JobQueue.submit, one every --interval seconds) and the handler records the
time from just before the submit call to its own start. Rounds reuse the one fill.

    python bench/express.py                       # 100,000 waiting, 3 x 200 enterprise jobs
    python bench/express.py --shared running
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

import common
import workload
from settler_jobs.cli.serve import run
from settler_jobs.domain import Tier
from settler_jobs.queue import JobQueue
from settler_jobs.redis_server import redis_client


async def submit_express(queue: JobQueue, count: int, interval: float, base: int) -> list[float]:
    """Submit `count` enterprise jobs one at a time; returns each submit call's duration."""
    durations = []
    for i in range(base, base + count):
        t0 = time.time()
        await queue.submit(workload.submission(i, Tier.ENTERPRISE, submittedAt=t0))
        durations.append(time.time() - t0)
        await asyncio.sleep(interval)
    return durations


async def waiting(queue: JobQueue) -> dict[str, int]:
    return {c.queue: c.counts["waiting"] for c in await queue.counts()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    common.add_redis_args(p)
    p.add_argument("--waiting", type=int, default=100_000, help="shared-lane jobs (100000)")
    p.add_argument("--jobs", type=int, default=200, help="enterprise jobs per round (200)")
    p.add_argument("--runs", type=int, default=3, help="rounds (default 3)")
    p.add_argument("--interval", type=float, default=0.02, help="pause between submits (s)")
    p.add_argument("--concurrency", type=int, default=10, help="shared-lane slots (default 10)")
    p.add_argument("--shared", choices=("busy", "running"), default="busy")
    args = p.parse_args()
    with (
        common.redis_for(args) as url,
        tempfile.TemporaryDirectory() as tmp,
        common.scoped_prefix(url, "express") as prefix,
    ):
        print(common.machine(url))
        cfg = common.settings(url, prefix, Path(tmp))

        async def fill() -> dict[str, int]:
            queue = JobQueue(redis_client(url, cfg), workload.noop_registry(10), cfg)
            await workload.fill(queue, args.waiting)
            counts = await waiting(queue)
            await queue.close()
            return counts

        t0 = time.perf_counter()
        before = run(fill())
        print(f"filled {before} in {time.perf_counter() - t0:.0f} s", flush=True)
        hold = ["--hold"] if args.shared == "busy" else []
        workers = workload.Workers(url, prefix, "ours", 1, args.concurrency, *hold)
        workers.go()
        time.sleep(1.0)

        async def measure() -> tuple[list[float], dict[str, int]]:
            queue = JobQueue(redis_client(url, cfg), workload.noop_registry(10), cfg)
            durations = []
            for rnd in range(args.runs):
                durations.append(
                    await submit_express(queue, args.jobs, args.interval, rnd * args.jobs)
                )
                print(f"round {rnd + 1} submitted", flush=True)
            await asyncio.sleep(1.0)
            counts = await waiting(queue)
            await queue.close()
            return [d for ds in durations for d in ds], counts

        durations, after = run(measure())
        latencies = workers.stop()[0]["express"]
    print(f"waiting after: {after}")
    if len(latencies) != args.jobs * args.runs:
        raise SystemExit(f"only {len(latencies)} of {args.jobs * args.runs} express jobs started")
    rows = []
    p99s: list[float] = []
    for label, values in (("submit -> start", latencies), ("submit() call", durations)):
        per_run = [values[r * args.jobs : (r + 1) * args.jobs] for r in range(args.runs)]
        p99s = p99s or [common.percentile(v, 99) * 1e3 for v in per_run]
        row: list[object] = [label]
        for pct in (50, 99, 100):
            row.append(common.median([common.percentile(v, pct) * 1e3 for v in per_run]))
        row.append(", ".join(f"{common.percentile(v, 99) * 1e3:.1f}" for v in per_run))
        rows.append(row)
    p99 = common.median(p99s)
    title = (
        f"Express lane: {args.jobs} enterprise jobs x {args.runs} rounds, "
        f"{before.get(workload.KIND, 0):,} waiting in the shared lane ({args.shared})"
    )
    common.table(title, ["measure", "p50 ms", "p99 ms", "max ms", "p99 per round"], rows)
    print(f"\ntarget p99 < 50 ms: {'met' if p99 < 50 else 'NOT met'} (median p99 {p99:.1f} ms)")


if __name__ == "__main__":
    main()
