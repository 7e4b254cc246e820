"""The system jobs from the command line: schedules, retention runs, KPI cache."""

from __future__ import annotations

import asyncio

from settler_jobs.config import Settings
from settler_jobs.registry import default_registry
from settler_jobs.scheduling import plan as schedules
from tests.e2e.cli_runner import Cli
from tests.harness import system

BAD_INPUT_EXIT = 4


def _register(settings: Settings) -> None:
    async def work() -> None:
        registry = default_registry()
        async with system(settings, registry, start=False) as sys_:
            await schedules.register(sys_.queue, settings, registry)

    asyncio.run(work())


def test_schedules_retention_and_cache_from_the_command_line(cli: Cli, settings: Settings) -> None:
    before = {row["id"]: row for row in cli.json("schedules", "list")}
    assert set(before) == {"data-retention", "webhook-sweep", "cache-warming"}
    assert before["data-retention"]["registered"] is False
    assert before["data-retention"]["missed"] == (
        "not registered: no worker serving this kind has started"
    )

    _register(settings)
    listed = {row["id"]: row for row in cli.json("schedules", "list")}
    retention = listed["data-retention"]
    assert retention["registered"] is True and retention["pattern"] == "0 2 * * *"
    assert retention["nextRun"].endswith("T02:00:00+00:00")
    assert retention["missed"] is None and retention["lastRun"] is None
    table = cli.ok("schedules", "list")
    assert "*/5 * * * *" in table and "data-retention" in table

    dry = cli.json("retention", "run", "--dry-run")
    assert dry["dryRun"] is True and dry["deleted"] == 0
    assert {t["target"] for t in dry["targets"]} >= {
        "dlq-resolved",
        "webhook-deliveries",
        "bullmq-finished-jobs",
    }
    assert "would delete" in cli.ok("retention", "run", "--dry-run")
    assert cli.json("retention", "run")["dryRun"] is False
    runs = cli.json("schedules", "runs", "data-retention")
    assert [(r["trigger"], r["status"]) for r in runs] == [("cli", "succeeded")] * 3
    assert runs[-1]["report"]["dryRun"] is True
    after = {row["id"]: row for row in cli.json("schedules", "list")}
    assert after["data-retention"]["lastStatus"] == "succeeded"

    assert cli.json("cache", "warm", "--tenant", "t1")["tenants"] == 1
    shown = cli.json("cache", "show", "--tenant", "t1")
    assert shown["kpi"]["tenantId"] == "t1" and shown["recent"]["jobs"] == []
    assert "failure rate lastDay: -" in cli.ok("cache", "show", "--tenant", "t1")
    assert cli("cache", "show", "--tenant", "bad id!").returncode == BAD_INPUT_EXIT
