"""Submit throughput of JobQueue: single submits (sequential, and from 50 tasks) and bulk.

Each configuration submits N seed-shaped jobs (a ~200-byte reconciliation request) of
one kind into a fresh key prefix; configurations run interleaved, the table gives
medians. Client CPU is this process's; Redis CPU comes from INFO cpu.

    python bench/submit.py                 # N=5000 per configuration, 3 rounds
    python bench/submit.py --profile 1000  # cProfile of one submit_bulk of 1000 jobs
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import common
import workload
from settler_jobs.cli.serve import run
from settler_jobs.queue import JobQueue
from settler_jobs.redis_server import redis_client

Method = Callable[[JobQueue, int], Awaitable[None]]


async def sequential(queue: JobQueue, n: int) -> None:
    for i in range(n):
        await queue.submit(workload.submission(i))


async def concurrent(queue: JobQueue, n: int, tasks: int = 50) -> None:
    async def task(first: int) -> None:
        for i in range(first, n, tasks):
            await queue.submit(workload.submission(i))

    await asyncio.gather(*(task(t) for t in range(tasks)))


def bulk(size: int) -> Method:
    async def method(queue: JobQueue, n: int) -> None:
        for start in range(0, n, size):
            await queue.submit_bulk(
                [workload.submission(i) for i in range(start, min(n, start + size))]
            )

    return method


CONFIGS: dict[str, Method] = {
    "submit, sequential": sequential,
    "submit, 50 tasks": concurrent,
    "submit_bulk, batches of 100": bulk(100),
    "submit_bulk, batches of 1000": bulk(1000),
}


async def measure(url: str, method: Method, n: int) -> tuple[float, float, float]:
    """(seconds, client CPU s, Redis CPU s) for submitting n jobs."""
    with tempfile.TemporaryDirectory() as tmp, common.scoped_prefix(url, "submit") as prefix:
        cfg = common.settings(url, prefix, Path(tmp))
        queue = JobQueue(redis_client(url, cfg), workload.noop_registry(10), cfg)
        await queue.submit(workload.submission(-1))  # connect and load the scripts
        cpu0, redis0, t0 = time.process_time(), common.redis_cpu_s(url), time.perf_counter()
        await method(queue, n)
        seconds = time.perf_counter() - t0
        cpu, redis_cpu = time.process_time() - cpu0, common.redis_cpu_s(url) - redis0
        counts = await queue.counts()
        await queue.close()
    waiting = sum(c.counts["waiting"] for c in counts)
    if waiting != n + 1:
        raise RuntimeError(f"expected {n + 1} waiting jobs, found {waiting}")
    return seconds, cpu, redis_cpu


async def main(args: argparse.Namespace, url: str) -> None:
    results: dict[str, list[tuple[float, float, float]]] = {name: [] for name in CONFIGS}
    for rnd in range(args.runs):
        for name, method in CONFIGS.items():
            result = await measure(url, method, args.jobs)
            results[name].append(result)
            print(f"round {rnd + 1}: {name}: {args.jobs / result[0]:,.0f} jobs/s", flush=True)
    rows = [
        [
            name,
            ", ".join(f"{args.jobs / s:,.0f}" for s, _, _ in runs),
            common.median([args.jobs / s for s, _, _ in runs]),
            common.median([cpu / args.jobs * 1e6 for _, cpu, _ in runs]),
            common.median([r / args.jobs * 1e6 for _, _, r in runs]),
        ]
        for name, runs in results.items()
    ]
    headers = ["method", "runs (jobs/s)", "median jobs/s", "client CPU µs/job"]
    common.table(
        f"Submit throughput, {args.jobs:,} jobs per run", [*headers, "Redis CPU µs/job"], rows
    )


async def profile(url: str, size: int, top: int) -> None:
    """One submit_bulk(size) under cProfile: where a bulk submit spends its time."""
    with tempfile.TemporaryDirectory() as tmp, common.scoped_prefix(url, "submit") as prefix:
        cfg = common.settings(url, prefix, Path(tmp))
        queue = JobQueue(redis_client(url, cfg), workload.noop_registry(10), cfg)
        await queue.submit(workload.submission(-1))
        subs = [workload.submission(i) for i in range(size)]
        profiler = cProfile.Profile()
        t0 = time.perf_counter()
        profiler.enable()
        await queue.submit_bulk(subs)
        profiler.disable()
        wall = time.perf_counter() - t0
        await queue.close()
    common.print_cprofile(profiler, top, wall)
    print(f"\nsubmit_bulk of {size:,} jobs: {wall:.2f} s under the profiler")


def cli() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    common.add_redis_args(p)
    p.add_argument("--jobs", type=int, default=5000, help="jobs per configuration and run")
    p.add_argument("--runs", type=int, default=3, help="interleaved rounds (default 3)")
    p.add_argument("--profile", type=int, metavar="SIZE", help="only profile one submit_bulk")
    args = p.parse_args()
    with common.redis_for(args) as url:
        print(common.machine(url))
        run(profile(url, args.profile, 25) if args.profile else main(args, url))


if __name__ == "__main__":
    cli()
