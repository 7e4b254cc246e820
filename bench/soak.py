"""A long run at a steady rate: worker memory stays flat and no job stalls.

One WorkerRuntime process (bench/worker_proc.py, counting starts only) serves the no-op
kind while this process submits seed-shaped jobs with JobQueue.submit_bulk at a fixed
rate (open loop, one batch every 100 ms). Every `--sample` seconds it notes the worker's
RSS, Redis `used_memory` and the jobs submitted; at the end it waits for the queue to
empty and checks every job started exactly once, none failed and none stalled.

    python bench/soak.py --minutes 30 --rate 1000
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from pathlib import Path

import redis

import common
import workload
from settler_jobs.cli.serve import run
from settler_jobs.queue import JobQueue
from settler_jobs.redis_server import redis_client


def rss_mb(pid: int) -> float:
    """Resident memory of a process, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def produce(
    queue: JobQueue, rate: float, seconds: float, sample_s: float, sample: object
) -> int:
    """Submit `rate` jobs/s for `seconds`; call sample(submitted) every `sample_s`."""
    assert callable(sample)
    batch = max(1, round(rate / 10))
    start = time.perf_counter()
    submitted, next_sample, i = 0, sample_s, 0
    while (elapsed := time.perf_counter() - start) < seconds:
        await queue.submit_bulk([workload.submission(submitted + k) for k in range(batch)])
        submitted += batch
        i += 1
        if elapsed >= next_sample:
            sample(submitted)
            next_sample += sample_s
        await asyncio.sleep(max(0.0, start + i * batch / rate - time.perf_counter()))
    return submitted


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    common.add_redis_args(p)
    p.add_argument("--minutes", type=float, default=30, help="run length (default 30)")
    p.add_argument("--rate", type=float, default=1000, help="jobs per second (default 1000)")
    p.add_argument("--concurrency", type=int, default=50, help="worker slots (default 50)")
    p.add_argument("--sample", type=float, default=60, help="seconds between samples")
    args = p.parse_args()
    with common.redis_for(args) as url, common.scoped_prefix(url, "soak") as prefix:
        print(common.machine(url), flush=True)
        workers = workload.Workers(
            url, prefix, "ours", 1, args.concurrency, "--keep", "1000", "--count-only"
        )
        pid = workers.procs[0].pid
        samples: list[list[object]] = []
        t0 = time.monotonic()

        def sample(submitted: int) -> None:
            used = float(common.redis_info(url, "memory")["used_memory"]) / 2**20
            row = [f"{(time.monotonic() - t0) / 60:.1f}", submitted, rss_mb(pid), used]
            row.append(f"{os.getloadavg()[0]:.2f}")
            samples.append(row)
            print("sample:", row, flush=True)

        workers.go()
        with tempfile.TemporaryDirectory() as tmp:
            cfg = common.settings(url, prefix, Path(tmp), keep_completed_count=1000)

            async def submit_all() -> int:
                queue = JobQueue(redis_client(url, cfg), workload.noop_registry(10), cfg)
                try:
                    return await produce(queue, args.rate, args.minutes * 60, args.sample, sample)
                finally:
                    await queue.close()

            total = run(submit_all())
        client = redis.Redis.from_url(url)
        lane = f"{prefix}:{workload.KIND}"
        deadline = time.monotonic() + 120
        while sum(int(client.llen(f"{lane}:{s}")) for s in ("wait", "active")) + int(
            client.zcard(f"{lane}:prioritized")
        ):
            if time.monotonic() > deadline:
                raise RuntimeError("the queue did not empty")
            time.sleep(0.1)
        failed = int(client.zcard(f"{lane}:failed"))
        client.close()
        [report] = workers.stop()
    common.table(
        f"Soak: {args.rate:g} jobs/s for {args.minutes:g} min, {args.concurrency} slots",
        ["minute", "jobs submitted", "worker RSS MB", "Redis used_memory MB", "load"],
        samples,
    )
    print(
        f"\nsubmitted {total:,}, started {report['starts']:,}, failed {failed}, "
        f"stalled {report['stalled']}, worker CPU {report['cpu_s']:.0f} s "
        f"({report['cpu_s'] / max(total, 1) * 1e6:.0f} µs/job)"
    )


if __name__ == "__main__":
    main()
