"""The PostgreSQL queue backend side by side: our runtime on PostgreSQL, our runtime on
Redis, and Procrastinate on the same PostgreSQL server.

Per mode and round: a bulk pre-fill of N seed-shaped jobs (timed: bulk submits/s), one
worker process started (`--child`, ready/go/stop on stdin so start-up is not timed)
and timed until N jobs completed (no-op jobs/s per process, and its CPU per job);
then single submits one at a time (submits/s), and the submit-to-start latency of jobs
submitted one by one at a steady rate into an idle worker (p50/p99). Every mode gets
the same payloads and worker concurrency; a fresh database is made and dropped.

    python bench/pg_throughput.py                       # N=10000, concurrency 10, 1 round
    python bench/pg_throughput.py --jobs 20000 --concurrency 10 50 --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import procrastinate
import psycopg
import redis

import common
import workload
from settler_jobs.config import Settings
from settler_jobs.domain import Tier
from settler_jobs.kinds import JobKind, Registry
from settler_jobs.queue import JobQueue
from settler_jobs.queue.pg import PgJobQueue
from settler_jobs.records import Submission
from settler_jobs.redis_server import redis_client
from settler_jobs.storage.db import create_engine, session_factory
from settler_jobs.storage.migrate import upgrade_async
from settler_jobs.worker.runtime import WorkerRuntime

MODES = ("pg", "redis", "procrastinate")
KIND = workload.KIND
LATENCIES: list[float] = []


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _note_start(payload: dict[str, Any]) -> None:
    sent = payload.get("submittedAt")
    if sent is not None:
        LATENCIES.append(time.time() - float(sent))


async def _noop(payload: Any, ctx: Any) -> None:
    _note_start(payload)


def registry(concurrency: int) -> Registry:
    """The no-op kind, recording submit-to-start latency when the payload says when."""
    return Registry([JobKind(KIND, _noop, concurrency=concurrency)])


def proc_app(dsn: str, queue: str) -> tuple[procrastinate.App, Any]:
    """Procrastinate on `dsn` with the no-op task on `queue`."""
    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=dsn))

    @app.task(name="noop", queue=queue)
    async def noop(**payload: Any) -> None:
        _note_start(payload)

    return app, noop


# ------------------------------------------------------------------ child process


async def child(args: argparse.Namespace) -> None:
    """A worker process: build, print ready, run from `go` to `stop`, print figures."""
    stop = asyncio.Event()
    go = asyncio.Event()

    def read_stdin() -> None:
        for line in sys.stdin:
            loop.call_soon_threadsafe((go if line.strip() == "go" else stop).set)
        loop.call_soon_threadsafe(stop.set)

    loop = asyncio.get_running_loop()
    threading.Thread(target=read_stdin, daemon=True).start()
    concurrency = args.concurrency[0]
    if args.child == "procrastinate":
        app, _ = proc_app(args.dsn, args.queue)
        async with app.open_async():
            print("ready", flush=True)
            await go.wait()
            cpu0 = _cpu_s()
            worker = asyncio.create_task(
                app.run_worker_async(
                    queues=[args.queue],
                    concurrency=concurrency,
                    wait=True,
                    install_signal_handlers=False,
                )
            )
            await stop.wait()
            cpu = _cpu_s() - cpu0
            worker.cancel()
            await asyncio.gather(worker, return_exceptions=True)
    else:
        settings = Settings()
        engine = create_engine(settings.effective_database_url)
        runtime = WorkerRuntime(
            settings, registry(concurrency), settings.redis_url or "", session_factory(engine)
        )
        print("ready", flush=True)
        await go.wait()
        cpu0 = _cpu_s()
        await runtime.start()
        await stop.wait()
        cpu = _cpu_s() - cpu0
        await runtime.stop(5)
        await engine.dispose()
    print(json.dumps({"cpu_s": cpu, "latencies": LATENCIES}), flush=True)


# ------------------------------------------------------------------ parent side


class Target:
    """One mode's producer, counter and worker environment for one trial."""

    def __init__(self, mode: str, args: argparse.Namespace, db: str) -> None:
        self.mode, self.args, self.db = mode, args, db
        self.tag = uuid.uuid4().hex[:10]
        self.data_dir = Path(tempfile.mkdtemp(prefix="pgbench-"))
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("SETTLER_")}
        self.env |= {
            "SETTLER_METRICS_PORT": "0",
            "SETTLER_DATA_DIR": str(self.data_dir),
            "SETTLER_KEEP_COMPLETED_COUNT": "10000000",
        }
        self.queue: Any = None
        self.app: Any = None
        self.task: Any = None

    async def open(self, concurrency: int) -> None:
        if self.mode == "pg":
            s = Settings(
                database_url=self.db.replace("postgresql://", "postgresql+asyncpg://"),
                queue_backend="postgres",
                queue_schema=f"b_{self.tag}",
                data_dir=self.data_dir,
                metrics_port=0,
                keep_completed_count=10_000_000,
            )
            self.queue = PgJobQueue(registry(concurrency), s)
            await self.queue.ready()
            self.env |= {
                "DATABASE_URL": s.effective_database_url,
                "SETTLER_QUEUE_BACKEND": "postgres",
                "SETTLER_QUEUE_SCHEMA": s.queue_schema,
            }
        elif self.mode == "redis":
            s = common.settings(
                self.args.redis_url,
                f"bench-pg-{self.tag}",
                self.data_dir,
                keep_completed_count=10_000_000,
            )
            await upgrade_async(s.effective_database_url)
            self.queue = JobQueue(redis_client(self.args.redis_url, s), registry(concurrency), s)
            self.env |= {
                "REDIS_URL": self.args.redis_url,
                "SETTLER_QUEUE_PREFIX": s.queue_prefix,
                "DATABASE_URL": s.effective_database_url,
            }
        else:
            self.app, self.task = proc_app(self.db, f"q_{self.tag}")
            await self.app.open_async()

    async def close(self) -> None:
        if self.queue is not None:
            await self.queue.close()
        if self.app is not None:
            await self.app.close_async()
        if self.mode == "redis":
            common.delete_prefix(self.args.redis_url, f"bench-pg-{self.tag}")

    async def submit(self, payloads: list[dict[str, Any]]) -> None:
        if self.mode == "procrastinate":
            if len(payloads) == 1:
                await self.task.defer_async(**payloads[0])
            else:
                await self.task.batch_defer_async(*payloads)
            return
        subs = [
            Submission(KIND, p, f"t-{i % 100:03d}", Tier.GROWTH) for i, p in enumerate(payloads)
        ]
        if len(subs) == 1:
            await self.queue.submit(subs[0])
        else:
            await self.queue.submit_bulk(subs)

    async def done(self) -> int:
        if self.mode == "redis":
            client = redis.Redis.from_url(self.args.redis_url)
            try:
                return int(client.zcard(f"bench-pg-{self.tag}:{KIND}:completed"))
            finally:
                client.close()
        if self.mode == "pg":
            query = f"SELECT count(*) FROM \"b_{self.tag}\".job WHERE state = 'completed'"
            params: tuple[Any, ...] = ()
        else:
            query = (
                "SELECT count(*) FROM procrastinate_jobs "
                "WHERE queue_name = %s AND status = 'succeeded'"
            )
            params = (f"q_{self.tag}",)
        async with await psycopg.AsyncConnection.connect(self.db, autocommit=True) as conn:
            row = await (await conn.execute(query.encode(), params)).fetchone()
        return int(row[0]) if row else 0

    def worker(self, concurrency: int) -> subprocess.Popen[str]:
        cmd = [
            sys.executable,
            __file__,
            "--child",
            self.mode,
            "--concurrency",
            str(concurrency),
            "--dsn",
            self.db,
            "--queue",
            f"q_{self.tag}",
        ]
        proc = subprocess.Popen(
            cmd, env=self.env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert proc.stdout is not None and proc.stdin is not None
        line = proc.stdout.readline().strip()
        if line != "ready":
            raise RuntimeError(f"{self.mode} worker did not start: {line!r}")
        return proc


def _stop(proc: subprocess.Popen[str]) -> dict[str, Any]:
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write("stop\n")
    proc.stdin.close()
    out = proc.stdout.read().strip().splitlines()
    proc.wait(30)
    return dict(json.loads(out[-1]))


def _go(proc: subprocess.Popen[str]) -> None:
    assert proc.stdin is not None
    proc.stdin.write("go\n")
    proc.stdin.flush()


async def _until(target: Target, n: int, timeout_s: float) -> float:
    start = time.perf_counter()
    while await target.done() < n:
        if time.perf_counter() - start > timeout_s:
            raise RuntimeError(f"{target.mode}: {await target.done()} of {n} done in time")
        await asyncio.sleep(0.02)  # the poll interval of the measurement
    return time.perf_counter() - start


async def trial(mode: str, concurrency: int, args: argparse.Namespace, db: str) -> dict[str, Any]:
    """One mode: bulk fill, drain by one worker process, single submits, latency."""
    target = Target(mode, args, db)
    await target.open(concurrency)
    try:
        n = args.jobs
        payloads = [workload.seed_payload(i) for i in range(n)]
        start = time.perf_counter()
        for at in range(0, n, 500):
            await target.submit(payloads[at : at + 500])
        bulk = n / (time.perf_counter() - start)
        proc = target.worker(concurrency)
        _go(proc)
        drain = await _until(target, n, 600)
        stats = _stop(proc)
        start = time.perf_counter()
        for p in payloads[: args.singles]:
            await target.submit([p])
        single = args.singles / (time.perf_counter() - start)
        proc = target.worker(concurrency)
        _go(proc)
        await _until(target, n + args.singles, 120)
        for i in range(args.latency_jobs):
            await target.submit([{**payloads[i], "submittedAt": time.time()}])
            await asyncio.sleep(1 / args.latency_rate)  # the steady submit rate
        await _until(target, n + args.singles + args.latency_jobs, 60)
        lat = _stop(proc)["latencies"]
        return {
            "mode": mode,
            "concurrency": concurrency,
            "jobs_s": n / drain,
            "cpu_ms_job": stats["cpu_s"] * 1000 / n,
            "bulk_s": bulk,
            "single_s": single,
            "p50_ms": common.percentile(lat, 50) * 1000,
            "p99_ms": common.percentile(lat, 99) * 1000,
        }
    finally:
        await target.close()


async def prepare_database(admin: str) -> str:
    """A fresh database with Settler's and Procrastinate's schemas; its URL."""
    name = f"pgq_bench_{uuid.uuid4().hex[:10]}"
    async with await psycopg.AsyncConnection.connect(admin, autocommit=True) as conn:
        await conn.execute(f'CREATE DATABASE "{name}"'.encode())
    db = admin.rsplit("/", 1)[0] + "/" + name
    await upgrade_async(db.replace("postgresql://", "postgresql+asyncpg://"))
    app, _ = proc_app(db, "setup")
    async with app.open_async():
        await app.schema_manager.apply_schema_async()
    return db


async def drop_database(admin: str, db: str) -> None:
    name = db.rsplit("/", 1)[1]
    async with await psycopg.AsyncConnection.connect(admin, autocommit=True) as conn:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'.encode())


async def main(args: argparse.Namespace) -> None:
    db = await prepare_database(args.pg_url)
    rows: list[dict[str, Any]] = []
    try:
        print(common.machine(args.redis_url), flush=True)
        for r in range(args.rounds):
            for concurrency in args.concurrency:
                for mode in args.modes:
                    row = await trial(mode, concurrency, args, db)
                    print(f"round {r + 1}: {row}", flush=True)
                    rows.append(row)
    finally:
        await drop_database(args.pg_url, db)
    keys = ("jobs_s", "cpu_ms_job", "bulk_s", "single_s", "p50_ms", "p99_ms")
    table_rows: list[list[Any]] = []
    for concurrency in args.concurrency:
        base = None
        for mode in args.modes:
            mine = [x for x in rows if x["mode"] == mode and x["concurrency"] == concurrency]
            med = {k: common.median([x[k] for x in mine]) for k in keys}
            if mode == "redis":
                base = med["jobs_s"]
            table_rows.append([mode, concurrency, *(med[k] for k in keys)])
        if base:
            for cells in table_rows:
                if cells[1] == concurrency:
                    cells.append(f"{cells[2] / base:.2f}x")
    common.table(
        f"Medians of {args.rounds} round(s), {args.jobs} jobs, load {os.getloadavg()[0]:.2f}",
        [
            "mode",
            "conc",
            "no-op jobs/s",
            "worker CPU ms/job",
            "bulk submits/s",
            "single submits/s",
            "start p50 ms",
            "start p99 ms",
            "vs redis",
        ],
        table_rows,
    )


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--singles", type=int, default=1000)
    parser.add_argument("--latency-jobs", type=int, default=300)
    parser.add_argument("--latency-rate", type=float, default=100.0)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[10])
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--child", choices=MODES)
    parser.add_argument("--dsn")
    parser.add_argument("--queue")
    return parser.parse_args()


if __name__ == "__main__":
    options = parse()
    asyncio.run(child(options) if options.child else main(options))
