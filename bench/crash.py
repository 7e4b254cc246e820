"""kill -9 of a worker holding 10,000 jobs in flight: every job completes, and the jobs
run twice are at most the ones that were in flight.

Pre-fills N seed-shaped jobs, starts worker A (one LaneWorker lane, 10,000 slots, each
job held `--hold` seconds) and SIGKILLs it once 10,000 jobs are active and as many have
completed. Then worker B
(100 slots, no hold) recovers: the stalled check hands A's jobs back once their locks
expire. Every start is journaled ("<job id>" per line, one file per worker), so the
jobs run twice are counted exactly. Locks last 5 s and the stalled check runs every 2 s
to keep the run short (defaults are 30 s each).

    python bench/crash.py                      # N=40,000, A holds each job 2 s
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import redis

import common
import workload
from settler_jobs.cli.serve import run
from settler_jobs.queue import ActiveJob, JobQueue, LaneWorker
from settler_jobs.records import JobRecord
from settler_jobs.redis_server import redis_client

LOCKS = {"lock_duration_ms": 5000, "stalled_interval_ms": 2000, "max_stalled_count": 1}


async def serve(args: argparse.Namespace) -> None:
    """Worker mode: one lane on the no-op queue, journaling every start."""
    cfg = common.settings(args.redis_url, args.prefix, Path(args.dir), **LOCKS)
    journal = Path(args.journal).open("a", buffering=1, encoding="utf-8")  # noqa: SIM115

    async def process(job: ActiveJob) -> None:
        journal.write(f"{job.id}\n")  # line-buffered: written before a kill -9
        if args.hold:
            await asyncio.sleep(args.hold)  # the job's work: it is in flight meanwhile

    async def dead(record: JobRecord) -> None:
        print(f"dead letter {record.id}", file=sys.stderr)

    client = redis_client(args.redis_url, cfg, patient=True)
    lane = LaneWorker(
        workload.KIND,
        workload.KIND,
        process,
        concurrency=args.slots,
        client=client,
        settings=cfg,
        on_dead=dead,
    )
    lane.start()
    await asyncio.Event().wait()  # until killed


def worker(url: str, prefix: str, tmp: str, name: str, slots: int, hold: float) -> Any:
    cmd = [sys.executable, __file__, "--serve", "--redis-url", url, "--prefix", prefix]
    cmd += ["--dir", tmp, "--journal", str(Path(tmp) / f"{name}.log")]
    cmd += ["--slots", str(slots), "--hold", str(hold)]
    return subprocess.Popen(cmd)


def wait_for(probe: Any, what: str, timeout_s: float) -> float:
    """Poll until `probe()` is true; seconds waited."""
    t0 = time.monotonic()
    while not probe():
        if time.monotonic() - t0 > timeout_s:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.05)
    return time.monotonic() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    common.add_redis_args(p)
    p.add_argument("--jobs", type=int, default=40_000)
    p.add_argument("--inflight", type=int, default=10_000, help="slots of worker A")
    p.add_argument("--hold", type=float, default=2.0, help="seconds A holds each job")
    p.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--prefix", help=argparse.SUPPRESS)
    p.add_argument("--dir", help=argparse.SUPPRESS)
    p.add_argument("--journal", help=argparse.SUPPRESS)
    p.add_argument("--slots", type=int, default=100, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.serve:
        run(serve(args))
        return
    with (
        common.redis_for(args) as url,
        common.scoped_prefix(url, "crash") as prefix,
        tempfile.TemporaryDirectory() as tmp,
    ):
        print(common.machine(url), flush=True)
        cfg = common.settings(url, prefix, Path(tmp), keep_completed_count=args.jobs + 10)

        async def fill() -> None:
            queue = JobQueue(redis_client(url, cfg), workload.noop_registry(10), cfg)
            await workload.fill(queue, args.jobs)
            await queue.close()

        run(fill())
        client = redis.Redis.from_url(url)
        lane = f"{prefix}:{workload.KIND}"
        a = worker(url, prefix, tmp, "a", args.inflight, args.hold)
        # A full house, after a first wave has completed (those must not run again).
        took = wait_for(
            lambda: (
                client.llen(f"{lane}:active") >= args.inflight
                and client.zcard(f"{lane}:completed") >= args.inflight
            ),
            "A",
            120,
        )
        os.kill(a.pid, signal.SIGKILL)
        a.wait()
        in_flight = int(client.llen(f"{lane}:active"))
        done_by_a = int(client.zcard(f"{lane}:completed"))
        print(
            f"A reached {args.inflight:,} in flight after {took:.1f} s; killed with "
            f"{in_flight:,} active, {done_by_a:,} completed",
            flush=True,
        )
        b = worker(url, prefix, tmp, "b", 100, 0)
        try:
            total = args.jobs
            recovery = wait_for(lambda: client.zcard(f"{lane}:completed") >= total, "recovery", 600)
        finally:
            b.kill()
            b.wait()
        failed = int(client.zcard(f"{lane}:failed"))
        client.close()
        starts_a = Counter(Path(tmp, "a.log").read_text().split())
        starts_b = Counter(Path(tmp, "b.log").read_text().split())
    twice = sum(1 for job_id in starts_a if job_id in starts_b)
    more = sum(1 for c in (starts_a + starts_b).values() if c > 2)
    headers = ["jobs", "in flight at kill", "completed by A", "started by A", "started by B"]
    headers += ["run twice", "run > 2 times", "completed", "failed", "recovery s"]
    row: list[object] = [args.jobs, in_flight, done_by_a, len(starts_a), len(starts_b)]
    row += [twice, more, total, failed, f"{recovery:.1f}"]
    common.table("kill -9 of a worker with jobs in flight", headers, [row])
    ok = twice <= in_flight and more == 0 and failed == 0
    print(f"\nrun twice ({twice:,}) <= in flight at kill ({in_flight:,}): {ok}")


if __name__ == "__main__":
    main()
