"""`settler-jobs email ...` and `settler-jobs worker` as separate processes: the file
outbox (the embedded default) and SMTP to a real aiosmtpd server in this process.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.cli_runner import Cli
from tests.helpers import eventually
from tests.smtp_server import smtp_server

TENANT = "acme"
INVALID_EXIT, NOT_FOUND_EXIT = 4, 3


class EmailWorker:
    """One CLI worker process serving the email-sending kind; stopped at the end."""

    def __init__(self, cli: Cli, tmp_path: Path) -> None:
        self._cli, self._log = cli, tmp_path / "worker.log"
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, env: dict[str, str] | None = None) -> None:
        with self._log.open("wb") as out:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "settler_jobs", "worker", "--kinds", "email-sending"],
                cwd=self._cli.cwd,
                env=self._cli.env | {"SETTLER_SHUTDOWN_GRACE_S": "5"} | (env or {}),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def log(self) -> str:
        return self._log.read_text(errors="replace") if self._log.exists() else ""

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=5)


@pytest.fixture
def worker(cli: Cli, tmp_path: Path) -> Iterator[EmailWorker]:
    process = EmailWorker(cli, tmp_path)
    try:
        yield process
    finally:
        process.stop()


async def _json(cli: Cli, *args: str, env: dict[str, str] | None = None) -> Any:
    result = await asyncio.to_thread(cli, *args, "--json", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout)


async def _all_sent(cli: Cli, key: str, count: int) -> list[dict[str, Any]]:
    async def probe() -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = await _json(cli, "email", "status", "--tenant", TENANT,
                                                  "--key", key)  # fmt: skip
        return found

    return await eventually(
        probe,
        lambda rows: len(rows) == count and all(r["status"] == "sent" for r in rows),
        timeout_s=40,
    )


async def test_send_to_the_outbox_and_read_it_back(cli: Cli, worker: EmailWorker) -> None:
    cli.ok("db", "upgrade")
    worker.start()
    sent = await _json(
        cli, "email", "send", "--tenant", TENANT, "--to", "ann@example.com",
        "--to", "bob@example.org", "--template", "welcome", "--data", '{"name": "<Ann>"}',
        "--tier", "growth", "--idempotency-key", "welcome-ann",
    )  # fmt: skip
    assert sent["recipients"] == ["ann@example.com", "bob@example.org"] and sent["created"]
    job = await _json(cli, "job", "show", sent["job_id"])
    assert job["tier"] == "growth" and job["kind"] == "email-sending"

    await _all_sent(cli, "welcome-ann", 2)
    assert await _json(cli, "email", "status", "--tenant", "globex", "--key", "welcome-ann") == []
    listed = await _json(cli, "email", "outbox")
    assert sorted(e["to"] for e in listed) == ["ann@example.com", "bob@example.org"]
    assert {e["subject"] for e in listed} == {"Welcome to Settler, <Ann>"}
    table = cli.ok("email", "outbox", "--limit", "1")
    assert "Welcome to Settler" in table and len([e for e in listed if e["name"] in table]) == 1

    shown = cli.ok("email", "outbox", "show", listed[0]["name"])
    assert "Message-ID: <" in shown and "multipart/alternative" in shown
    assert "&lt;Ann&gt;" in shown and "<Ann>!" in shown  # HTML part escaped, text part verbatim


async def test_bad_input_exits_4_and_unknown_outbox_files_3(cli: Cli) -> None:
    base = ("email", "send", "--tenant", TENANT, "--template", "welcome")
    for extra, message in [
        (("--to", "ann@example.com\r\nBcc: x@example.com", "--data", '{"name": "A"}'),
         "header injection"),
        (("--to", "ann@example.com", "--data", "{}"), "needs data keys: name"),
        (("--to", "not-an-address", "--data", '{"name": "A"}'), "not a usable email address"),
    ]:  # fmt: skip
        result = await asyncio.to_thread(cli, *base, *extra)
        assert result.returncode == INVALID_EXIT, result.stderr
        assert message in result.stderr
    unknown = await asyncio.to_thread(
        cli, "email", "send", "--tenant", TENANT, "--to", "a@example.com", "--template", "nope"
    )
    assert unknown.returncode == INVALID_EXIT and "known templates: " in unknown.stderr
    for name in ("../settler.db", "0000000000.eml"):
        missing = await asyncio.to_thread(cli, "email", "outbox", "show", name)
        assert missing.returncode == NOT_FOUND_EXIT and "no email" in missing.stderr


async def test_send_through_smtp_with_a_cli_worker(cli: Cli, worker: EmailWorker) -> None:
    cli.ok("db", "upgrade")
    async with smtp_server() as server:
        worker.start(
            {
                "SETTLER_EMAIL_PROVIDER": "smtp",
                "SETTLER_SMTP_HOST": server.host,
                "SETTLER_SMTP_PORT": str(server.port),
                "SETTLER_SMTP_STARTTLS": "false",
                "SETTLER_SMTP_FROM": "Acme Billing <billing@example.com>",
            }
        )
        await _json(
            cli, "email", "send", "--tenant", TENANT, "--to", "ann@example.com",
            "--template", "reconciliation_completed", "--idempotency-key", "rec-1",
            "--data", '{"run_id": "r-9", "matched": 41, "unmatched": 1}',
        )  # fmt: skip
        try:
            (received,) = await server.recorder.wait_for(1, timeout=40)
        except TimeoutError:
            pytest.fail(f"no email arrived; worker log:\n{worker.log()}")
        await _all_sent(cli, "rec-1", 1)
    message = received.message
    assert received.mail_from == "billing@example.com"
    assert message["Subject"] == "Reconciliation r-9 completed: 41 matched, 1 unmatched"
    assert message["From"] == "Acme Billing <billing@example.com>"
