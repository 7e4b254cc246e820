"""The benchmark workload: the no-op kind, seed-shaped jobs, pre-fills, worker processes."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import bullmq

from common import settings
from settler_jobs import envelope
from settler_jobs.context import JobContext
from settler_jobs.domain import Tier, bullmq_priority, new_job_id
from settler_jobs.kinds import JobKind, Registry
from settler_jobs.queue import JobQueue
from settler_jobs.records import Submission
from settler_jobs.redis_server import redis_client

KIND = "bench-noop"
WORKER_PROC = Path(__file__).with_name("worker_proc.py")
NODE_WORKER = Path(__file__).with_name("node_worker.cjs")
# BullMQ for Node: the interop tests' pinned install, installed there if missing.
NODE_PROJECT = Path(__file__).resolve().parents[1] / "tests" / "interop" / "node"


async def noop(payload: Any, ctx: JobContext) -> None:
    """The no-op handler."""
    return None


def noop_registry(concurrency: int) -> Registry:
    """A registry with the single no-op async kind."""
    return Registry([JobKind(KIND, noop, concurrency=concurrency)])


def seed_payload(i: int) -> dict[str, Any]:
    """A reconciliation request shaped like the seed's (~200 bytes of JSON)."""
    return {
        "reconciliationId": f"rec-{i:08d}-{uuid.uuid4().hex[:12]}",
        "adapterConfig": {
            "adapter": "stripe",
            "sourceAccountId": f"acct_{uuid.uuid4().hex[:16]}",
            "ledgerId": f"ldg_{i % 997:04d}",
            "dateFrom": "2025-01-01",
            "dateTo": "2025-01-31",
            "currency": "USD",
        },
        "requestedBy": f"user-{i % 50:03d}",
    }


def submission(i: int, tier: Tier = Tier.GROWTH, kind: str = KIND, **extra: Any) -> Submission:
    """A seed-shaped submission of `kind` for tenant `t-<i % 100>`."""
    data = {**seed_payload(i), **extra}
    return Submission(kind=kind, data=data, tenant_id=f"t-{i % 100:03d}", tier=tier)


async def fill(queue: JobQueue, n: int, *, batch: int = 250, parallel: int = 8, **kw: Any) -> None:
    """Submit `n` seed-shaped jobs with `submit_bulk`, `parallel` batches at a time."""
    gate = asyncio.Semaphore(parallel)

    async def one(start: int) -> None:
        async with gate:
            await queue.submit_bulk(
                [submission(i, **kw) for i in range(start, min(n, start + batch))]
            )

    await asyncio.gather(*(one(start) for start in range(0, n, batch)))


def bare_job(i: int, keep: int, tier: Tier = Tier.GROWTH) -> dict[str, Any]:
    """A job for stock `Queue.addBulk` with the same data and options our adapter writes.

    Mirrors `JobQueue._prepare` as of commit d88f4cd (removeOnFail is a worker option there).
    """
    s = submission(i, tier)
    kind = JobKind(KIND, noop)
    data = envelope.build(
        s.data,
        tenant_id=s.tenant_id,
        tier=tier,
        job_id=new_job_id(),
        priority=kind.priority,
        timeout_s=None,
    )
    opts = {
        "jobId": data["jobId"],
        "timestamp": int(time.time() * 1000),
        "priority": bullmq_priority(kind.priority, tier),
        "attempts": kind.retry.attempts,
        "backoff": {"type": "exponential", "delay": 2000, "jitter": kind.retry.jitter},
        "delay": 0,
        "removeOnComplete": {"age": 86_400, "count": keep},
    }
    return {"name": KIND, "data": data, "opts": opts}


def node_modules() -> Path:
    """The node_modules folder holding npm bullmq (runs `npm ci` once if it is missing)."""
    modules = NODE_PROJECT / "node_modules"
    if not (modules / "bullmq").is_dir():
        npm = ["npm", "ci", "--no-audit", "--no-fund"]
        subprocess.run(npm, cwd=NODE_PROJECT, check=True, stdout=subprocess.DEVNULL)
    return modules


class Workers:
    """Worker processes running bench/worker_proc.py (see its docstring for the protocol).

    Mode `node` runs BullMQ for Node (bench/node_worker.cjs) with the same protocol.
    """

    def __init__(
        self, url: str, prefix: str, mode: str, procs: int = 1, concurrency: int = 10, *extra: str
    ) -> None:
        env = None
        if mode == "node":
            cmd = ["node", str(NODE_WORKER), url, prefix, KIND, str(concurrency)]
            env = {**os.environ, "NODE_PATH": str(node_modules())}
        else:
            cmd = [sys.executable, str(WORKER_PROC), "--mode", mode, "--redis-url", url]
            cmd += ["--prefix", prefix, "--concurrency", str(concurrency), *extra]
        self.procs = [
            subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
            for _ in range(procs)
        ]
        for proc in self.procs:
            assert proc.stdout is not None
            if proc.stdout.readline().strip() != "ready":
                raise RuntimeError(f"worker process did not start (exit {proc.wait()})")

    def _tell(self, line: str) -> None:
        for proc in self.procs:
            assert proc.stdin is not None
            proc.stdin.write(line + "\n")
            proc.stdin.flush()

    def go(self) -> None:
        """Start processing in every worker."""
        self._tell("go")

    def stop(self) -> list[dict[str, Any]]:
        """Stop every worker; their reports (cpu_s, latencies, express)."""
        self._tell("stop")
        reports = []
        for proc in self.procs:
            out, _ = proc.communicate(timeout=60)
            reports.append(json.loads(out.strip().splitlines()[-1]))
        return reports


async def prefill(url: str, prefix: str, mode: str, n: int, keep: int) -> None:
    """N no-op jobs: `ours` with JobQueue.submit_bulk, others with Queue.addBulk (same shape)."""
    if mode == "ours":
        with tempfile.TemporaryDirectory() as tmp:
            cfg = settings(url, prefix, Path(tmp), keep_completed_count=keep)
            queue = JobQueue(redis_client(url, cfg), noop_registry(10), cfg)
            await fill(queue, n)
            await queue.close()
        return
    bare = bullmq.Queue(KIND, {"connection": url, "prefix": prefix})
    for start in range(0, n, 1000):
        await bare.addBulk([bare_job(i, keep) for i in range(start, min(n, start + 1000))])
    await bare.close()
