"""No-op job throughput: our WorkerRuntime vs a stock bullmq.Worker vs BullMQ for Node.

Each trial pre-fills N jobs (ours: JobQueue.submit_bulk; others: Queue.addBulk with the
same data and options), starts the worker processes (bench/worker_proc.py, or
bench/node_worker.cjs for node; mode `lane` is our LaneWorker without WorkerRuntime) and
times until the lane's completed set holds N jobs. Configurations run interleaved; the
table gives medians. Redis CPU per job comes from INFO cpu, worker CPU from getrusage
(Node: process.cpuUsage).

    python bench/throughput.py                # N=12000, 3 rounds, concurrency 10, ours+bare
    python bench/throughput.py --jobs 20000 --procs 1 --concurrency 10 50 100 \
        --modes ours bare node                # issue #7's side-by-side matrix
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import dataclass
from typing import Any

import redis

import common
import workload
from settler_jobs.cli.serve import run

MODES = ("ours", "lane", "bare", "node")


@dataclass
class Trial:
    mode: str
    procs: int
    concurrency: int
    seconds: float
    redis_cpu_s: float
    worker_cpu_s: float
    calls: int
    evalsha: int
    failed: int


def calls_in(stats: dict[str, Any], command: str | None = None) -> int:
    return sum(int(v["calls"]) for k, v in stats.items() if command in (None, k))


def trial(url: str, mode: str, procs: int, conc: int, args: argparse.Namespace) -> Trial:
    with common.scoped_prefix(url, mode) as prefix:
        run(workload.prefill(url, prefix, mode, args.jobs, args.jobs + 1000))
        workers = workload.Workers(url, prefix, mode, procs, conc)
        client = redis.Redis.from_url(url)
        completed, failed = (
            f"{prefix}:{workload.KIND}:completed",
            f"{prefix}:{workload.KIND}:failed",
        )
        stats0 = common.redis_info(url, "commandstats")  # diffed: no RESETSTAT on shared servers
        cpu0 = common.redis_cpu_s(url)
        workers.go()
        t0 = time.perf_counter()
        deadline = t0 + args.timeout
        while client.zcard(completed) + client.zcard(failed) < args.jobs:
            if time.perf_counter() > deadline:
                raise RuntimeError(f"{mode}x{procs}: only {client.zcard(completed)} done")
            time.sleep(0.01)
        seconds = time.perf_counter() - t0
        redis_cpu = common.redis_cpu_s(url) - cpu0
        stats = common.redis_info(url, "commandstats")
        worker_cpu = sum(out["cpu_s"] for out in workers.stop())
        calls = calls_in(stats) - calls_in(stats0)
        evalsha = calls_in(stats, "cmdstat_evalsha") - calls_in(stats0, "cmdstat_evalsha")
        nfailed = int(client.zcard(failed))
        client.close()
    return Trial(mode, procs, conc, seconds, redis_cpu, worker_cpu, calls, evalsha, nfailed)


def report(trials: list[Trial], n: int) -> None:
    rows = []
    rates: dict[tuple[str, int, int], float] = {}
    configs = sorted({(t.procs, t.concurrency) for t in trials})
    for procs, conc in configs:
        for mode in MODES:
            mine = [t for t in trials if (t.mode, t.procs, t.concurrency) == (mode, procs, conc)]
            if not mine:
                continue
            runs = [n / t.seconds for t in mine]
            rates[mode, procs, conc] = common.median(runs)
            rows.append(
                [
                    f"{mode} x{procs} c{conc}",
                    ", ".join(f"{r:,.0f}" for r in runs),
                    rates[mode, procs, conc],
                    common.median([t.redis_cpu_s / n * 1e6 for t in mine]),
                    common.median([t.worker_cpu_s / n * 1e6 for t in mine]),
                    common.median([t.evalsha / n for t in mine]),
                    common.median([t.calls / n for t in mine]),
                    sum(t.failed for t in mine),
                ]
            )
    headers = ["worker x procs, slots", "runs (jobs/s)", "median jobs/s", "Redis CPU µs/job"]
    headers += ["worker CPU µs/job (all procs)", "EVALSHA/job", "Redis cmds/job (incl. Lua)"]
    headers += ["failed"]
    common.table(f"Throughput, {n:,} no-op jobs per run", headers, rows)
    for other in ("bare", "node"):
        ratio_rows = [
            [f"x{p} c{c}", rates["ours", p, c] / rates[other, p, c]]
            for p, c in configs
            if ("ours", p, c) in rates and (other, p, c) in rates
        ]
        if ratio_rows:
            common.table(f"Ratio ours/{other}", ["procs, slots", f"ours/{other}"], ratio_rows)
    best = {m: max((r for (mm, _, _), r in rates.items() if mm == m), default=0.0) for m in MODES}
    for ours in ("ours", "lane"):
        if best[ours] and best["node"]:
            print(f"\nBest rates: {ours} {best[ours]:,.0f}, node {best['node']:,.0f} jobs/s: ")
            print(f"{ours}/node = {best[ours] / best['node']:.2f} (target >= 1, stretch 1.25)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    common.add_redis_args(p)
    p.add_argument("--jobs", type=int, default=12_000, help="jobs per run (default 12000)")
    p.add_argument("--runs", type=int, default=3, help="interleaved rounds (default 3)")
    p.add_argument(
        "--concurrency", type=int, nargs="+", default=[10], help="slots per process (default 10)"
    )
    p.add_argument("--procs", type=int, nargs="+", default=[1, 2], help="process counts")
    p.add_argument("--modes", nargs="+", default=["bare", "ours"], choices=MODES)
    p.add_argument("--timeout", type=float, default=300, help="per-run limit in seconds")
    args = p.parse_args()
    trials = []
    with common.redis_for(args) as url:
        print(common.machine(url))
        for rnd in range(args.runs):
            for procs in args.procs:
                for conc in args.concurrency:
                    for mode in args.modes:
                        t = trial(url, mode, procs, conc, args)
                        rate = args.jobs / t.seconds
                        load = os.getloadavg()[0]
                        print(
                            f"round {rnd + 1}: {mode} x{procs} c{conc}: {rate:,.0f} jobs/s "
                            f"(load {load:.2f})",
                            flush=True,
                        )
                        trials.append(t)
    report(trials, args.jobs)


if __name__ == "__main__":
    main()
