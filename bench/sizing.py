"""Redis sizing: memory per waiting job and Redis CPU per job, standalone vs cluster node.

For each server kind a fresh private redis-server is started:

  standalone    plain redis-server, the single-node client, prefix `bench-…`
  cluster       redis-server --cluster-enabled yes owning all 16384 slots (a one-node
                cluster), the cluster client (SETTLER_REDIS_CLUSTER) and prefix `{bench-…}`

Per run: one job is submitted first (scripts and queue meta keys are not counted), then
N seed-shaped jobs (`workload.submission`: ~200 B payload, 337 B with the envelope) with
`JobQueue.submit_bulk`; `INFO memory` used_memory before/after gives bytes per waiting
job. Then one in-process lane (`LaneLoop`, no-op processor) drains the N jobs. `INFO cpu`
(used_cpu_user + used_cpu_sys of the server) around each phase gives Redis CPU µs per
submitted job and per processed job; their sum is the Redis CPU a job costs over its life,
and 1 s / that sum is how many jobs per second one Redis core can carry. Kinds run
interleaved; tables give medians.

    python bench/sizing.py                                  # N=100,000, 3 rounds
    python bench/sizing.py --jobs 20000 --runs 1 --hash-max-listpack-value 1024
    python bench/sizing.py --jobs 5000 --runs 1 --commandstats   # commands per job
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

import common
import workload
from settler_jobs.cli.serve import run
from settler_jobs.queue import JobQueue
from settler_jobs.queue.lane_loop import LaneLoop, LaneOptions
from settler_jobs.redis_server import redis_client

KINDS = ("standalone", "cluster")
DRAIN_TIMEOUT_S = 600.0


@dataclass
class Run:
    kind: str
    bytes_per_job: float
    submit_cpu_us: float
    process_cpu_us: float
    submit_s: float
    process_s: float


@contextlib.contextmanager
def cluster_node(binary: str | None) -> Iterator[str]:
    """A one-node Redis Cluster (all slots on one cluster-enabled server)."""
    binary = binary or common.find_redis_server()
    if binary is None:
        raise SystemExit("redis-server not found on PATH")
    with tempfile.TemporaryDirectory() as tmp:
        port = common._free_port()
        cmd = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
        cmd += ["--appendonly", "no", "--cluster-enabled", "yes", "--dir", tmp]
        # The bus port defaults to port + 10000, which may be taken or past 65535.
        cmd += ["--cluster-port", str(common._free_port())]
        proc = subprocess.Popen([*cmd, "--daemonize", "no"], stdout=subprocess.DEVNULL)
        url = f"redis://127.0.0.1:{port}"
        client = redis.Redis.from_url(url, decode_responses=True)
        try:
            deadline = time.monotonic() + 10
            while True:
                try:
                    client.execute_command("CLUSTER", "ADDSLOTSRANGE", 0, 16383)  # type: ignore[no-untyped-call]
                    break
                except redis.ConnectionError:
                    if time.monotonic() > deadline or proc.poll() is not None:
                        raise
                    time.sleep(0.02)  # poll interval while the server starts
            while client.cluster("INFO").get("cluster_state") != "ok":
                if time.monotonic() > deadline:
                    raise TimeoutError("cluster_state did not become ok")
                time.sleep(0.02)
            yield url
        finally:
            client.close()
            proc.terminate()
            proc.wait(10)


@contextlib.contextmanager
def server(kind: str, args: argparse.Namespace) -> Iterator[str]:
    factory = cluster_node if kind == "cluster" else common.private_redis
    with factory(args.redis_server) as url:
        if args.hash_max_listpack_value:
            client = redis.Redis.from_url(url)
            client.config_set("hash-max-listpack-value", args.hash_max_listpack_value)
            client.close()
        yield url


def _memory(url: str) -> int:
    return int(common.redis_info(url, "memory")["used_memory"])


async def measure(url: str, kind: str, n: int, concurrency: int) -> Run:
    tag = f"bench-{uuid.uuid4().hex[:10]}"
    prefix = "{" + tag + "}" if kind == "cluster" else tag
    with tempfile.TemporaryDirectory() as tmp:
        cfg = common.settings(url, prefix, Path(tmp), redis_cluster=kind == "cluster")
        queue = JobQueue(redis_client(url, cfg), workload.noop_registry(concurrency), cfg)
        await queue.submit(workload.submission(-1))
        before, cpu0, t0 = _memory(url), common.redis_cpu_s(url), time.perf_counter()
        await workload.fill(queue, n)
        submit_s = time.perf_counter() - t0
        after, cpu1 = _memory(url), common.redis_cpu_s(url)

        lane_client = redis_client(url, cfg, patient=True)
        done = asyncio.Event()
        processed = 0

        async def processor(job: Any, token: str) -> None:
            nonlocal processed
            processed += 1
            if processed == n + 1:
                done.set()

        lane = LaneLoop(
            workload.KIND,
            processor,
            client=lane_client,
            prefix=prefix,
            options=LaneOptions(concurrency=concurrency),
        )
        t1 = time.perf_counter()
        lane.start()
        await asyncio.wait_for(done.wait(), DRAIN_TIMEOUT_S)
        await lane.close(10)
        process_s = time.perf_counter() - t1
        cpu2 = common.redis_cpu_s(url)
        await lane_client.aclose()
        await queue.close()
    return Run(
        kind,
        (after - before) / n,
        (cpu1 - cpu0) / n * 1e6,
        (cpu2 - cpu1) / (n + 1) * 1e6,
        submit_s,
        process_s,
    )


def print_commands(kind: str, before: dict[str, Any], after: dict[str, Any], n: int) -> None:
    """Calls and Redis µs per job of every command used at least once per 10 jobs."""
    for name, stats in sorted(after.items()):
        old = before.get(name, {"calls": 0, "usec": 0})
        calls = int(stats["calls"]) - int(old["calls"])
        if calls * 10 >= n:
            usec = (int(stats["usec"]) - int(old["usec"])) / n
            command = name.removeprefix("cmdstat_")
            print(f"  {kind} {command}: {calls / n:.2f}/job, {usec:.1f} µs/job")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--redis-server", help="redis-server binary (default: the newest on PATH)")
    p.add_argument("--jobs", type=int, default=100_000, help="jobs per run (100000)")
    p.add_argument("--runs", type=int, default=3, help="interleaved rounds (3)")
    p.add_argument("--concurrency", type=int, default=50, help="lane slots (50)")
    p.add_argument("--kinds", nargs="+", default=list(KINDS), choices=KINDS)
    p.add_argument("--commandstats", action="store_true", help="print commands per job")
    p.add_argument(
        "--hash-max-listpack-value", type=int, help="CONFIG SET this first (Redis default 64)"
    )
    args = p.parse_args()
    results: dict[str, list[Run]] = {k: [] for k in args.kinds}
    for rnd in range(args.runs):
        for kind in args.kinds:
            with server(kind, args) as url:
                if rnd == 0 and kind == args.kinds[0]:
                    print(common.machine(url))
                stats0 = common.redis_info(url, "commandstats")
                r = run(measure(url, kind, args.jobs, args.concurrency))
                if args.commandstats:
                    print_commands(kind, stats0, common.redis_info(url, "commandstats"), args.jobs)
            results[kind].append(r)
            print(
                f"round {rnd + 1}: {kind}: {r.bytes_per_job:,.0f} B/job, submit "
                f"{r.submit_cpu_us:.1f} µs/job ({args.jobs / r.submit_s:,.0f} jobs/s), process "
                f"{r.process_cpu_us:.1f} µs/job ({args.jobs / r.process_s:,.0f} jobs/s)",
                flush=True,
            )
    rows: list[list[Any]] = []
    for kind, runs in results.items():
        per_job = common.median([r.bytes_per_job for r in runs])
        submit = common.median([r.submit_cpu_us for r in runs])
        process = common.median([r.process_cpu_us for r in runs])
        total = common.median([r.submit_cpu_us + r.process_cpu_us for r in runs])
        rows.append(
            [
                kind,
                ", ".join(f"{r.bytes_per_job:,.0f}" for r in runs),
                per_job,
                submit,
                process,
                total,
                1e6 / total,
            ]
        )
    headers = ["server", "runs (B/job)", "median B/job", "submit µs/job", "process µs/job"]
    headers += ["total µs/job", "jobs/s per core"]
    common.table(f"Redis sizing, {args.jobs:,} jobs, lane c{args.concurrency}", headers, rows)


if __name__ == "__main__":
    main()
