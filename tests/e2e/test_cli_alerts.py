"""`settler-jobs alerts list` shows what the evaluator stored, plus missing workers read live."""

from __future__ import annotations

import asyncio

from settler_jobs import heartbeat
from settler_jobs.alerts import evaluator as alerts
from settler_jobs.config import Settings
from settler_jobs.registry import default_registry
from tests.e2e.cli_runner import Cli
from tests.harness import system


def _store_alert_and_beat(settings: Settings) -> None:
    async def work() -> None:
        async with system(settings, default_registry(), start=False) as sys_:
            state = sys_.shared_state()
            info = heartbeat.WorkerInfo("w1", "h", 1, ("q",), 1, 0, 0, heartbeat.now_ms())
            await heartbeat.beat(state, settings.queue_prefix, info, 60)
            stuck = alerts.Condition("ActiveJobStuck", {"queue": "email"}, 4000, 1800, "stuck")
            await alerts.update(state, settings, [stuck], alerts.Notifier(settings, sys_.queue))

    asyncio.run(work())


def test_alerts_list_from_the_command_line(cli: Cli, settings: Settings) -> None:
    [missing] = cli.json("alerts", "list")
    assert missing["alert"] == "NoWorkerHeartbeat" and missing["value"] == 0
    assert missing["state"] == "firing"

    _store_alert_and_beat(settings)
    [stuck] = cli.json("alerts", "list")
    assert (stuck["alert"], stuck["labels"], stuck["value"]) == (
        "ActiveJobStuck",
        {"queue": "email"},
        4000,
    )
    assert stuck["since"] and stuck["last_seen"] and stuck["notified_at"] is None
    assert stuck["state"] == "pending"  # held for less than alert_for_s: nobody told yet
    table = cli("alerts", "list")
    assert (
        table.returncode == 0 and "ActiveJobStuck" in table.stdout and "queue=email" in table.stdout
    )
