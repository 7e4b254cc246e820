"""Data retention: delete throughput in bounded batches, and what a concurrent writer feels.

Seeds N expired webhook deliveries (free tier, one event and one attempt each), then runs
the `webhook-deliveries` and `webhook-events` retention targets while another task
commits one small row every 5 ms. Reports rows deleted per second and the writer's
commit latency during the run (the longest wait is bounded by one batch), next to the
same writer on an idle database.

    python bench/retention.py                          # SQLite file, 100,000 deliveries
    python bench/retention.py --rows 20000 --batch 500
    python bench/retention.py --database-url postgresql+asyncpg://postgres@127.0.0.1/bench
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

import common
from settler_jobs.config import Settings
from settler_jobs.retention.targets import (
    RetentionRegistry,
    default_targets,
    retention_run,
    run_retention,
)
from settler_jobs.storage.db import create_engine, session_factory
from settler_jobs.storage.migrate import upgrade_async
from settler_jobs.storage.webhook_tables import (
    TenantNotificationRow,
    WebhookAttemptRow,
    WebhookDeliveryRow,
    WebhookEndpointRow,
    WebhookEventRow,
)

Sessions = async_sessionmaker[AsyncSession]
NOW = datetime.now(UTC)
OLD = NOW - timedelta(days=400)


async def seed(sessions: Sessions, rows: int) -> None:
    tag = uuid.uuid4().hex[:8]
    async with sessions() as session, session.begin():
        await session.execute(
            insert(WebhookEndpointRow).values(
                id=f"ep{tag}",
                tenant_id="t1",
                url="https://example.com",
                secret_ciphertext="x",
                secret_hint="x",
                created_at=OLD,
                updated_at=OLD,
            )
        )
    for start in range(0, rows, 5000):
        ids = [f"{tag}{n:09d}" for n in range(start, min(rows, start + 5000))]
        async with sessions() as session, session.begin():
            await session.execute(
                insert(WebhookEventRow),
                [
                    dict(id=f"evt_{i}", tenant_id="t1", event_type="x", payload={}, created_at=OLD)
                    for i in ids
                ],
            )
            await session.execute(
                insert(WebhookDeliveryRow),
                [
                    dict(
                        id=f"msg_{i}",
                        tenant_id="t1",
                        endpoint_id=f"ep{tag}",
                        event_id=f"evt_{i}",
                        status="succeeded",
                        tier="free",
                        created_at=OLD,
                        updated_at=OLD,
                    )
                    for i in ids
                ],
            )
            await session.execute(
                insert(WebhookAttemptRow),
                [
                    dict(delivery_id=f"msg_{i}", attempt_no=1, started_at=OLD, latency_ms=1)
                    for i in ids
                ],
            )


async def writer(sessions: Sessions, stop: asyncio.Event, latencies: list[float]) -> None:
    while not stop.is_set():
        started = time.perf_counter()
        async with sessions() as session, session.begin():
            session.add(
                TenantNotificationRow(
                    tenant_id="t2", kind="bench", subject="s", body="b", created_at=NOW
                )
            )
        latencies.append((time.perf_counter() - started) * 1000)
        await asyncio.sleep(0.005)


async def idle_writer(sessions: Sessions, seconds: float) -> list[float]:
    stop, latencies = asyncio.Event(), list[float]()
    task = asyncio.create_task(writer(sessions, stop, latencies))
    await asyncio.sleep(seconds)
    stop.set()
    await task
    return latencies


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        url = args.database_url or f"sqlite+aiosqlite:///{Path(tmp) / 'bench.db'}"
        await upgrade_async(url)
        engine = create_engine(url)
        sessions = session_factory(engine)
        try:
            await seed(sessions, args.rows)
            idle = await idle_writer(sessions, 1.0)
            registry = RetentionRegistry()
            for target in default_targets():
                if target.name in ("webhook-deliveries", "webhook-events"):
                    registry.register(target)
            settings = Settings(retention_batch_size=args.batch, retention_max_batches=10**6)
            plan = retention_run(settings, sessions, None, NOW)
            stop, busy = asyncio.Event(), list[float]()
            task = asyncio.create_task(writer(sessions, stop, busy))
            started = time.perf_counter()
            report = await run_retention(plan, registry)
            elapsed = time.perf_counter() - started
            stop.set()
            await task
        finally:
            await engine.dispose()
    deleted = {t["target"]: t["deleted"] for t in report["targets"]}
    backend = "PostgreSQL" if args.database_url else "SQLite"
    print(f"{backend}, batch {args.batch}; load {os.getloadavg()[0]:.2f}, {os.cpu_count()} CPUs")
    common.table(
        "Retention run",
        ["deliveries deleted", "events deleted", "seconds", "deliveries/s"],
        [
            [
                deleted["webhook-deliveries"],
                deleted["webhook-events"],
                elapsed,
                deleted["webhook-deliveries"] / elapsed,
            ]
        ],
    )
    common.table(
        "Concurrent writer: commit latency (ms)",
        ["while", "commits", "p50", "p99", "max"],
        [
            ["idle", len(idle), common.median(idle), common.percentile(idle, 99), max(idle)],
            [
                "retention runs",
                len(busy),
                common.median(busy),
                common.percentile(busy, 99),
                max(busy),
            ],
        ],
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--database-url", help="PostgreSQL URL (default: a SQLite file)")
    asyncio.run(main(parser.parse_args()))
