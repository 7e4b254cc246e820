"""HTTP API latency and throughput, with the load from a second process.

`settler-jobs api` (uvicorn, one process) serves a private Redis and a SQLite file; this
process sends seed-shaped reconciliation jobs over keep-alive HTTP with a real tenant
key, so each request pays for key lookup, the Redis rate-limit script, validation and
the enqueue.

* single submits, open loop at a fixed rate (default 200 requests/s): latency from the
  scheduled send time (so a stall also delays the requests queued behind it);
* bulk submits of 1000 jobs, from 1 and from 4 concurrent clients: jobs per second.

    python bench/api.py                    # 200 req/s for 20 s, 50,000 bulk jobs
    python bench/api.py --rate 300 --seconds 10 --bulk-jobs 20000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

import common
import workload
from settler_jobs.domain import Tier
from settler_jobs.storage.db import create_engine, session_factory
from settler_jobs.storage.migrate import upgrade_async
from settler_jobs.tenants.directory import TenantDirectory

KIND = "reconciliation"
BULK_SIZE = 1000


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _tenant_key(database_url: str) -> str:
    await upgrade_async(database_url)
    engine = create_engine(database_url)
    try:
        directory = TenantDirectory(session_factory(engine))
        await directory.create_tenant("bench", Tier.GROWTH)
        return (await directory.create_key("bench", name="bench"))[1]
    finally:
        await engine.dispose()


def _start_server(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "settler_jobs", "api"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


async def _wait_ready(http: httpx.AsyncClient, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if (await http.get("/healthz")).status_code == 200:
                return
        except httpx.TransportError:
            pass
        await asyncio.sleep(0.1)
    raise RuntimeError("the API did not start")


def _job(i: int) -> dict[str, Any]:
    return {"kind": KIND, "data": workload.seed_payload(i)}


class RawClient:
    """Keep-alive HTTP/1.1 POSTs over plain sockets: a load generator much cheaper than
    httpx, so the client process is not the bottleneck on a small machine."""

    def __init__(self, port: int, key: str, connections: int) -> None:
        self._port, self._key, self._size = port, key, connections
        self._free: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = (
            asyncio.Queue()
        )

    async def open(self) -> None:
        for _ in range(self._size):
            self._free.put_nowait(await asyncio.open_connection("127.0.0.1", self._port))

    async def close(self) -> None:
        while not self._free.empty():
            _, writer = self._free.get_nowait()
            writer.close()

    async def post(self, path: str, body: bytes) -> int:
        """Send one POST; its status code."""
        head = (
            f"POST {path} HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {self._key}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        reader, writer = await self._free.get()
        try:
            writer.write(head.encode() + body)
            headers = await reader.readuntil(b"\r\n\r\n")
            status = int(headers.split(b" ", 2)[1])
            length = next(
                int(line.split(b":", 1)[1])
                for line in headers.lower().split(b"\r\n")
                if line.startswith(b"content-length:")
            )
            await reader.readexactly(length)
            return status
        finally:
            self._free.put_nowait((reader, writer))


async def single_submits(client: RawClient, rate: float, seconds: float) -> dict[str, Any]:
    """Open-loop single submits at `rate`/s; latency percentiles in ms."""
    n = int(rate * seconds)
    bodies = [json.dumps(_job(i)).encode() for i in range(n)]
    latencies: list[float] = []
    errors: dict[int, int] = {}
    loop = asyncio.get_running_loop()
    start = loop.time() + 0.2

    async def one(i: int) -> None:
        due = start + i / rate
        await asyncio.sleep(max(0.0, due - loop.time()))
        status = await client.post("/v1/jobs", bodies[i])
        latencies.append((loop.time() - due) * 1000)
        if status != 201:
            errors[status] = errors.get(status, 0) + 1

    began = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(n)))
    wall = time.perf_counter() - began - 0.2
    return {
        "requests": n,
        "achieved/s": n / wall,
        "p50 ms": common.percentile(latencies, 50),
        "p90 ms": common.percentile(latencies, 90),
        "p99 ms": common.percentile(latencies, 99),
        "max ms": max(latencies),
        "errors": json.dumps(errors) if errors else "0",
    }


async def bulk_submits(http: httpx.AsyncClient, jobs: int, clients: int) -> dict[str, Any]:
    """`jobs` jobs in batches of 1000 from `clients` concurrent clients; jobs/s."""
    batches = [
        [_job(i) for i in range(start, min(jobs, start + BULK_SIZE))]
        for start in range(0, jobs, BULK_SIZE)
    ]
    latencies: list[float] = []
    errors = 0

    async def client(first: int) -> None:
        nonlocal errors
        for batch in batches[first::clients]:
            t0 = time.perf_counter()
            response = await http.post("/v1/jobs/bulk", json={"jobs": batch})
            latencies.append((time.perf_counter() - t0) * 1000)
            errors += response.status_code != 201

    began = time.perf_counter()
    await asyncio.gather(*(client(c) for c in range(clients)))
    wall = time.perf_counter() - began
    return {
        "clients": clients,
        "jobs": jobs,
        "jobs/s": jobs / wall,
        "batch p50 ms": common.percentile(latencies, 50),
        "batch p99 ms": common.percentile(latencies, 99),
        "errors": errors,
    }


async def main(args: argparse.Namespace, url: str) -> None:
    with tempfile.TemporaryDirectory() as tmp, common.scoped_prefix(url, "api") as prefix:
        cfg = common.settings(url, prefix, Path(tmp))
        key = await _tenant_key(cfg.effective_database_url)
        port = common._free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("SETTLER_")} | {
            "REDIS_URL": url,
            "DATABASE_URL": cfg.effective_database_url,
            "SETTLER_DATA_DIR": str(cfg.data_dir),
            "SETTLER_QUEUE_PREFIX": prefix,
            "SETTLER_API_PORT": str(port),
            "SETTLER_METRICS_PORT": "0",
            # Limits on (the Redis script runs per request) but far above the load.
            "SETTLER_API_RATE_LIMITS": json.dumps({"growth": 1_000_000}),
            "SETTLER_API_MAX_BODY_BYTES": str(4 * 1024 * 1024),
        }
        proc = _start_server(env, Path(tmp) / "api.log")
        limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
        headers = {"Authorization": f"Bearer {key}"}
        try:
            async with httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{port}", headers=headers, limits=limits, timeout=30
            ) as http:
                await _wait_ready(http, proc)
                raw = RawClient(port, key, connections=32)
                await raw.open()
                await single_submits(raw, 50, 2)  # warm up connections and caches
                print(f"Machine: {common.machine(url)}")
                cpu0, t0 = _cpu_s(proc.pid), time.perf_counter()
                single = await single_submits(raw, args.rate, args.seconds)
                await raw.close()
                single["server CPU %"] = (
                    100 * (_cpu_s(proc.pid) - cpu0) / (time.perf_counter() - t0)
                )
                common.table(
                    f"Single submits, open loop at {args.rate:g}/s for {args.seconds:g} s",
                    list(single),
                    [list(single.values())],
                )
                rows = []
                for clients in (1, 4):
                    cpu0, t0 = _cpu_s(proc.pid), time.perf_counter()
                    result = await bulk_submits(http, args.bulk_jobs, clients)
                    result["server CPU %"] = (
                        100 * (_cpu_s(proc.pid) - cpu0) / (time.perf_counter() - t0)
                    )
                    rows.append(result)
                common.table(
                    f"Bulk submits, batches of {BULK_SIZE}",
                    list(rows[0]),
                    [list(r.values()) for r in rows],
                )
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=200.0, help="single submits per second")
    parser.add_argument("--seconds", type=float, default=20.0, help="single-submit duration")
    parser.add_argument("--bulk-jobs", type=int, default=50_000, help="jobs per bulk run")
    common.add_redis_args(parser)
    arguments = parser.parse_args()
    with common.redis_for(arguments) as redis_url:
        asyncio.run(main(arguments, redis_url))
