"""A benchmark worker process: our `WorkerRuntime` or a stock `bullmq.Worker` on one kind.

Protocol on stdin/stdout, so start-up time is never timed: the process imports and
builds everything, prints `ready`, waits for a `go` line, runs, and on a `stop` line
(or EOF) shuts down and prints one JSON line: its CPU seconds between go and stop, and
(with --record) the submit-to-start latency of every job it started.

    python bench/worker_proc.py --mode ours --redis-url redis://... --prefix bench-x
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import bullmq

from common import KIND, settings
from settler_jobs.domain import Tier
from settler_jobs.handlers.context import JobContext
from settler_jobs.kinds import JobKind, Registry
from settler_jobs.runner import run
from settler_jobs.storage.db import create_engine, session_factory
from settler_jobs.worker import WorkerRuntime


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Recorder:
    """Start - submit time of each job whose data carries `submittedAt` (epoch seconds)."""

    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.express: list[float] = []

    def note(self, data: Any, express: bool = False) -> None:
        submitted = data.get("submittedAt") if isinstance(data, dict) else None
        if isinstance(submitted, float | int):
            (self.express if express else self.latencies).append(time.time() - submitted)

    async def handler(self, payload: Any, ctx: JobContext) -> None:
        self.note(payload, ctx.tier is Tier.ENTERPRISE)


async def _line() -> str:
    return (await asyncio.to_thread(sys.stdin.readline)).strip()


async def main(args: argparse.Namespace) -> None:
    recorder = Recorder()
    tmp = tempfile.TemporaryDirectory(prefix="settler-bench-")
    cfg = settings(args.redis_url, args.prefix, Path(tmp.name), keep_completed_count=args.keep)
    if args.mode == "ours":
        kind = JobKind(KIND, recorder.handler, concurrency=args.concurrency)
        engine = create_engine(cfg.effective_database_url)
        runtime = WorkerRuntime(cfg, Registry([kind]), args.redis_url, session_factory(engine))
    else:

        async def process(job: Any, token: str) -> None:
            if args.record:
                recorder.note(job.data)

        opts = {"connection": args.redis_url, "prefix": args.prefix}
        worker = bullmq.Worker(KIND, process, {**opts, "concurrency": args.concurrency})
        worker.pause()  # autorun starts it; hold until `go`
    print("ready", flush=True)
    await _line()
    cpu0 = _cpu_s()
    if args.mode == "ours":
        await runtime.start()
    else:
        worker.resume()
    while await _line() not in ("stop", ""):
        pass
    cpu = _cpu_s() - cpu0
    if args.mode == "ours":
        await runtime.stop(grace_s=5)
        await engine.dispose()
    else:
        await worker.close()
    tmp.cleanup()
    out = {"cpu_s": cpu, "latencies": recorder.latencies, "express": recorder.express}
    print(json.dumps(out), flush=True)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--mode", choices=("ours", "bare"), required=True)
    p.add_argument("--redis-url", required=True)
    p.add_argument("--prefix", required=True)
    p.add_argument("--concurrency", type=int, default=10)
    p.add_argument("--keep", type=int, default=1_000_000, help="completed jobs kept (ours)")
    p.add_argument("--record", action="store_true", help="record submit-to-start latency")
    return p.parse_args(argv)


if __name__ == "__main__":
    run(main(parse()))
