"""A benchmark worker process: our `WorkerRuntime`, our bare `LaneWorker` (mode `lane`) or
a stock `bullmq.Worker`, on one kind.

Protocol on stdin/stdout, so start-up time is never timed: the process imports and
builds everything, prints `ready`, waits for a `go` line, runs, and on a `stop` line
(or EOF) shuts down and prints one JSON line: its CPU seconds between go and stop, the
submit-to-start latency of every job it started whose data has `submittedAt` (our
enterprise jobs listed apart), how many jobs it started and how many it saw stalled.
With --hold, our shared-lane jobs block until stop.

    python bench/worker_proc.py --mode ours --redis-url redis://... --prefix bench-x
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import bullmq
from sqlalchemy.orm import configure_mappers

from common import settings
from settler_jobs.cli.serve import run
from settler_jobs.context import JobContext
from settler_jobs.domain import Tier
from settler_jobs.kinds import JobKind, Registry
from settler_jobs.queue import ActiveJob, LaneWorker
from settler_jobs.records import JobRecord
from settler_jobs.redis_server import redis_client
from settler_jobs.storage.db import create_engine, session_factory
from settler_jobs.storage.migrate import upgrade_async
from settler_jobs.worker.runtime import WorkerRuntime
from workload import KIND


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Recorder:
    """Start - submit time of each job whose data carries `submittedAt` (epoch seconds).

    With `count_only`, only the number of starts is kept (long runs: flat memory).
    """

    def __init__(self, hold: bool, count_only: bool = False) -> None:
        self.latencies: list[float] = []
        self.express: list[float] = []
        self.hold = hold
        self.count_only = count_only
        self.starts = 0
        self.release = asyncio.Event()

    def note(self, data: Any, express: bool = False) -> None:
        self.starts += 1
        submitted = data.get("submittedAt") if isinstance(data, dict) else None
        if isinstance(submitted, float | int) and not self.count_only:
            (self.express if express else self.latencies).append(time.time() - submitted)

    async def handler(self, payload: Any, ctx: JobContext) -> None:
        express = ctx.tier is Tier.ENTERPRISE
        self.note(payload, express)
        if self.hold and not express:
            await self.release.wait()


class StalledCounter(logging.Handler):
    """Counts the job ids the lane loop reports as stalled (moved back or failed)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.jobs = 0

    def emit(self, record: logging.LogRecord) -> None:
        if record.msg == "lane.stalled":
            self.jobs += len(record.__dict__.get("jobs") or [])


async def _line() -> str:
    line: str = await asyncio.to_thread(sys.stdin.readline)
    return line.strip()


async def main(args: argparse.Namespace) -> None:
    recorder = Recorder(args.hold, args.count_only)
    stalled = StalledCounter()
    logging.getLogger("settler_jobs.queue.lane_loop").addHandler(stalled)
    tmp = tempfile.TemporaryDirectory(prefix="settler-bench-")
    cfg = settings(args.redis_url, args.prefix, Path(tmp.name), keep_completed_count=args.keep)
    if args.mode == "ours":
        # Migrated as a deployment's database is, so the background loops (alerts probe,
        # schedules) do their real work rather than fail on missing tables every cycle.
        await upgrade_async(cfg.effective_database_url)
        configure_mappers()  # once per process, at its first query otherwise: start-up work
        kind = JobKind(KIND, recorder.handler, concurrency=args.concurrency)
        engine = create_engine(cfg.effective_database_url)
        runtime = WorkerRuntime(cfg, Registry([kind]), args.redis_url, session_factory(engine))
    elif args.mode == "lane":
        # The adapter alone: one LaneWorker, no WorkerRuntime (envelope, metrics, timeouts).
        async def note(active: ActiveJob) -> None:
            recorder.note(active.data)

        async def dead(record: JobRecord) -> None:
            return None

        client = redis_client(args.redis_url, cfg, patient=True)
        lane = LaneWorker(
            KIND,
            KIND,
            note,
            concurrency=args.concurrency,
            client=client,
            settings=cfg,
            on_dead=dead,
        )
    else:

        async def process(job: Any, token: str) -> None:
            recorder.note(job.data)

        opts = {"connection": args.redis_url, "prefix": args.prefix}
        worker_opts = {**opts, "concurrency": args.concurrency, "autorun": False}
        worker = bullmq.Worker(KIND, process, worker_opts)
    print("ready", flush=True)
    await _line()
    cpu0 = _cpu_s()
    if args.mode == "ours":
        await runtime.start()
    elif args.mode == "lane":
        lane.start()
    else:
        running = asyncio.ensure_future(worker.run())
    while await _line() not in ("stop", ""):
        pass
    cpu = _cpu_s() - cpu0
    recorder.release.set()
    if args.mode == "ours":
        await runtime.stop(grace_s=5)
        await engine.dispose()
    elif args.mode == "lane":
        await lane.close(5)
        await client.aclose()
    else:
        # Bounded: the stock worker's close has been seen to hang (its blocking wait).
        closing = asyncio.ensure_future(worker.close())
        await asyncio.wait({closing, running}, timeout=10, return_when=asyncio.ALL_COMPLETED)
    tmp.cleanup()
    out = {
        "cpu_s": cpu,
        "latencies": recorder.latencies,
        "express": recorder.express,
        "starts": recorder.starts,
        "stalled": stalled.jobs,
    }
    print(json.dumps(out), flush=True)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--mode", choices=("ours", "lane", "bare"), required=True)
    p.add_argument("--redis-url", required=True)
    p.add_argument("--prefix", required=True)
    p.add_argument("--concurrency", type=int, default=10)
    p.add_argument("--keep", type=int, default=1_000_000, help="completed jobs kept (ours)")
    p.add_argument("--hold", action="store_true", help="ours: non-enterprise jobs wait for stop")
    p.add_argument("--count-only", action="store_true", help="count starts, keep no latencies")
    return p.parse_args(argv)


if __name__ == "__main__":
    run(main(parse()))
