"""`settler-jobs exports ...` against a `settler-jobs worker` process: the audit rows that
the webhook commands write are exported to CSV and PDF, then downloaded.
"""

from __future__ import annotations

import asyncio
import csv
import hashlib
import io
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pypdf import PdfReader

from tests.e2e.cli_runner import Cli
from tests.helpers import eventually

ALLOW_LOCAL = {
    "SETTLER_OUTBOUND_ALLOW_HTTP": "true",
    "SETTLER_OUTBOUND_ALLOW_NETWORKS": '["127.0.0.1/32"]',
}
URL = "http://127.0.0.1:9/hook"


@pytest.fixture
def worker(cli: Cli, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    log = tmp_path / "worker.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "settler_jobs", "worker", "--kinds", "export-generation"],
            cwd=tmp_path,
            env=cli.env | {"SETTLER_SHUTDOWN_GRACE_S": "5"},
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


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
