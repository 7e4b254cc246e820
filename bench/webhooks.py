"""Webhook deliveries: throughput of one worker process, and publish-to-receipt latency.

The receiver (keep-alive HTTP/1.1 on loopback, verifying every signature with the
`standardwebhooks` package) and the publisher run in this process; the worker is the
production CLI (`python -m settler_jobs worker --kinds webhook-delivery`) in another,
on a private Redis and a SQLite file (or `--database-url`).

(a) throughput: publish N events to one endpoint with the worker stopped, start it, and
    time from its first receipt to the N-th (start-up excluded).
(b) latency on an idle system: publish one event every `1/rate` s; latency is the time
    from just before `Webhooks.publish` to the receiver reading the request (one clock).

    python bench/webhooks.py                      # N=5000, 3 runs; latency 300 events
    python bench/webhooks.py --events 2000 --runs 1 --latency-events 100
    BENCH_PYSPY=spy BENCH_PYSPY_GIL=1 python bench/webhooks.py --runs 1   # py-spy, GIL holder only
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.webhook_receiver import WebhookReceiver

import common
from settler_jobs.cli.serve import run
from settler_jobs.config import Settings
from settler_jobs.secrets_box import SecretBox
from settler_jobs.wiring import open_services

PAYLOAD = {"invoiceId": "inv_0001", "amount": 12500, "currency": "EUR", "status": "paid"}


def worker_env(settings: Settings) -> dict[str, str]:
    assert settings.redis_url is not None
    keep = {k: v for k, v in os.environ.items() if not k.startswith("SETTLER_")}
    return (
        keep
        | {
            "REDIS_URL": settings.redis_url,
            "DATABASE_URL": settings.effective_database_url,
            "SETTLER_DATA_DIR": str(settings.data_dir),
            "SETTLER_QUEUE_PREFIX": settings.queue_prefix,
            "SETTLER_METRICS_PORT": "0",
            "SETTLER_OUTBOUND_ALLOW_HTTP": "true",
            "SETTLER_OUTBOUND_ALLOW_NETWORKS": '["127.0.0.1/32"]',
            "SETTLER_LOG_LEVEL": "WARNING",
        }
        | (
            {"SETTLER_SECRET_KEY": settings.secret_key.get_secret_value()}
            if settings.secret_key
            else {}
        )
    )


def _profiler(log: Path) -> list[str]:
    """BENCH_PROFILE=path: run the worker under cProfile, written at exit to path.<log>."""
    target = os.environ.get("BENCH_PROFILE")
    return ["-m", "cProfile", "-o", f"{target}.{log.stem}"] if target else []


class Worker:
    def __init__(self, settings: Settings, log: Path) -> None:
        self.log = log
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    *(
                        ["-m", "cProfile", "-o", f"{os.environ['BENCH_PROFILE']}.{log.stem}"]
                        if os.environ.get("BENCH_PROFILE")
                        else []
                    ),
                    "-m",
                    "settler_jobs",
                    "worker",
                    "--kinds",
                    "webhook-delivery",
                ],
                env=worker_env(settings),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

        self.spy: subprocess.Popen[bytes] | None = None
        if os.environ.get("BENCH_PYSPY"):  # sample the worker: collapsed stacks to a file
            spy_file = f"{os.environ['BENCH_PYSPY']}.{log.stem}"
            self.spy = subprocess.Popen(
                [
                    "py-spy",
                    "record",
                    "-r",
                    "250",
                    "-f",
                    "raw",
                    *(["--gil"] if os.environ.get("BENCH_PYSPY_GIL") else []),
                    "-o",
                    spy_file,
                    "--pid",
                    str(self.proc.pid),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )

    def cpu_s(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.spy is not None:
            self.spy.send_signal(2)
            self.spy.wait(30)
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


async def _wait(receiver: WebhookReceiver, n: int, worker: Worker, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while len(receiver.seen) < n:
        if worker.proc.poll() is not None:
            raise RuntimeError(f"worker exited:\n{worker.log.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            tail = worker.log.read_text()[-3000:]
            raise RuntimeError(f"only {len(receiver.seen)} of {n} deliveries arrived:\n{tail}")
        await asyncio.sleep(0.01)


async def throughput_run(settings: Settings, events: int, tmp: Path) -> dict[str, float]:
    async with open_services(settings, migrate=True) as services, WebhookReceiver() as receiver:
        hooks = services.webhooks
        tenant = f"bench-{uuid.uuid4().hex[:8]}"
        _, secret = await hooks.create_endpoint(tenant, receiver.url())
        receiver.secrets.append(secret)
        for i in range(events):
            await hooks.publish(tenant, "invoice.paid", {**PAYLOAD, "n": i})
        worker = Worker(settings, tmp / "worker-throughput.log")
        try:
            await _wait(receiver, 1, worker, 60)
            cpu0 = worker.cpu_s()
            first = receiver.seen[0].at
            await _wait(receiver, events, worker, 600)
            wall = receiver.seen[events - 1].at - first
            cpu = worker.cpu_s() - cpu0
        finally:
            worker.stop()
        unverified = sum(not s.verified for s in receiver.seen)
    return {
        "rate": (events - 1) / wall,
        "cpu_ms": 1000 * cpu / (events - 1),
        "unverified": float(unverified),
    }


async def latency_run(settings: Settings, events: int, rate: float, tmp: Path) -> list[float]:
    async with open_services(settings, migrate=True) as services, WebhookReceiver() as receiver:
        hooks = services.webhooks
        tenant = f"bench-{uuid.uuid4().hex[:8]}"
        endpoint, secret = await hooks.create_endpoint(tenant, receiver.url())
        receiver.secrets.append(secret)
        worker = Worker(settings, tmp / "worker-latency.log")
        try:
            await hooks.send_test(tenant, endpoint.id)
            await _wait(receiver, 1, worker, 60)  # warmed up: connections open
            published: dict[str, float] = {}
            start = time.perf_counter()
            for i in range(events):
                await asyncio.sleep(max(0.0, start + i / rate - time.perf_counter()))
                t0 = time.monotonic()
                result = await hooks.publish(tenant, "invoice.paid", {**PAYLOAD, "n": i})
                published[result.deliveries[0].id] = t0
            await _wait(receiver, events + 1, worker, 120)
        finally:
            worker.stop()
        return [
            (s.at - published[s.webhook_id]) * 1000
            for s in receiver.seen
            if s.webhook_id in published
        ]


def _settings(args: argparse.Namespace, url: str, prefix: str, tmp: Path) -> Settings:
    extra: dict[str, object] = {}
    if args.database_url:
        extra = {"database_url": args.database_url, "secret_key": SecretBox.generate_key()}
    return common.settings(
        url,
        prefix,
        tmp / "data",
        outbound_allow_http=True,
        outbound_allow_networks=["127.0.0.1/32"],
        **extra,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common.add_redis_args(parser)
    parser.add_argument("--events", type=int, default=5000, help="deliveries per throughput run")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--latency-events", type=int, default=300)
    parser.add_argument("--latency-rate", type=float, default=20.0, help="events/s (idle)")
    parser.add_argument("--database-url", help="instead of a SQLite file per run")
    args = parser.parse_args()

    with common.redis_for(args) as url:
        print(common.machine(url))
        rows = []
        for run_no in range(args.runs):
            with tempfile.TemporaryDirectory() as tmp, common.scoped_prefix(url, "hooks") as pre:
                s = _settings(args, url, pre, Path(tmp))
                result = run(throughput_run(s, args.events, Path(tmp)))
                rows.append([run_no + 1, args.events, result["rate"], result["cpu_ms"]])
                assert result["unverified"] == 0, "a delivery failed signature verification"
        rows.append(
            [
                "median",
                args.events,
                common.median([r[2] for r in rows]),
                common.median([r[3] for r in rows]),
            ]
        )
        common.table(
            "(a) deliveries/s, one worker process (concurrency 10) -> local receiver",
            ["run", "deliveries", "deliveries/s", "worker CPU ms/delivery"],
            rows,
        )
        with tempfile.TemporaryDirectory() as tmp, common.scoped_prefix(url, "hooks") as pre:
            s = _settings(args, url, pre, Path(tmp))
            ms = run(latency_run(s, args.latency_events, args.latency_rate, Path(tmp)))
        common.table(
            f"(b) publish-to-receipt latency, idle, {args.latency_rate:g} events/s",
            ["events", "p50 ms", "p90 ms", "p99 ms", "max ms"],
            [
                [
                    len(ms),
                    common.percentile(ms, 50),
                    common.percentile(ms, 90),
                    common.percentile(ms, 99),
                    max(ms),
                ]
            ],
        )


if __name__ == "__main__":
    main()
