"""`settler-jobs alerts list` shows what the evaluator stored, plus missing workers read live."""

from __future__ import annotations

import asyncio

from settler_jobs import heartbeat
from settler_jobs.alerts import evaluator as alerts
from settler_jobs.config import Settings
from settler_jobs.queue import JobQueue
from settler_jobs.redis_server import redis_client
from settler_jobs.registry import default_registry
from settler_jobs.shared_state import RedisState
from tests.e2e.cli_runner import Cli


def _store_alert_and_beat(settings: Settings) -> None:
    async def work() -> None:
        assert settings.redis_url is not None
        queue = JobQueue(redis_client(settings.redis_url, settings), default_registry(), settings)
        try:
            client = RedisState(queue.client)
            info = heartbeat.WorkerInfo("w1", "h", 1, ("q",), 1, 0, 0, heartbeat.now_ms())
            await heartbeat.beat(client, settings.queue_prefix, info, 60)
            stuck = alerts.Condition("ActiveJobStuck", {"queue": "email"}, 4000, 1800, "stuck")
            await alerts.update(client, settings, [stuck], alerts.Notifier(settings, queue))
        finally:
            await queue.close()

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
