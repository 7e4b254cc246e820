"""Submit-to-start latency at a steady submit rate, one WorkerRuntime in a subprocess.

This process submits seed-shaped jobs with JobQueue.submit on a fixed schedule (open
loop: a slow submit does not delay the next one). Each job carries its submit time
(`submittedAt`, taken just before the submit call); the worker's handler records
time.time() - submittedAt when it starts. Both run on this machine's clock.

    python bench/latency.py                         # 100 jobs/s for 30 s, 3 runs
    python bench/latency.py --rate 500 --seconds 10 --modes ours bare node
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

import redis

import common
import workload
from settler_jobs.cli.serve import run
from settler_jobs.queue import JobQueue
from settler_jobs.redis_server import redis_client


async def produce(queue: JobQueue, rate: float, seconds: float) -> list[float]:
    """Submit rate x seconds jobs on schedule; returns each submit call's duration."""
    durations: list[float] = []
    tasks: set[asyncio.Task[None]] = set()

    async def one(i: int) -> None:
        t0 = time.time()
        await queue.submit(workload.submission(i, submittedAt=t0))
        durations.append(time.time() - t0)

    start = time.perf_counter()
    for i in range(round(rate * seconds)):
        await asyncio.sleep(max(0.0, start + i / rate - time.perf_counter()))
        task = asyncio.create_task(one(i))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    await asyncio.gather(*tasks)
    return durations


def wait_completed(url: str, prefix: str, n: int, timeout_s: float = 60) -> None:
    client = redis.Redis.from_url(url)
    deadline = time.monotonic() + timeout_s
    try:
        while client.zcard(f"{prefix}:{workload.KIND}:completed") < n:
            if time.monotonic() > deadline:
                raise RuntimeError("jobs did not complete in time")
            time.sleep(0.05)
    finally:
        client.close()


def one_run(url: str, mode: str, args: argparse.Namespace) -> tuple[list[float], list[float]]:
    """(start latencies, submit durations) of one run, in seconds."""
    n = round(args.rate * args.seconds)
    with tempfile.TemporaryDirectory() as tmp, common.scoped_prefix(url, "latency") as prefix:
        cfg = common.settings(url, prefix, Path(tmp), keep_completed_count=n + 10)
        workers = workload.Workers(url, prefix, mode, 1, args.concurrency)
        workers.go()
        time.sleep(1.0)  # let the worker reach its blocking wait

        async def submit_all() -> list[float]:
            queue = JobQueue(redis_client(url, cfg), workload.noop_registry(10), cfg)
            try:
                return await produce(queue, args.rate, args.seconds)
            finally:
                await queue.close()

        durations = run(submit_all())
        wait_completed(url, prefix, n)
        latencies = workers.stop()[0]["latencies"]
    if len(latencies) != n:
        raise RuntimeError(f"{len(latencies)} latencies recorded for {n} jobs")
    return latencies, durations


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    common.add_redis_args(p)
    p.add_argument("--rate", type=float, default=100, help="jobs per second (default 100)")
    p.add_argument("--seconds", type=float, default=30, help="submit duration (default 30)")
    p.add_argument("--runs", type=int, default=3, help="interleaved rounds (default 3)")
    p.add_argument("--concurrency", type=int, default=10, help="worker slots (default 10)")
    p.add_argument("--modes", nargs="+", default=["ours"], choices=("ours", "bare", "node"))
    args = p.parse_args()
    results: dict[str, list[tuple[list[float], list[float]]]] = {m: [] for m in args.modes}
    with common.redis_for(args) as url:
        print(common.machine(url))
        for rnd in range(args.runs):
            for mode in args.modes:
                lat, dur = one_run(url, mode, args)
                results[mode].append((lat, dur))
                print(
                    f"round {rnd + 1}: {mode}: p50 {common.percentile(lat, 50) * 1e3:.2f} ms, "
                    f"p99 {common.percentile(lat, 99) * 1e3:.2f} ms",
                    flush=True,
                )
    rows = []
    for mode, runs in results.items():
        for label, pick in (("submit -> start", 0), ("submit() call", 1)):
            series = [r[pick] for r in runs]
            row: list[object] = [mode, label]
            for pct in (50, 90, 99, 100):
                row.append(common.median([common.percentile(s, pct) * 1e3 for s in series]))
            row.append(", ".join(f"{common.percentile(s, 99) * 1e3:.2f}" for s in series))
            rows.append(row)
    headers = ["worker", "measure", "p50 ms", "p90 ms", "p99 ms", "max ms", "p99 per run"]
    title = f"Latency at {args.rate:g} jobs/s for {args.seconds:g} s (median of {args.runs} runs)"
    common.table(title, headers, rows)


if __name__ == "__main__":
    main()
