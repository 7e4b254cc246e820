"""Where a worker's time goes: N no-op jobs under cProfile (in-process) or py-spy.

Pre-fills N jobs like bench/throughput.py, then runs one worker until all are
completed and prints the top functions by cumulative time. cProfile (default) runs the
worker in this process and inflates Python time ~2x; --py-spy samples an unmodified
worker process (bench/worker_proc.py) instead and needs `py-spy` on PATH.

    python bench/profile_worker.py                  # ours, 10,000 jobs, cProfile
    python bench/profile_worker.py --mode bare --py-spy
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import cProfile
import re
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import bullmq
import redis.asyncio

import common
import workload
from settler_jobs.cli.serve import run
from settler_jobs.storage.db import create_engine, session_factory
from settler_jobs.worker.runtime import WorkerRuntime


async def until_done(url: str, prefix: str, n: int) -> float:
    client = redis.asyncio.Redis.from_url(url)
    t0 = time.perf_counter()
    while await client.zcard(f"{prefix}:{workload.KIND}:completed") < n:
        await asyncio.sleep(0.01)
    await client.aclose()
    return time.perf_counter() - t0


async def bare_noop(job: Any, token: str) -> None:
    return None


async def in_process(url: str, prefix: str, args: argparse.Namespace) -> tuple[float, Any]:
    profiler = cProfile.Profile()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = common.settings(url, prefix, Path(tmp), keep_completed_count=args.jobs + 10)
        engine = create_engine(cfg.effective_database_url)
        registry = workload.noop_registry(args.concurrency)
        opts = {"connection": url, "prefix": prefix, "concurrency": args.concurrency}
        profiler.enable()
        if args.mode == "ours":
            runtime = WorkerRuntime(cfg, registry, url, session_factory(engine))
            await runtime.start()
        else:
            worker = bullmq.Worker(workload.KIND, bare_noop, {**opts, "autorun": False})
            running = asyncio.ensure_future(worker.run())
        seconds = await until_done(url, prefix, args.jobs)
        profiler.disable()
        if args.mode == "ours":
            await runtime.stop(grace_s=5)
        else:
            await worker.close()
            await asyncio.gather(running, return_exceptions=True)
        await engine.dispose()
    return seconds, profiler


def with_py_spy(url: str, prefix: str, args: argparse.Namespace) -> float:
    workers = workload.Workers(url, prefix, args.mode, 1, args.concurrency)
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "profile.txt"
        cmd = ["py-spy", "record", "-r", "250", "-f", "raw", "-o", str(raw), "--nonblocking"]
        spy = subprocess.Popen([*cmd, "--pid", str(workers.procs[0].pid)])
        time.sleep(1.0)
        workers.go()
        seconds = run(until_done(url, prefix, args.jobs))
        workers.stop()
        spy.wait(30)
        inclusive: collections.Counter[str] = collections.Counter()
        own: collections.Counter[str] = collections.Counter()
        total = 0
        for line in raw.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            # Function level: drop line numbers; an empty stack is time outside Python.
            frames = [re.sub(r":\d+\)$", ")", common.short(f)) for f in stack.split(";") if f]
            frames = frames or ["(no Python frame)"]
            total += int(count)
            own[frames[-1]] += int(count)
            for frame in set(frames):
                inclusive[frame] += int(count)
    table = [
        [frame, f"{100 * n / total:.1f}%", f"{100 * own[frame] / total:.1f}%"]
        for frame, n in inclusive.most_common(args.top)
    ]
    common.table(
        f"Top {args.top} by inclusive samples (py-spy, {total} samples)",
        ["function (file)", "inclusive", "own"],
        table,
    )
    return seconds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    common.add_redis_args(p)
    p.add_argument("--jobs", type=int, default=10_000, help="jobs (default 10000)")
    p.add_argument("--concurrency", type=int, default=10, help="slots (default 10)")
    p.add_argument("--mode", choices=("ours", "bare"), default="ours")
    p.add_argument("--py-spy", action="store_true", help="sample a worker process with py-spy")
    p.add_argument("--top", type=int, default=25, help="rows to print (default 25)")
    args = p.parse_args()
    with common.redis_for(args) as url, common.scoped_prefix(url, "profile") as prefix:
        print(common.machine(url))
        run(workload.prefill(url, prefix, args.mode, args.jobs, args.jobs + 10))
        if args.py_spy:
            seconds = with_py_spy(url, prefix, args)
        else:
            seconds, profiler = run(in_process(url, prefix, args))
            common.print_cprofile(profiler, args.top, seconds)
    print(
        f"\n{args.mode}: {args.jobs:,} jobs in {seconds:.1f} s ({args.jobs / seconds:,.0f} jobs/s)"
    )


if __name__ == "__main__":
    main()
