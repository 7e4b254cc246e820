"""Export generation: a 1,000,000-row CSV and a 10,000-row PDF, each by a real worker process.

Rows are audit-log rows of one tenant (plus 10 % of another tenant's, which must stay
out), inserted with one `executemany` (SQLite) or COPY (PostgreSQL). Each case starts a
fresh `python -m settler_jobs worker --kinds export-generation`, warms it up with a
10-row export, then requests the big one through `Exports.create_export`. Reported:
end to end (create -> record succeeded, polled every 50 ms), the job's own run time
(BullMQ processedOn -> finishedOn), the worker's CPU seconds meanwhile (a steadier figure
on a shared machine), and the worker's peak RSS (VmHWM of the process,
which covers the whole life of the process) and its RSS before the export.

    python bench/exports.py                         # SQLite, 1M CSV + 10k PDF
    python bench/exports.py --csv-rows 200000 --pdf-rows 2000
    python bench/exports.py --database-url postgresql+asyncpg://postgres@127.0.0.1/bench
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import common
from settler_jobs.cli.serve import run
from settler_jobs.config import Settings
from settler_jobs.exports.service import Exports
from settler_jobs.exports.store import ExportStatus
from settler_jobs.storage.migrate import upgrade
from settler_jobs.wiring import open_services

T0 = datetime(2026, 1, 1, tzinfo=UTC)
COLUMNS = ("actor", "tenant_id", "action", "target_type", "target_id", "details", "created_at")


def _rows(tenant: str, count: int, offset: int) -> list[tuple[Any, ...]]:
    return [
        (
            f"user{i % 50}@example.com",
            tenant,
            ("invoice.paid", "ledger.sync", "=SUM(A1)", "export.create")[i % 4],
            "invoice",
            f"inv_{offset + i:09d}",
            json.dumps({"amount": i % 10_000, "note": "Zürich ½"}),
            T0 + timedelta(milliseconds=offset + i),
        )
        for i in range(count)
    ]


def insert_sqlite(path: str, tenant: str, count: int, offset: int) -> None:
    connection = sqlite3.connect(path)
    try:
        stamp = "%Y-%m-%d %H:%M:%S.%f"  # how SQLAlchemy stores a naive UTC datetime
        values = [(*r[:6], r[6].strftime(stamp)) for r in _rows(tenant, count, offset)]
        with connection:
            connection.executemany(
                f"INSERT INTO audit_logs ({', '.join(COLUMNS)}) VALUES (?, ?, ?, ?, ?, ?, ?)",
                values,
            )
    finally:
        connection.close()


async def insert_postgres(url: str, tenant: str, count: int, offset: int) -> None:
    import asyncpg

    connection = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        if offset == 0:  # the first seed: rows of an earlier run would be exported too
            await connection.execute("TRUNCATE audit_logs")
        await connection.copy_records_to_table(
            "audit_logs", records=_rows(tenant, count, offset), columns=list(COLUMNS)
        )
        # As autovacuum would soon: without statistics the planner sorts whole tables.
        await connection.execute("ANALYZE audit_logs")
    finally:
        await connection.close()


def seed(settings: Settings, tenant: str, count: int, offset: int) -> float:
    started = time.perf_counter()
    url = settings.effective_database_url
    if url.startswith("sqlite"):
        insert_sqlite(url.split("///", 1)[1], tenant, count, offset)
    else:
        asyncio.run(insert_postgres(url, tenant, count, offset))
    return time.perf_counter() - started


def _status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def worker_env(settings: Settings) -> dict[str, str]:
    assert settings.redis_url is not None
    keep = {k: v for k, v in os.environ.items() if not k.startswith("SETTLER_")}
    return keep | {
        "REDIS_URL": settings.redis_url,
        "DATABASE_URL": settings.effective_database_url,
        "SETTLER_DATA_DIR": str(settings.data_dir),
        "SETTLER_QUEUE_PREFIX": settings.queue_prefix,
        "SETTLER_METRICS_PORT": "0",
        "SETTLER_EXPORT_PDF_MAX_ROWS": "1000000",
        "SETTLER_LOG_LEVEL": "WARNING",
    }


async def _run_export(
    exports: Exports, services: Any, tenant: str, fmt: str
) -> tuple[float, float, Any]:
    started = time.perf_counter()
    export = await exports.create_export(tenant, "audit_log", fmt)
    while True:
        export = await exports.get_export(tenant, export.id)
        if export.status in (ExportStatus.SUCCEEDED, ExportStatus.FAILED):
            break
        await asyncio.sleep(0.05)
    elapsed = time.perf_counter() - started
    if export.status is not ExportStatus.SUCCEEDED:
        raise SystemExit(f"export failed: {export.error}")
    assert export.job_id is not None
    job = await services.queue.get(export.job_id, tenant_id=tenant)
    job_s = (job.finished_at_ms - job.processed_at_ms) / 1000
    return elapsed, job_s, export


async def one_case(settings: Settings, tenant: str, fmt: str, tmp: Path) -> dict[str, Any]:
    log = tmp / f"worker-{fmt}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "settler_jobs", "worker", "--kinds", "export-generation"],
            env=worker_env(settings),
            cwd=tmp,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        async with open_services(settings) as services:
            exports = services.exports
            await _run_export(exports, services, "warmup", fmt)  # imports, connections, font
            rss_before = _status_kb(proc.pid, "VmRSS")
            load = os.getloadavg()[0]
            cpu_before = _cpu_s(proc.pid)
            elapsed, job_s, export = await _run_export(exports, services, tenant, fmt)
            cpu = _cpu_s(proc.pid) - cpu_before
            peak = _status_kb(proc.pid, "VmHWM")
    finally:
        proc.terminate()
        proc.wait(30)
    return {
        "format": fmt,
        "rows": export.row_count,
        "bytes": export.size_bytes,
        "end_to_end_s": elapsed,
        "job_s": job_s,
        "cpu_s": cpu,
        "rss_before_mb": rss_before / 1024,
        "peak_rss_mb": peak / 1024,
        "load": load,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    common.add_redis_args(parser)
    parser.add_argument("--csv-rows", type=int, default=1_000_000)
    parser.add_argument("--pdf-rows", type=int, default=10_000)
    parser.add_argument("--database-url", help="PostgreSQL database to use (emptied tables)")
    args = parser.parse_args()
    with (
        common.redis_for(args) as url,
        common.scoped_prefix(url, "exports") as prefix,
        tempfile.TemporaryDirectory() as tmp_name,
    ):
        tmp = Path(tmp_name)
        overrides = {"database_url": args.database_url} if args.database_url else {}
        settings = common.settings(url, prefix, tmp / "data", **overrides)
        settings.data_dir.mkdir(parents=True)
        upgrade(settings.effective_database_url)
        timings = [
            ("csv tenant", seed(settings, "csv", args.csv_rows, 0)),
            ("other tenant", seed(settings, "noise", args.csv_rows // 10, args.csv_rows)),
            ("pdf tenant", seed(settings, "pdf", args.pdf_rows, 2 * args.csv_rows)),
            ("warm-up rows", seed(settings, "warmup", 10, 3 * args.csv_rows)),
        ]
        print(f"\nMachine: {common.machine(url)}")
        print(f"Database: {'SQLite file' if not args.database_url else 'PostgreSQL'}")
        common.table("Seeding", ["rows of", "seconds"], timings)
        results = []
        for tenant in ("csv", "pdf"):
            results.append(run(one_case(settings, tenant, tenant, tmp)))
            print(results[-1], flush=True)
        common.table(
            "Export generation (one worker process)",
            [
                "format",
                "rows",
                "MB",
                "end to end s",
                "job s",
                "worker CPU s",
                "RSS before MB",
                "peak RSS MB",
                "load",
            ],
            [
                [
                    r["format"],
                    r["rows"],
                    f"{r['bytes'] / 1e6:.1f}",
                    r["end_to_end_s"],
                    r["job_s"],
                    r["cpu_s"],
                    f"{r['rss_before_mb']:.0f}",
                    f"{r['peak_rss_mb']:.0f}",
                    r["load"],
                ]
                for r in results
            ],
        )


if __name__ == "__main__":
    main()
