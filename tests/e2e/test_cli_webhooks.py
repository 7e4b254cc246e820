"""`settler-jobs webhooks ...` and `settler-jobs worker` as separate processes, against a
real loopback receiver in this process that verifies every signature.

The worker is the production CLI worker; locks last 2 s and the stalled check runs every
second, so a killed worker's delivery comes back within seconds.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from settler_jobs.config import Settings
from tests.e2e.cli_runner import Cli
from tests.helpers import eventually
from tests.webhook_receiver import WebhookReceiver

TENANT = "acme"
ALLOW_LOCAL = {
    "SETTLER_OUTBOUND_ALLOW_HTTP": "true",
    "SETTLER_OUTBOUND_ALLOW_NETWORKS": '["127.0.0.1/32"]',
}
WORKER_ENV = ALLOW_LOCAL | {
    "SETTLER_LOCK_DURATION_MS": "2000",
    "SETTLER_STALLED_INTERVAL_MS": "1000",
    "SETTLER_MAX_STALLED_COUNT": "2",
    "SETTLER_SHUTDOWN_GRACE_S": "5",
    "SETTLER_WEBHOOK_RETRY_BASE_S": "0.2",
    "SETTLER_WEBHOOK_DEADLINE_S": "30",
    "SETTLER_LOG_LEVEL": "DEBUG",
}


class Hold:
    """A route that keeps the first request unanswered until released, then answers 200."""

    def __init__(self) -> None:
        self.release = asyncio.Event()

    async def __call__(self, receiver: WebhookReceiver, writer: asyncio.StreamWriter) -> None:
        if len(receiver.seen) == 1:
            await self.release.wait()
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        await writer.drain()


@pytest.fixture
async def receiver() -> AsyncIterator[WebhookReceiver]:
    hold = Hold()
    async with WebhookReceiver(routes={"/held": hold}) as server:
        try:
            yield server
        finally:
            hold.release.set()


class Fleet:
    """CLI worker processes for one test; whatever is left is killed at the end."""

    def __init__(self, cli: Cli, tmp_path: Path) -> None:
        self._cli, self._dir = cli, tmp_path
        self.procs: list[tuple[subprocess.Popen[bytes], Path]] = []

    def start(self) -> subprocess.Popen[bytes]:
        log = self._dir / f"worker-{len(self.procs)}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "settler_jobs", "worker", "--kinds", "webhook-delivery"],
                cwd=self._dir,
                env=self._cli.env | WORKER_ENV,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.procs.append((proc, log))
        return proc

    def logs(self) -> str:
        return "".join(log.read_text(errors="replace") for _, log in self.procs)

    def close(self) -> None:
        for proc, _ in self.procs:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=5)


@pytest.fixture
def fleet(cli: Cli, tmp_path: Path) -> Iterator[Fleet]:
    workers = Fleet(cli, tmp_path)
    try:
        yield workers
    finally:
        workers.close()


def _hooks(cli: Cli, *args: str) -> subprocess.CompletedProcess[str]:
    return cli("webhooks", *args, env=ALLOW_LOCAL)


def _json(cli: Cli, *args: str) -> Any:
    result = _hooks(cli, *args, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


async def _status(cli: Cli, delivery_id: str, wanted: str) -> Any:
    async def probe() -> Any:
        return await asyncio.to_thread(
            _json, cli, "deliveries", "show", delivery_id, "--tenant", TENANT
        )

    return await eventually(probe, lambda d: d["delivery"]["status"] == wanted, timeout_s=40)


async def test_endpoint_lifecycle_through_the_cli(
    cli: Cli, receiver: WebhookReceiver, fleet: Fleet
) -> None:
    created = _json(
        cli, "endpoints", "create", "--tenant", TENANT, "--url", receiver.url(), "--event", "a.b"
    )
    secret, endpoint_id = created["secret"], created["id"]
    assert secret.startswith("whsec_") and created["secret_hint"] != secret
    receiver.secrets.append(secret)
    listed = _json(cli, "endpoints", "list", "--tenant", TENANT)
    assert [e["id"] for e in listed] == [endpoint_id]
    assert secret not in json.dumps(listed)
    assert _json(cli, "endpoints", "list", "--tenant", "globex") == []
    other = _hooks(cli, "endpoints", "show", endpoint_id, "--tenant", "globex")
    assert other.returncode == 3 and "no webhook endpoint" in other.stderr

    updated = _json(cli, "endpoints", "update", endpoint_id, "--tenant", TENANT, "--all-events")
    assert updated["event_types"] is None
    fleet.start()
    tested = _json(cli, "endpoints", "test", endpoint_id, "--tenant", TENANT)
    delivery_id = tested["id"]
    shown = await _status(cli, delivery_id, "succeeded")
    (seen,) = receiver.seen
    assert (
        seen.verified and seen.webhook_id == delivery_id and seen.json()["type"] == "webhook.test"
    )
    assert shown["attempts"][0]["status_code"] == 200

    rotated = _json(cli, "endpoints", "rotate-secret", endpoint_id, "--tenant", TENANT)
    new_secret = rotated["secret"]
    assert new_secret != secret
    receiver.secrets.append(new_secret)
    published = _json(
        cli, "publish", "--tenant", TENANT, "--type", "invoice.paid", "--data", '{"n": 1}'
    )
    (second,) = published["deliveries"]
    await _status(cli, second, "succeeded")
    assert receiver.seen[-1].verified_by == (0, 1)  # old and new secret both sign

    disabled = _json(cli, "endpoints", "disable", endpoint_id, "--tenant", TENANT)
    assert disabled["enabled"] is False
    redeliver = _hooks(cli, "deliveries", "redeliver", second, "--tenant", TENANT)
    assert redeliver.returncode == 6 and "disabled" in redeliver.stderr
    _json(cli, "endpoints", "enable", endpoint_id, "--tenant", TENANT)
    again = _json(cli, "deliveries", "redeliver", second, "--tenant", TENANT)
    assert again["generation"] == 2
    await receiver.wait_for(3)
    assert receiver.ids()[-1] == second

    deleted = _hooks(cli, "endpoints", "delete", endpoint_id, "--tenant", TENANT, "--yes")
    assert deleted.returncode == 0
    assert _json(cli, "deliveries", "list", "--tenant", TENANT) == []
    for secret_text in (secret, new_secret):
        assert secret_text not in fleet.logs()


@pytest.mark.parametrize(
    ("url", "rule"),
    [
        ("https://127.0.0.1:9/x", "loopback"),
        ("https://169.254.169.254/", "metadata"),
        ("https://[::ffff:10.0.0.1]/", "ipv4-embedded-in-ipv6"),
        ("https://0x0a.0.0.1/", "private"),
        ("ftp://example.com/", "scheme"),
    ],
)
def test_cli_refuses_unsafe_urls_with_the_rule(cli: Cli, url: str, rule: str) -> None:
    result = cli("webhooks", "endpoints", "create", "--tenant", TENANT, "--url", url)
    assert result.returncode == 4
    assert f"(rule: {rule})" in result.stderr
    assert cli.json("webhooks", "endpoints", "list", "--tenant", TENANT) == []


def test_cli_rejects_bad_input_clearly(cli: Cli) -> None:
    bad_event = _hooks(cli, "publish", "--tenant", TENANT, "--type", "Bad Type!")
    assert bad_event.returncode == 4 and "invalid event type" in bad_event.stderr
    bad_data = _hooks(cli, "publish", "--tenant", TENANT, "--type", "a.b", "--data", "[1]")
    assert bad_data.returncode == 4 and "JSON object" in bad_data.stderr
    bad_status = _hooks(cli, "deliveries", "list", "--tenant", TENANT, "--status", "nope")
    assert bad_status.returncode == 4


async def test_kill_9_mid_delivery_redelivers_with_the_same_webhook_id(
    cli: Cli, receiver: WebhookReceiver, fleet: Fleet, settings: Settings
) -> None:
    created = _json(cli, "endpoints", "create", "--tenant", TENANT, "--url", receiver.url("/held"))
    receiver.secrets.append(created["secret"])
    first = fleet.start()
    published = _json(cli, "publish", "--tenant", TENANT, "--type", "invoice.paid")
    (delivery_id,) = published["deliveries"]
    await receiver.wait_for(1, timeout=30)  # the first worker is mid-request, unanswered

    first.send_signal(signal.SIGKILL)
    assert first.wait(timeout=10) == -signal.SIGKILL
    fleet.start()
    seen = await receiver.wait_for(2, timeout=40)
    assert [s.webhook_id for s in seen] == [delivery_id, delivery_id]
    assert all(s.verified for s in seen)
    shown = await _status(cli, delivery_id, "succeeded")
    assert shown["delivery"]["attempts"] == 2
