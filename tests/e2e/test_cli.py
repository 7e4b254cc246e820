"""The `settler-jobs` CLI as users run it: `python -m settler_jobs ...` in a subprocess.

Every call gets a clean environment pointing at the test's Redis prefix, a data folder
and SQLite file under tmp_path, and no metrics port; it runs in tmp_path so that no
`.env` file of the checkout is read.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import redis
import typer.main

from settler_jobs import envelope
from settler_jobs.cli import main as cli_module
from settler_jobs.config import Settings
from settler_jobs.domain import PriorityClass, Tier, fair_step, new_job_id
from settler_jobs.registry import default_registry
from settler_jobs.storage.migrate import current_revision
from tests.e2e.cli_runner import Cli

INVALID_JOB_EXIT = 4
QUEUE_UNAVAILABLE_EXIT = 5
NOT_FOUND_EXIT = 3


@pytest.fixture
def redis_keys(settings: Settings) -> Iterator[Any]:
    """A function listing every Redis key under the test's prefix."""
    assert settings.redis_url is not None
    client = redis.Redis.from_url(settings.redis_url, decode_responses=True)

    def keys() -> list[str]:
        return sorted(client.scan_iter(match=f"{settings.queue_prefix}:*", count=1000))

    try:
        yield keys
    finally:
        client.close()


def _closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port  # nobody listens on it any more


def _no_traceback(result: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in result.stderr, result.stderr


def test_db_upgrade_migrates_the_database(cli: Cli, settings: Settings) -> None:
    assert "database is up to date" in cli.ok("db", "upgrade")
    assert current_revision(settings.effective_database_url) is not None
    assert "database is up to date" in cli.ok("db", "upgrade")  # again: nothing to do


def test_submitted_job_is_shown_by_job_show_and_status(cli: Cli) -> None:
    submitted = cli.json(
        "submit",
        "reconciliation",
        "--tenant",
        "t1",
        "--tier",
        "growth",
        "--data",
        '{"definitionId":"d1"}',
    )
    job_id = submitted["id"]
    assert re.fullmatch(r"j[A-Za-z0-9_-]{22}", job_id)
    assert submitted["queue"] == "reconciliation"
    assert submitted["state"] == "waiting"
    assert submitted["created"] is True
    assert submitted["tenantId"] == "t1"
    assert submitted["tier"] == "growth"
    assert submitted["priorityClass"] == "HIGH"  # the kind's default
    # A fresh tenant on a fresh lane: its first job's tag is one fair step.
    assert submitted["priority"] == fair_step(PriorityClass.HIGH, Tier.GROWTH)
    assert submitted["data"] == {"definitionId": "d1"}
    assert submitted["maxAttempts"] == 3

    shown = cli.json("job", "show", job_id)
    assert shown["id"] == job_id
    assert shown["state"] == "waiting"
    assert shown["tenantId"] == "t1"
    assert shown["data"] == {"definitionId": "d1"}
    assert shown["attemptsMade"] == 0
    assert shown["stacktrace"] == []
    assert cli.json("job", "show", job_id, "--tenant", "t1")["id"] == job_id

    hidden = cli("job", "show", job_id, "--tenant", "t2", "--json")
    assert hidden.returncode == NOT_FOUND_EXIT
    assert "not found" in hidden.stderr
    assert hidden.stdout == ""

    status = cli.json("status")
    by_queue = {row["queue"]: row for row in status}
    assert set(by_queue) == set(default_registry().queues())
    assert by_queue["reconciliation"]["counts"] == {
        "waiting": 1,
        "delayed": 0,
        "active": 0,
        "completed": 0,
        "failed": 0,
    }
    assert by_queue["reconciliation"]["oldest_waiting_ms"] >= 0
    assert all(
        sum(row["counts"].values()) == 0 and row["oldest_waiting_ms"] is None
        for name, row in by_queue.items()
        if name != "reconciliation"
    )


def test_idempotency_key_returns_the_same_job(cli: Cli) -> None:
    args = ("submit", "email-sending", "--tenant", "t1", "--tier", "pro")
    data = ("--data", '{"to":"ops@example.com","template":"welcome","data":{"name":"Ops"}}')
    first = cli.json(*args, *data, "--idempotency-key", "welcome-1")
    again = cli.json(*args, *data, "--idempotency-key", "welcome-1")
    assert first["created"] is True
    assert again["created"] is False
    assert again["id"] == first["id"]
    assert first["tier"] == "growth"  # pro is growth


def test_submit_reads_data_from_a_file(cli: Cli, tmp_path: Path) -> None:
    data = {"definitionId": "d1", "note": "zürich ✓", "runId": "r-7"}
    path = tmp_path / "job.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    job_id = cli.ok(
        "submit", "reconciliation", "--tenant", "t1", "--tier", "scale", "--data", f"@{path}"
    ).strip()
    assert cli.json("job", "show", job_id)["data"] == data


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["reconciliation", "--tier", "gold", "--data", "{}"],
            "unknown tier 'gold'; expected one of free, starter, growth, scale, enterprise",
        ),
        (
            ["reconciliation", "--tier", "growth", "--data", '{"adapterConfig": '],
            "--data is not valid JSON",
        ),
        (
            ["reconciliation", "--tier", "growth", "--data", "[1, 2]"],
            "--data must be a JSON object",
        ),
        (
            ["payroll", "--tier", "growth", "--data", "{}"],
            "unknown job kind 'payroll'; known kinds: cache-warming, data-retention, "
            "email-sending, export-generation, reconciliation, webhook-delivery, webhook-sweep",
        ),
        (
            ["email-sending", "--tier", "growth", "--data", '{"to": "x"}'],
            "invalid data for email-sending",
        ),
        (
            [
                "reconciliation",
                "--tier",
                "growth",
                "--data",
                '{"definitionId": "d", "tenantId": "t2"}',
            ],
            "job data may not set tenantId",
        ),
        (
            ["reconciliation", "--tier", "growth", "--priority", "urgent"],
            "unknown priority 'urgent'",
        ),
    ],
    ids=["tier", "json", "not-object", "kind", "payload", "reserved-key", "priority"],
)
def test_invalid_submissions_are_refused_and_nothing_is_enqueued(
    cli: Cli, redis_keys: Any, args: list[str], message: str
) -> None:
    result = cli("submit", args[0], "--tenant", "t1", *args[1:])
    assert result.returncode == INVALID_JOB_EXIT, result.stderr
    assert result.stderr.startswith("error: ")
    assert message in result.stderr
    assert result.stdout == ""
    _no_traceback(result)
    assert redis_keys() == []


def test_oversized_data_is_refused_naming_limit_and_size(cli: Cli, redis_keys: Any) -> None:
    limit = 256
    data = {"definitionId": "d1", "blob": "x" * 300}
    # The size of the stored data: the payload plus the reserved keys (job ids of
    # `submit` are always "job-" and 32 hex digits).
    stored = envelope.build(
        data,
        tenant_id="t1",
        tier=Tier.GROWTH,
        job_id=new_job_id(),  # every generated id has the same length
        priority=PriorityClass.HIGH,
        timeout_s=None,
    )
    size = len(json.dumps(stored, separators=(",", ":")).encode())

    result = cli(
        "submit",
        "reconciliation",
        "--tenant",
        "t1",
        "--tier",
        "growth",
        "--data",
        json.dumps(data),
        env={"SETTLER_MAX_PAYLOAD_BYTES": str(limit)},
    )
    assert result.returncode == INVALID_JOB_EXIT, result.stderr
    assert f"job data is {size} bytes, over the limit of {limit} bytes" in result.stderr
    _no_traceback(result)
    assert redis_keys() == []


def _command_paths() -> list[tuple[str, ...]]:
    def walk(command: Any, path: tuple[str, ...]) -> Iterator[tuple[str, ...]]:
        yield path
        children: dict[str, Any] = getattr(command, "commands", {})
        for name, child in children.items():
            yield from walk(child, (*path, name))

    return list(walk(typer.main.get_command(cli_module.app), ()))


def _summary(command_path: tuple[str, ...]) -> str:
    command: Any = typer.main.get_command(cli_module.app)
    for name in command_path:
        command = command.commands[name]
    return " ".join(str(command.help or "").split()).split(". ")[0][:40]


def test_help_works_for_every_command_and_subcommand(cli: Cli) -> None:
    paths = _command_paths()
    expected = {("submit",), ("worker",), ("up",), ("status",), ("job", "show")}
    assert expected | {("job", "list"), ("dlq", "retry"), ("db", "upgrade")} <= set(paths)
    # Help needs no Redis nor PostgreSQL: point them at a closed port.
    closed = _closed_port()
    env = {"REDIS_URL": f"redis://127.0.0.1:{closed}/0"}
    if cli.settings.queue_backend == "postgres":
        env["DATABASE_URL"] = f"postgresql+asyncpg://postgres@127.0.0.1:{closed}/settler"
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda path: cli(*path, "--help", env=env), paths))
    for path, result in zip(paths, results, strict=True):
        assert result.returncode == 0, f"{path}: {result.stderr}"
        usage = re.search(r"Usage: (.*)", result.stdout)
        assert usage is not None, f"{path}: {result.stdout}"
        assert " ".join(("settler_jobs", *path)) in usage.group(1)
        flat = " ".join(result.stdout.split())
        if path:
            assert _summary(path) in flat, f"{path}: {result.stdout}"
        assert "--help" in flat


def test_submit_fails_fast_with_exit_5_when_the_queue_is_unreachable(
    cli: Cli, tmp_path: Path
) -> None:
    if cli.settings.queue_backend == "postgres":  # the jobs live in the database
        env = {"DATABASE_URL": f"postgresql://postgres@127.0.0.1:{_closed_port()}/settler"}
        said = "error: PostgreSQL is unreachable"
    else:
        env = {"REDIS_URL": f"redis://127.0.0.1:{_closed_port()}/0"}
        said = "error: Redis is unreachable"
    started = time.monotonic()
    result = cli(
        "submit", "reconciliation", "--tenant", "t1", "--tier", "growth", "--json", env=env
    )
    took = time.monotonic() - started
    assert result.returncode == QUEUE_UNAVAILABLE_EXIT, result.stderr[-2000:]
    assert result.stderr.startswith(said), result.stderr[-2000:]
    assert "Connection refused" in result.stderr
    assert result.stdout == ""
    _no_traceback(result)
    # Fails fast rather than hangs: a hang waits out retries (tens of seconds). The bound
    # is loose because interpreter start-up on a loaded 2-vCPU machine alone took 3 s.
    assert took < 10.0, f"took {took:.1f}s"


def test_submit_with_a_missing_data_file_says_so(cli: Cli, tmp_path: Path) -> None:
    missing = tmp_path / "missing.json"
    result = cli(
        "submit", "reconciliation", "--tenant", "t1", "--tier", "growth", "--data", f"@{missing}"
    )
    assert result.returncode == INVALID_JOB_EXIT
    assert str(missing) in result.stderr
    _no_traceback(result)
