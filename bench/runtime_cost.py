"""The worker runtime's own CPU per job, without Redis: where each microsecond goes.

Runs `LaneWorker._process` -> `Attempts.run` (envelope, wait metric, context, deadline,
no-op async handler, tenant accounting, completion metrics) on fake bullmq jobs of the
benchmark's shape, on uvloop, and the same with a bare processor (what mode `lane` of
throughput.py pays), then each part alone next to what it replaced. Process CPU time,
best of --repeat rounds, so the figures are steadier than wall time on a busy machine.

    python bench/runtime_cost.py                 # 100,000 jobs per round, 5 rounds
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import logging
import random
import time
import timeit
from collections.abc import Awaitable, Callable
from dataclasses import fields
from typing import Any

import uvloop

import common
import workload
from settler_jobs import envelope
from settler_jobs.clock import utc_now
from settler_jobs.context import JobContext
from settler_jobs.domain import PriorityClass, Tier, new_job_id
from settler_jobs.kinds import JobKind
from settler_jobs.metrics import Metrics
from settler_jobs.queue import ActiveJob, LaneWorker
from settler_jobs.tenants import TenantStats
from settler_jobs.worker.execute import Attempts

try:  # absent before the runtime was trimmed: then only the whole path is measured
    from settler_jobs.context import new_context
    from settler_jobs.worker.deadlines import Deadlines
except ImportError:
    new_context = None  # type: ignore[assignment]


class FakeJob:
    """The attributes of a bullmq `Job` that `LaneWorker._process` reads."""

    def __init__(self, i: int) -> None:
        s = workload.submission(i)
        self.id = new_job_id()
        self.name = workload.KIND
        self.data = envelope.build(
            s.data,
            tenant_id=s.tenant_id,
            tier=s.tier,
            job_id=self.id,
            priority=PriorityClass.NORMAL,
            timeout_s=None,
        )
        self.attemptsMade = 0
        self.opts = {"attempts": 3, "backoff": {"type": "exponential", "delay": 2000}}
        self.timestamp = 1_000
        self.processedOn = 2_000


def _lane(processor: Callable[[ActiveJob], Awaitable[Any]]) -> LaneWorker:
    lane = LaneWorker.__new__(LaneWorker)  # no connection: only `_process` is called
    lane.queue = workload.KIND
    lane._prefix = "bench"
    lane._processor = processor
    return lane


async def _per_job(lane: LaneWorker, jobs: list[FakeJob], n: int, rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        t0 = time.process_time()
        for i in range(n):
            await lane._process(jobs[i % len(jobs)], "token")
        best = min(best, time.process_time() - t0)
    return best / n * 1e6


async def _whole(n: int, rounds: int) -> list[list[object]]:
    kind = JobKind(workload.KIND, workload.noop, concurrency=50)
    stats = TenantStats("bench", 50)
    attempts = Attempts(None, None, Metrics(), stats, random.Random(), 1)  # type: ignore[arg-type]
    jobs = [FakeJob(i) for i in range(1000)]

    async def bare(active: ActiveJob) -> None:
        return None

    ours = await _per_job(_lane(functools.partial(attempts.run, kind)), jobs, n, rounds)
    lane = await _per_job(_lane(bare), jobs, n, rounds)
    attempts.close()
    return [
        ["LaneWorker._process + Attempts.run (mode ours)", ours],
        ["LaneWorker._process, bare processor (mode lane)", lane],
        ["the runtime's share", ours - lane],
    ]


def _parts(n: int, rounds: int) -> list[list[object]]:
    data = FakeJob(1).data
    metrics = Metrics()
    labels = (workload.KIND, workload.KIND, "growth")
    wait = metrics.job_wait.labels(*labels)
    done = metrics.job_completions.labels(*labels)
    duration = metrics.job_duration.labels(*labels, "completed")
    stats = TenantStats("bench", 50)
    log = logging.getLogger("bench")
    ctx_args: tuple[Any, ...] = (
        *("j", "k", "q", "t", Tier.GROWTH, PriorityClass.NORMAL, 1, 3, None, None, None),
    )
    ctx_kw: dict[str, Any] = dict(zip((f.name for f in fields(JobContext)), ctx_args, strict=True))
    cases: list[tuple[str, Callable[[], object], Callable[[], object]]] = [
        (
            "envelope: parse (now read + Envelope) -> read",
            lambda: envelope.parse(data),
            lambda: envelope.read(data),
        ),
        (
            "context: JobContext(**kw) -> new_context",
            lambda: JobContext(**ctx_kw),
            lambda: new_context(*ctx_args),
        ),
        (
            "wait: Histogram.observe -> tally.waited",
            lambda: wait.observe(0.01),
            lambda: metrics.tally.waited(labels, 0.01),
        ),
        (
            "completion: Counter.inc + Histogram.observe -> tally.completed",
            lambda: _both(done.inc, duration.observe),
            lambda: metrics.tally.completed(labels, 0.0001),
        ),
        (
            "tenant stats: record(at=utc_now()) -> add(at_ms)",
            lambda: stats.record(
                "t-001", "k", "completed", job_id="j", attempt=1, duration_ms=0, at=utc_now()
            ),
            lambda: stats.add("t-001", "k", "completed", "j", 1, 0, int(time.time() * 1000)),
        ),
        (
            "log adapter (unchanged)",
            lambda: logging.LoggerAdapter(log, {"job_id": "j", "kind": "k"}),
            lambda: logging.LoggerAdapter(log, {"job_id": "j", "kind": "k"}),
        ),
    ]
    rows: list[list[object]] = []
    for name, old, new in cases:
        before, after = (
            min(timeit.repeat(f, number=n, repeat=rounds, timer=time.process_time)) / n * 1e6
            for f in (old, new)
        )
        rows.append([name, before, after])
    return rows


def _both(inc: Callable[[], None], observe: Callable[[float], None]) -> None:
    inc()
    observe(0.0001)


async def _deadline_rows(n: int, rounds: int) -> list[list[object]]:
    deadlines = Deadlines()

    async def scope() -> None:
        async with asyncio.timeout(300.0):
            pass

    async def deadline() -> None:
        deadlines.finish(deadlines.start(300.0))

    async def plain() -> None:
        return None

    async def each(step: Callable[[], Awaitable[None]]) -> float:
        best = float("inf")
        for _ in range(rounds):
            t0 = time.process_time()
            for _ in range(n):
                await step()
            best = min(best, time.process_time() - t0)
        return best / n * 1e6

    base = await each(plain)
    old, new = await each(scope), await each(deadline)
    return [["attempt timeout: asyncio.timeout scope -> Deadlines", old - base, new - base]]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--jobs", type=int, default=100_000, help="jobs per round (default 100000)")
    p.add_argument("--repeat", type=int, default=5, help="rounds; the best is kept (default 5)")
    args = p.parse_args()
    whole = uvloop.run(_whole(args.jobs, args.repeat))
    common.table("Per job, process CPU µs (best round)", ["path", "µs/job"], whole)
    if new_context is None:
        return
    rows = _parts(args.jobs, args.repeat) + uvloop.run(_deadline_rows(args.jobs, args.repeat))
    common.table(
        "Parts of Attempts.run, before -> after, process CPU µs per call (best round)",
        ["part", "before µs", "after µs"],
        rows,
    )


if __name__ == "__main__":
    main()
