"""What lives in the shared state, on Redis and on PostgreSQL: worker heartbeats, API rate
limits, dashboard session revocation, the alert lease and active alerts, queue depth
history and the per-tenant accounting."""

from __future__ import annotations

import json
import time
from typing import Any

from settler_jobs import heartbeat
from settler_jobs.alerts import depth_history
from settler_jobs.alerts import evaluator as alerts
from settler_jobs.api.ratelimit import RateLimiter
from settler_jobs.config import Settings
from settler_jobs.dashboard.session import SessionSigner, is_revoked, revoke
from settler_jobs.domain import Tier
from settler_jobs.records import JobRecord, QueueCounts, Submission, Submitted
from settler_jobs.shared_state import SharedState
from settler_jobs.tenants.stats import TenantStats, recent_key, stats_key, tenants_key
from tests.helpers import eventually


class _NoSubmitter:
    """Alert notifications are off in these settings: nothing may be submitted."""

    async def submit_bulk(self, subs: list[Submission]) -> list[Submitted]:
        raise AssertionError("no notification channel is configured")

    async def get(self, job_id: str, *, tenant_id: str | None = None) -> JobRecord:
        raise AssertionError("no notification channel is configured")


def _info(worker_id: str) -> heartbeat.WorkerInfo:
    return heartbeat.WorkerInfo(worker_id, "host", 1, ("echo",), 2, 0, 1, heartbeat.now_ms())


async def test_heartbeats_list_live_workers_of_one_prefix(state: SharedState, prefix: str) -> None:
    b, a = _info("w-b"), _info("w-a")
    await heartbeat.beat(state, prefix, b, 60)
    await heartbeat.beat(state, prefix, a, 60)
    await heartbeat.beat(state, f"{prefix}x", _info("w-other"), 60)
    assert await heartbeat.live_workers(state, prefix) == [a, b]
    await heartbeat.forget(state, prefix, "w-a")
    assert await heartbeat.live_workers(state, prefix) == [b]


async def test_a_heartbeat_expires_when_the_worker_stops_beating(
    state: SharedState, prefix: str
) -> None:
    await heartbeat.beat(state, prefix, _info("w1"), interval_s=0.2)  # lives 1 s at least
    assert [w.id for w in await heartbeat.live_workers(state, prefix)] == ["w1"]
    await eventually(lambda: heartbeat.live_workers(state, prefix), lambda w: w == [], timeout_s=5)


async def test_rate_limits_per_tenant(state: SharedState, settings: Settings) -> None:
    limited = settings.model_copy(update={"api_rate_limits": {"free": 1.0}, "api_rate_burst_s": 2})
    limiter = RateLimiter(state, limited)
    verdicts = [await limiter.check("acme", Tier.FREE) for _ in range(3)]
    assert [v.allowed for v in verdicts] == [True, True, False]
    assert verdicts[2].retry_after_s == 1
    assert (await limiter.check("globex", Tier.FREE)).allowed  # its own bucket
    assert (await limiter.check("acme", Tier.SCALE)).allowed  # unlimited tier


async def test_a_revoked_session_stays_revoked(state: SharedState, prefix: str) -> None:
    signer = SessionSigner(b"k" * 32, "operator-token", 600)
    _, session = signer.issue()
    _, other = signer.issue()
    assert not await is_revoked(state, prefix, session)
    await revoke(state, prefix, session)
    assert await is_revoked(state, prefix, session)
    assert not await is_revoked(state, prefix, other)


async def test_one_alert_evaluator_holds_the_lease(state: SharedState, prefix: str) -> None:
    assert await alerts.lead(state, prefix, "worker-a", 5.0)
    assert not await alerts.lead(state, prefix, "worker-b", 5.0)
    assert await alerts.lead(state, prefix, "worker-a", 5.0)


async def test_active_alerts_are_recorded_and_resolved(
    state: SharedState, settings: Settings
) -> None:
    notifier = alerts.Notifier(settings, _NoSubmitter())
    stuck = alerts.Condition("ActiveJobStuck", {"queue": "email"}, 4000, 1800, "stuck")
    await alerts.update(state, settings, [stuck], notifier)
    found = {a.alert: a for a in await alerts.active_alerts(state, settings)}
    assert set(found) == {"ActiveJobStuck", "NoWorkerHeartbeat"}
    assert found["ActiveJobStuck"].labels == {"queue": "email"}
    await heartbeat.beat(state, settings.queue_prefix, _info("w1"), 60)
    await alerts.update(state, settings, [], notifier)  # no longer holding, never notified
    assert await alerts.active_alerts(state, settings) == []


async def test_depth_history_keeps_one_sample_a_minute(state: SharedState, prefix: str) -> None:
    counts = [
        QueueCounts("q1", {"waiting": 3, "active": 1, "delayed": 2}, None),
        QueueCounts("q2", {"waiting": 7}, None),
    ]
    assert await depth_history.record(state, prefix, counts, now_s=600.0)
    assert not await depth_history.record(state, prefix, counts, now_s=601.0)  # same minute
    later = [QueueCounts("q1", {"waiting": 4}, None)]
    assert await depth_history.record(state, prefix, later, now_s=660.0)
    history = await depth_history.read(state, prefix, ["q1", "q2", "q3"])
    assert [(s.minute, s.waiting, s.active, s.delayed) for s in history["q1"]] == [
        (10, 3, 1, 2),
        (11, 4, 0, 0),
    ]
    assert [s.waiting for s in history["q2"]] == [7]
    assert history["q3"] == []


async def test_tenant_stats_flush_counts_lists_and_activity(
    state: SharedState, prefix: str
) -> None:
    at_ms = int(time.time() * 1000)
    hour = time.strftime("%Y%m%d%H", time.gmtime(at_ms / 1000))
    stats = TenantStats(prefix, recent_cap=2)
    for n in range(3):
        stats.add("t1", "email", "completed", f"j{n}", 1, 5, at_ms + n)
    stats.add("t2", "email", "failed", "k1", 3, 9, at_ms, "boom")
    await stats.flush(state)
    assert not stats.pending
    [t1, t2] = await state.read_hashes(
        [stats_key(prefix, "t1", hour), stats_key(prefix, "t2", hour)]
    )
    assert t1["completed:email"] == "3" and "failed:email" not in t1
    assert t2["failed:email"] == "1" and "completed:email" not in t2
    [recent] = await state.read_lists([recent_key(prefix, "t1")], -1)
    assert [json.loads(r)["id"] for r in recent] == ["j2", "j1"]  # newest first, capped
    [other] = await state.read_lists([recent_key(prefix, "t2")], -1)
    summary: dict[str, Any] = json.loads(other[0])
    assert summary["error"] == "boom" and summary["outcome"] == "failed"
    board = tenants_key(prefix)
    assert sorted(await state.members_since(board, at_ms, 10, forget_upto=0)) == ["t1", "t2"]
    assert await state.members_since(board, at_ms + 1, 10, forget_upto=0) == ["t1"]
