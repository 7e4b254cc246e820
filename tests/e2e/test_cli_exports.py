"""`settler-jobs exports ...` against `settler-jobs worker` processes: the audit rows that
the webhook commands write are exported to CSV and PDF, then downloaded; a worker killed
with SIGKILL in the middle of writing an export leaves no file, and the export finishes
on the next worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import hashlib
import io
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from pypdf import PdfReader

from settler_jobs.config import Settings
from tests.e2e.cli_runner import Cli
from tests.helpers import eventually

ALLOW_LOCAL = {
    "SETTLER_OUTBOUND_ALLOW_HTTP": "true",
    "SETTLER_OUTBOUND_ALLOW_NETWORKS": '["127.0.0.1/32"]',
}
URL = "http://127.0.0.1:9/hook"
ROWS = 300_000


def _start_worker(
    cli: Cli, tmp_path: Path, name: str, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    with (tmp_path / f"worker-{name}.log").open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "settler_jobs", "worker", "--kinds", "export-generation"],
            cwd=tmp_path,
            env=cli.env | {"SETTLER_SHUTDOWN_GRACE_S": "5"} | (env or {}),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


@pytest.fixture
def worker(cli: Cli, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    proc = _start_worker(cli, tmp_path, "main")
    try:
        yield proc
    finally:
        _stop(proc)


def _hooks(cli: Cli, *args: str) -> Any:
    return cli.json("webhooks", *args, env=ALLOW_LOCAL)


async def _finished(cli: Cli, export_id: str) -> Any:
    async def probe() -> Any:
        return await asyncio.to_thread(cli.json, "exports", "show", export_id, "--tenant", "acme")

    return await eventually(
        probe, lambda e: e["status"] in ("succeeded", "failed"), timeout_s=60, interval_s=0.3
    )


async def test_export_audit_rows_to_csv_and_pdf_and_download_them(
    cli: Cli, tmp_path: Path, worker: subprocess.Popen[bytes]
) -> None:
    first = _hooks(cli, "endpoints", "create", "--tenant", "acme", "--url", URL)
    _hooks(cli, "endpoints", "create", "--tenant", "other", "--url", URL)
    _hooks(cli, "endpoints", "disable", first["id"], "--tenant", "acme", "--reason", "=cmd")
    cli.ok("webhooks", "endpoints", "delete", first["id"], "--tenant", "acme", "--yes")

    export_id = cli.ok(
        "exports", "create", "--tenant", "acme", "--dataset", "audit_log", "--format", "csv"
    ).strip()
    done = await _finished(cli, export_id)
    assert done["status"] == "succeeded", done["error"]

    target = tmp_path / "audit.csv"
    cli.ok("exports", "download", export_id, "--tenant", "acme", "--output", str(target))
    data = target.read_bytes()
    assert hashlib.sha256(data).hexdigest() == done["sha256"] and len(data) == done["size_bytes"]
    rows = list(csv.DictReader(io.StringIO(data.decode("utf-8-sig"), newline="")))
    assert [(r["action"], r["target_id"]) for r in rows] == [
        ("webhook_endpoint.create", first["id"]),
        ("webhook_endpoint.disable", first["id"]),
        ("webhook_endpoint.delete", first["id"]),
    ]
    assert {r["actor"] for r in rows} == {"cli"}
    piped = subprocess.run(
        [
            sys.executable,
            "-m",
            "settler_jobs",
            "exports",
            "download",
            export_id,
            "--tenant",
            "acme",
            "-o",
            "-",
        ],
        cwd=tmp_path,
        env=cli.env,
        capture_output=True,
        timeout=60,
        check=True,
    )
    assert piped.stdout == data

    pdf_id = cli.ok(
        "exports",
        "create",
        "--tenant",
        "acme",
        "--dataset",
        "audit_log",
        "--format",
        "pdf",
        "--filters",
        '{"action": "webhook_endpoint.create"}',
    ).strip()
    assert (await _finished(cli, pdf_id))["status"] == "succeeded"
    pdf_path = tmp_path / "audit.pdf"
    cli.ok("exports", "download", pdf_id, "--tenant", "acme", "-o", str(pdf_path))
    text = PdfReader(pdf_path).pages[0].extract_text()
    assert first["id"] in text and "Page 1 of 1" in text and "Tenant: acme" in text

    listed = cli.json("exports", "list", "--tenant", "acme")
    assert {e["id"] for e in listed} == {export_id, pdf_id}
    assert cli.json("exports", "list", "--tenant", "other") == []
    assert cli("exports", "show", export_id, "--tenant", "other").returncode == 3
    assert cli("exports", "download", export_id, "--tenant", "other", "-o", "-").returncode == 3
    bad = cli("exports", "create", "--tenant", "acme", "--dataset", "nope")
    assert bad.returncode == 4 and "unknown dataset" in bad.stderr


def _seed_audit_rows(settings: Settings, count: int) -> None:
    """`count` audit rows of tenant acme, straight into the database (SQLite or PostgreSQL)."""
    base = datetime(2026, 1, 1, tzinfo=UTC)
    columns = "actor, tenant_id, action, target_type, target_id, details, created_at"
    if settings.effective_database_url.startswith("sqlite"):
        path = settings.effective_database_url.split("///", 1)[1]
        with contextlib.closing(sqlite3.connect(path)) as lite, lite:
            lite.executemany(
                f"INSERT INTO audit_logs ({columns}) VALUES ('seed', 'acme', 'bulk', 'thing', ?,"
                " '{}', ?)",
                (
                    (f"t-{i}", (base + timedelta(microseconds=i)).strftime("%Y-%m-%d %H:%M:%S.%f"))
                    for i in range(count)
                ),
            )
        return
    with (
        psycopg.connect(settings.queue_dsn) as server,
        server.cursor().copy(f"COPY audit_logs ({columns}) FROM STDIN") as copy,
    ):
        for i in range(count):
            created = base + timedelta(microseconds=i)
            copy.write_row(("seed", "acme", "bulk", "thing", f"t-{i}", "{}", created))


async def test_a_worker_killed_mid_export_leaves_no_file_and_the_export_completes_later(
    cli: Cli, tmp_path: Path, settings: Settings
) -> None:
    cli.ok("db", "upgrade")
    _seed_audit_rows(settings, ROWS)
    slow = {
        "SETTLER_EXPORT_BATCH_ROWS": "100",
        "SETTLER_LOCK_DURATION_MS": "2000",
        "SETTLER_STALLED_INTERVAL_MS": "1000",
        "SETTLER_MAX_STALLED_COUNT": "2",
    }
    export_id = cli.ok("exports", "create", "--tenant", "acme", "--dataset", "audit_log")
    # Started after the request, so the test is watching when the file is being written.
    first = _start_worker(cli, tmp_path, "first", slow)
    try:
        folder = settings.files_dir / "exports" / "acme"

        async def temp_files() -> list[Path]:
            return list(folder.glob(".tmp-*")) if folder.is_dir() else []

        await eventually(temp_files, bool, timeout_s=60, interval_s=0.01)
        first.kill()
        first.wait(timeout=10)
        final = folder / f"{export_id.strip()}.csv"
        assert not final.exists()
        assert cli.json("exports", "show", export_id.strip(), "--tenant", "acme")["status"] in (
            "running",
            "pending",
        )
    finally:
        _stop(first)
    second = _start_worker(cli, tmp_path, "second", slow | {"SETTLER_EXPORT_BATCH_ROWS": "5000"})
    try:
        done = await _finished(cli, export_id.strip())
    finally:
        _stop(second)
    assert done["status"] == "succeeded" and done["row_count"] == ROWS
    data = final.read_bytes()
    assert hashlib.sha256(data).hexdigest() == done["sha256"]
    assert data.count(b"\r\n") == ROWS + 1
