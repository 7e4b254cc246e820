"""Redis memory per waiting job: INFO used_memory before/after N seed-shaped jobs.

Each measurement gets a fresh private redis-server (with --redis-url the figures include
whatever else that server does). One job is added first so scripts and queue meta keys
are not counted; then N jobs carrying a ~200-byte reconciliation request are added and
the used_memory delta is divided by N. Compared:

  ours          JobQueue.submit_bulk (batches of 250)
  bare          bullmq Queue.addBulk of the same data with bullmq's default options
  bare+opts     bullmq Queue.addBulk of the same data with the options our adapter writes

    python bench/memory.py                 # 100,000 jobs, 1 run (memory is deterministic)
    python bench/memory.py --runs 3 --modes ours bare
    python bench/memory.py --modes ours --hash-max-listpack-value 1024
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import bullmq
import redis

import common
import workload
from settler_jobs.cli.serve import run
from settler_jobs.queue import JobQueue
from settler_jobs.redis_server import redis_client

MODES = ("ours", "bare", "bare+opts")


async def add(url: str, prefix: str, mode: str, first: int, n: int) -> None:
    if mode == "ours":
        with tempfile.TemporaryDirectory() as tmp:
            cfg = common.settings(url, prefix, Path(tmp))
            queue = JobQueue(redis_client(url, cfg), workload.noop_registry(10), cfg)
            if n == 1:
                await queue.submit(workload.submission(first))
            else:
                await workload.fill(queue, n)
            await queue.close()
        return
    bare = bullmq.Queue(workload.KIND, {"connection": url, "prefix": prefix})
    for start in range(first, first + n, 1000):
        jobs = [workload.bare_job(i, 10_000) for i in range(start, min(first + n, start + 1000))]
        if mode == "bare":
            jobs = [{"name": j["name"], "data": j["data"]} for j in jobs]
        await bare.addBulk(jobs)
    await bare.close()


def breakdown(url: str, prefix: str, n: int) -> dict[str, float]:
    """MEMORY USAGE per job of a sample of job hashes and of the shared structures."""
    client = redis.Redis.from_url(url, decode_responses=True)
    out: dict[str, float] = {}
    try:
        base = f"{prefix}:{workload.KIND}"
        ids = client.zrange(f"{base}:prioritized", 0, 49) or client.lrange(f"{base}:wait", 0, 49)
        sizes = [client.memory_usage(f"{base}:{job_id!s}", samples=0) or 0 for job_id in ids]
        out["job hash"] = sum(sizes) / max(1, len(sizes))
        for name in ("prioritized", "wait", "events"):
            out[name] = (client.memory_usage(f"{base}:{name}", samples=0) or 0) / n
        out["events entries"] = float(client.xlen(f"{base}:events"))
    finally:
        client.close()
    return out


@contextlib.contextmanager
def fresh_redis(args: argparse.Namespace) -> Iterator[str]:
    if args.redis_url:
        yield args.redis_url
    else:
        with common.private_redis(args.redis_server) as url:
            yield url


def measure(args: argparse.Namespace, mode: str) -> tuple[float, dict[str, float], str]:
    with fresh_redis(args) as url, common.scoped_prefix(url, "memory") as prefix:
        if args.hash_max_listpack_value:
            client = redis.Redis.from_url(url)
            client.config_set("hash-max-listpack-value", args.hash_max_listpack_value)
            client.close()
        run(add(url, prefix, mode, 0, 1))
        before = int(common.redis_info(url, "memory")["used_memory"])
        run(add(url, prefix, mode, 1, args.jobs))
        after = int(common.redis_info(url, "memory")["used_memory"])
        return (after - before) / args.jobs, breakdown(url, prefix, args.jobs), common.machine(url)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    common.add_redis_args(p)
    p.add_argument("--jobs", type=int, default=100_000, help="jobs per measurement (100000)")
    p.add_argument("--runs", type=int, default=1, help="interleaved rounds (default 1)")
    p.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    p.add_argument(
        "--hash-max-listpack-value",
        type=int,
        help="CONFIG SET this on the private server first (Redis default 64)",
    )
    args = p.parse_args()
    results: dict[str, list[tuple[float, dict[str, float]]]] = {m: [] for m in args.modes}
    for rnd in range(args.runs):
        for mode in args.modes:
            per_job, parts, machine = measure(args, mode)
            if rnd == 0 and mode == args.modes[0]:
                print(machine)
            results[mode].append((per_job, parts))
            print(f"round {rnd + 1}: {mode}: {per_job:,.0f} bytes/job", flush=True)
    rows: list[list[Any]] = []
    for mode, runs in results.items():
        per_job = common.median([r[0] for r in runs])
        parts = runs[0][1]
        rows.append(
            [
                mode,
                ", ".join(f"{r[0]:,.0f}" for r in runs),
                per_job,
                parts["job hash"],
                parts["prioritized"] + parts["wait"],
                parts["events"],
                int(parts["events entries"]),
                "yes" if per_job < 1024 else "NO",
            ]
        )
    headers = ["producer", "runs (B/job)", "median B/job", "job hash B", "wait/prio B/job"]
    headers += ["events B/job", "events entries", "< 1 KB"]
    common.table(f"Redis memory per waiting job, {args.jobs:,} jobs", headers, rows)


if __name__ == "__main__":
    main()
