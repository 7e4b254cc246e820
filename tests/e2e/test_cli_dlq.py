"""Dead-letter triage through the CLI: list, show, note, resolve, retry with edited data."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from settler_jobs.config import Settings
from settler_jobs.dlq import store as dlq
from settler_jobs.storage.db import create_engine, session_factory
from tests.e2e.cli_runner import Cli

NOT_FOUND_EXIT = 3
INVALID_STATE_EXIT = 6


def _dead_letter(settings: Settings, *, job_id: str, tenant: str) -> str:
    async def insert() -> str:
        engine = create_engine(settings.effective_database_url)
        try:
            async with session_factory(engine)() as session, session.begin():
                now = datetime.now(UTC)
                entry = await dlq.record_failure(
                    session,
                    dlq.FailureRecord(
                        queue="email-sending",
                        kind="email-sending",
                        job_id=job_id,
                        tenant_id=tenant,
                        tier="growth",
                        payload={"to": "x@example.com", "template": "welcome", "apiKey": "k-123"},
                        error_type="SMTPError",
                        error_message="550 mailbox unavailable",
                        stacktrace="Traceback ...",
                        attempts=3,
                        failed_at_ms=1,
                        first_failed_at=now,
                        last_failed_at=now,
                    ),
                    now,
                )
            assert entry is not None
            return entry.id
        finally:
            await engine.dispose()

    return asyncio.run(insert())


def test_dlq_triage_from_the_command_line(cli: Cli, settings: Settings) -> None:
    cli.ok("db", "upgrade")
    first = _dead_letter(settings, job_id="jdead1", tenant="t1")
    second = _dead_letter(settings, job_id="jdead2", tenant="t2")

    listed = cli.json("dlq", "list")
    assert {e["id"] for e in listed} == {first, second}
    assert [e["id"] for e in cli.json("dlq", "list", "--tenant", "t1")] == [first]
    shown = cli.json("dlq", "show", first)
    assert shown["payload"]["apiKey"] == "[REDACTED]" and shown["error_type"] == "SMTPError"
    assert "k-123" not in cli.ok("dlq", "show", first)
    assert cli("dlq", "show", first, "--tenant", "t2").returncode == NOT_FOUND_EXIT

    noted = cli.json("dlq", "note", first, "--note", "asked the customer", "--actor", "ana")
    assert "asked the customer" in noted["notes"] and noted["status"] == "open"

    retried = cli.json(
        "dlq",
        "retry",
        first,
        "--data",
        '{"to": "y@example.com", "template": "welcome", "data": {"name": "Y"}}',
    )
    assert retried["status"] == "retried"
    job = cli.json("job", "show", retried["jobId"])
    assert (job["tenantId"], job["data"]["to"]) == ("t1", "y@example.com")
    assert cli("dlq", "retry", first, "--data", "{}").returncode == INVALID_STATE_EXIT

    resolved = cli.json("dlq", "resolve", second, "--note", "duplicate", "--actor", "ana")
    assert resolved["status"] == "resolved"
    assert cli.json("dlq", "list", "--status", "open") == []
