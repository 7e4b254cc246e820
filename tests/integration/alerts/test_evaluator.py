"""The built-in evaluator end to end: a real worker, queue and database, a loopback webhook
receiver and the email outbox. One alert episode is told once on firing and once on
resolving; repeats wait for `alert_repeat_s`; a failed webhook is retried with its id.
"""

from __future__ import annotations

import asyncio
import base64
import email
import email.policy
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from settler_jobs.alerts.evaluator import ActiveAlert, active_alerts
from settler_jobs.clock import utc_now
from settler_jobs.config import Settings
from settler_jobs.context import JobContext
from settler_jobs.dlq import store as dlq
from settler_jobs.domain import RetryPolicy, Tier
from settler_jobs.errors import PermanentFailure
from settler_jobs.kinds import JobKind, Registry
from settler_jobs.records import Submission
from settler_jobs.registry import default_registry
from tests.harness import System, system
from tests.helpers import eventually
from tests.webhook_receiver import Reply, WebhookReceiver

SECRET = "whsec_" + base64.b64encode(b"alert-secret-of-32-bytes-length!").decode()
ALERT = "DeadLetterQueueGrowing"


async def _refuse(payload: dict[str, Any], ctx: JobContext) -> None:
    raise PermanentFailure("bad input")


def _registry() -> Registry:
    once = RetryPolicy(attempts=1, base_delay_s=0)
    return Registry(
        [JobKind("refuse", _refuse, retry=once), default_registry().get("email-sending")]
    )


def _settings(settings: Settings, receiver: WebhookReceiver, **extra: Any) -> Settings:
    return settings.model_copy(
        update={
            "alert_interval_s": 0.1,
            "alert_for_s": 0,
            "alert_dlq_growth": 0,  # one new dead letter fires
            "alert_min_workers": 0,  # this test is about the DLQ alert only
            "alert_emails": ["ops@example.com"],
            "alert_webhook_url": receiver.url("/alerts"),
            "alert_webhook_secret": SecretStr(SECRET),
            "outbound_allow_http": True,
            "outbound_allow_networks": ["127.0.0.1/32"],
            "schedule_retention_cron": "",
            "schedule_webhook_sweep_cron": "",
            "schedule_cache_warm_cron": "",
            **extra,
        }
    )


@pytest.fixture
async def receiver() -> AsyncIterator[WebhookReceiver]:
    async with WebhookReceiver([SECRET]) as server:
        yield server


async def _dead_letter(s: System) -> dlq.DlqEntry:
    await s.queue.submit(Submission("refuse", {}, "t1", Tier.FREE))
    [entry] = await eventually(s.dead_letters, lambda e: len(e) == 1)
    return entry


async def _alerts(s: System) -> list[ActiveAlert]:
    return await active_alerts(s.shared_state(), s.settings)


def _subjects(outbox: Path) -> list[str]:
    return sorted(
        str(
            email.message_from_bytes(p.read_bytes(), policy=email.policy.default)["Subject"]
        ).strip()
        for p in outbox.glob("*.eml")
    )


async def _outbox(outbox: Path, count: int) -> list[str]:
    async def probe() -> list[str]:
        return await asyncio.to_thread(_subjects, outbox)

    return await eventually(probe, lambda s: len(s) >= count, timeout_s=20)


async def test_an_alert_fires_once_is_not_repeated_and_resolves_once(
    settings: Settings, receiver: WebhookReceiver
) -> None:
    settings = _settings(settings, receiver)
    async with system(settings, _registry()) as s:
        entry = await _dead_letter(s)
        [fired] = await receiver.wait_for(1)
        assert fired.path == "/alerts" and fired.verified
        body = fired.json()
        assert body["type"] == "alert.firing" and body["data"]["alert"] == ALERT
        assert body["data"]["value"] == 1 and body["data"]["threshold"] == 0
        [active] = await eventually(
            lambda: _alerts(s), lambda a: len(a) == 1 and a[0].notified_at is not None
        )
        assert (active.alert, active.value, active.state) == (ALERT, 1, "firing")
        # Many more evaluations see the alert (last_seen moves on) but tell no one again.
        later = await eventually(
            lambda: _alerts(s),
            lambda a: len(a) == 1 and (a[0].last_seen - a[0].since).total_seconds() >= 1.0,
        )
        assert later[0].since == active.since and len(receiver.seen) == 1

        async with s.sessions() as session, session.begin():
            await dlq.resolve(session, entry.id, actor="ops", note="fixed", now=utc_now())
        seen = await receiver.wait_for(2)
        resolved = seen[1].json()
        assert resolved["type"] == "alert.resolved" and resolved["data"]["alert"] == ALERT
        assert seen[1].verified and seen[1].webhook_id != fired.webhook_id
        await eventually(lambda: _alerts(s), lambda a: a == [])
        subjects = await _outbox(settings.outbox_dir, 2)
    assert len(receiver.seen) == 2
    assert [x.split(":")[0] for x in subjects] == [f"[FIRING] {ALERT}", f"[RESOLVED] {ALERT}"]


async def test_a_firing_alert_is_repeated_after_the_repeat_interval(
    settings: Settings, receiver: WebhookReceiver
) -> None:
    settings = _settings(settings, receiver, alert_repeat_s=0.5, alert_emails=[])
    async with system(settings, _registry()) as s:
        await _dead_letter(s)
        first, second = await receiver.wait_for(2)
        assert second.at - first.at >= 0.45
        assert [x.json()["type"] for x in (first, second)] == ["alert.firing"] * 2
        assert first.webhook_id != second.webhook_id  # a new notification, not a retry
        [active] = await _alerts(s)
        assert first.json()["data"]["since"] == second.json()["data"]["since"]  # one episode
        assert active.since.isoformat(timespec="seconds") == first.json()["data"]["since"]


async def test_a_failed_webhook_is_retried_with_the_same_id_and_one_email(
    settings: Settings, receiver: WebhookReceiver
) -> None:
    receiver.replies.append(Reply("503 Service Unavailable"))
    settings = _settings(settings, receiver)
    async with system(settings, _registry()) as s:
        await _dead_letter(s)
        failed, retried = await receiver.wait_for(2)
        assert failed.webhook_id == retried.webhook_id
        await eventually(lambda: _alerts(s), lambda a: a[0].notified_at is not None)
        subjects = await _outbox(settings.outbox_dir, 1)
    assert len(subjects) == 1 and subjects[0].startswith(f"[FIRING] {ALERT}")


async def test_a_condition_pending_for_less_than_alert_for_s_tells_no_one(
    settings: Settings, receiver: WebhookReceiver
) -> None:
    settings = _settings(settings, receiver, alert_for_s=3600)
    async with system(settings, _registry()) as s:
        await _dead_letter(s)
        [pending] = await eventually(
            lambda: _alerts(s),
            lambda a: len(a) == 1 and (a[0].last_seen - a[0].since).total_seconds() >= 0.5,
        )
        assert (pending.alert, pending.state, pending.notified_at) == (ALERT, "pending", None)
    assert receiver.seen == [] and list(settings.outbox_dir.glob("*.eml")) == []
