"""The built-in alert evaluator: the conditions of deploy/prometheus/settler-jobs.rules.yml,
checked by the workers themselves, with operator notifications.

Every worker runs `cycle` each `alert_interval_s` (see `worker.background`): it takes
a `Snapshot`, exports it as gauges, and, if it wins the short shared lease (one
evaluator per interval across all workers), evaluates the conditions against the
settings' thresholds (the rules file's defaults) and updates the active alerts.
Like a rule's ``for:``, a condition is "pending" until it held `alert_for_s`.

Active alerts live in the shared hash ``<prefix>:settler:alerts``, one JSON field per alert
(name plus labels), with `since`, `last_seen`, the latest `value` and when operators
were last told. Operators are told once per episode when an alert fires and once when
it resolves (by email to `alert_emails` and/or a signed POST to `alert_webhook_url`);
a still-firing alert is repeated only after `alert_repeat_s`. A notification that
could not be sent is tried again next cycle.

A worker cannot see its own absence: `NoWorkerHeartbeat` with the default minimum of
one worker is raised by `active_alerts` (read live) and by the Prometheus rule; the
evaluator notifies it only when `alert_min_workers` > 1 and some workers are left.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, Final

import httpx

from settler_jobs import heartbeat
from settler_jobs.alerts.probes import Snapshot
from settler_jobs.config import Settings
from settler_jobs.emails import send_email
from settler_jobs.net_guard import guarded_client, outbound_policy
from settler_jobs.ports import Submitter
from settler_jobs.scheduling import SYSTEM_TENANT
from settler_jobs.shared_state import SharedState
from settler_jobs.webhooks import DEFAULT_USER_AGENT, json_body, sign_headers

log = logging.getLogger(__name__)

EMAIL_TEMPLATE: Final = "operator_alert"
_WEBHOOK_TIMEOUT_S: Final = 10.0
_MAX_ALERTS: Final = 1000


def alerts_key(prefix: str) -> str:
    """The shared hash of active alerts."""
    return f"{prefix}:settler:alerts"


def _lease_key(prefix: str) -> str:
    return f"{prefix}:settler:alerts:lease"


@dataclass(frozen=True)
class Condition:
    """One alert condition that holds now."""

    alert: str
    labels: dict[str, str]
    value: float
    threshold: float
    summary: str

    @property
    def key(self) -> str:
        """Identity of the alert: its name and labels."""
        return self.alert + "".join(f",{k}={v}" for k, v in sorted(self.labels.items()))


@dataclass(frozen=True)
class ActiveAlert:
    """An alert that is firing; times are aware UTC."""

    alert: str
    labels: dict[str, str]
    value: float
    threshold: float
    summary: str
    since: datetime
    last_seen: datetime
    notified_at: datetime | None
    state: str = "firing"
    """"pending" until the condition held `alert_for_s`, then "firing"."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (CLI, dashboard)."""
        out = asdict(self)
        for name in ("since", "last_seen", "notified_at"):
            out[name] = out[name].isoformat(timespec="seconds") if out[name] else None
        return out


def evaluate(snapshot: Snapshot, settings: Settings) -> list[Condition]:
    """The conditions that hold in `snapshot` under the settings' thresholds."""
    s = settings
    out: list[Condition] = []
    for queue, lane in sorted(snapshot.lanes.items()):
        labels = {"queue": queue}
        if lane.waiting > s.alert_queue_depth:
            out.append(
                Condition(
                    "QueueDepthHigh",
                    labels,
                    lane.waiting,
                    s.alert_queue_depth,
                    f"{lane.waiting} jobs waiting in {queue}",
                )
            )
        if lane.oldest_waiting_s > s.alert_oldest_waiting_s:
            out.append(
                Condition(
                    "OldestWaitingTooOld",
                    labels,
                    lane.oldest_waiting_s,
                    s.alert_oldest_waiting_s,
                    f"oldest job in {queue} waited {lane.oldest_waiting_s:.0f}s",
                )
            )
        finished = lane.completed + lane.failed
        ratio = lane.failed / finished if finished else 0.0
        if finished >= s.alert_failure_min_jobs and ratio > s.alert_failure_ratio:
            out.append(
                Condition(
                    "FailureRateHigh",
                    labels,
                    round(ratio, 4),
                    s.alert_failure_ratio,
                    f"{lane.failed} of {finished} jobs in {queue} failed for good",
                )
            )
        if lane.oldest_active_s > s.alert_active_stuck_s:
            out.append(
                Condition(
                    "ActiveJobStuck",
                    labels,
                    lane.oldest_active_s,
                    s.alert_active_stuck_s,
                    f"a job in {queue} has been active {lane.oldest_active_s:.0f}s",
                )
            )
    for schedule_id, reason in sorted(snapshot.schedule_missed.items()):
        if reason is not None:
            out.append(
                Condition(
                    "ScheduleMissed",
                    {"schedule": schedule_id},
                    1,
                    0,
                    f"schedule {schedule_id}: {reason}",
                )
            )
    if snapshot.dlq_open_recent > s.alert_dlq_growth:
        out.append(
            Condition(
                "DeadLetterQueueGrowing",
                {},
                snapshot.dlq_open_recent,
                s.alert_dlq_growth,
                f"{snapshot.dlq_open_recent} new open dead letters "
                f"({snapshot.dlq_open} open in all)",
            )
        )
    if snapshot.workers_alive < s.alert_min_workers:
        out.append(_no_workers(snapshot.workers_alive, s.alert_min_workers))
    return out


def _no_workers(alive: int, minimum: int) -> Condition:
    return Condition(
        "NoWorkerHeartbeat", {}, alive, minimum, f"{alive} live workers, expected {minimum}"
    )


async def active_alerts(state: SharedState, settings: Settings) -> list[ActiveAlert]:
    """The firing alerts, oldest first, plus `NoWorkerHeartbeat` read live.

    Read by the dashboard and `settler-jobs alerts list`; never raises for a damaged
    entry (it is skipped).
    """
    now = datetime.now(UTC)
    out = [
        alert
        for entry in (await _load(state, settings.queue_prefix)).values()
        if entry.get("resolved_ms") is None and (alert := _active(entry)) is not None
    ]
    if not any(a.alert == "NoWorkerHeartbeat" for a in out) and settings.alert_min_workers:
        alive = len(await heartbeat.live_workers(state, settings.queue_prefix))
        if alive < settings.alert_min_workers:
            c = _no_workers(alive, settings.alert_min_workers)
            out.append(
                ActiveAlert(c.alert, c.labels, c.value, c.threshold, c.summary, now, now, None)
            )
    return sorted(out, key=lambda a: (a.since, a.alert))


def _active(entry: Mapping[str, Any]) -> ActiveAlert | None:
    try:
        notified = entry.get("notified_ms")
        return ActiveAlert(
            alert=str(entry["alert"]),
            labels={str(k): str(v) for k, v in entry["labels"].items()},
            value=float(entry["value"]),
            threshold=float(entry["threshold"]),
            summary=str(entry["summary"]),
            since=_at(int(entry["since_ms"])),
            last_seen=_at(int(entry["last_seen_ms"])),
            notified_at=_at(int(notified)) if notified is not None else None,
            state=str(entry.get("state", "firing")),
        )
    except (KeyError, TypeError, ValueError, AttributeError):
        return None


def _at(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


async def _load(state: SharedState, prefix: str) -> dict[str, dict[str, Any]]:
    [raw] = await state.read_hashes([alerts_key(prefix)])
    out: dict[str, dict[str, Any]] = {}
    for field_name, text in list(raw.items())[:_MAX_ALERTS]:
        try:
            value = json.loads(text)
        except ValueError:
            continue
        if isinstance(value, dict):
            out[str(field_name)] = value
    return out


async def lead(state: SharedState, prefix: str, holder: str, interval_s: float) -> bool:
    """Take (or keep) the evaluator lease for one interval; True if this process holds it."""
    ttl_ms = max(100, round(interval_s * 2000))  # the holder renews it every cycle
    return await state.lead(_lease_key(prefix), holder, ttl_ms)


class Notifier:
    """Sends alert notifications to the configured operator channels."""

    def __init__(self, settings: Settings, submitter: Submitter) -> None:
        self._settings = settings
        self._submitter = submitter

    @property
    def configured(self) -> bool:
        return bool(self._settings.alert_emails or self._settings.alert_webhook_url)

    async def send(self, event: str, entry: Mapping[str, Any], now_ms: int) -> bool:
        """Tell operators `event` (firing or resolved) of an alert; False if a channel failed."""
        ok = True
        notice = _notice(event, entry, now_ms)
        if self._settings.alert_emails:
            try:
                await send_email(
                    self._submitter,
                    SYSTEM_TENANT,
                    self._settings.alert_emails,
                    EMAIL_TEMPLATE,
                    notice,
                    idempotency_key=notice["id"],
                )
            except Exception:
                log.exception("alerts.email_failed", extra={"alert": entry.get("alert")})
                ok = False
        if self._settings.alert_webhook_url:
            ok = await self._post(notice) and ok
        return ok

    async def _post(self, notice: dict[str, Any]) -> bool:
        s = self._settings
        assert s.alert_webhook_url is not None
        now = datetime.now(UTC)
        body = json_body(
            {
                "type": f"alert.{notice['event']}",
                "timestamp": now.isoformat().replace("+00:00", "Z"),
                "data": notice,
            }
        )
        headers = {"content-type": "application/json", "user-agent": DEFAULT_USER_AGENT}
        if s.alert_webhook_secret is not None:
            headers = sign_headers(
                webhook_id=notice["id"],
                timestamp=now,
                body=body,
                secrets=[s.alert_webhook_secret.get_secret_value()],
                user_agent=DEFAULT_USER_AGENT,
            )
        try:
            timeout = httpx.Timeout(_WEBHOOK_TIMEOUT_S)
            async with guarded_client(outbound_policy(s), timeout=timeout) as client:
                response = await client.post(s.alert_webhook_url, content=body, headers=headers)
            if response.is_success:
                return True
            log.warning("alerts.webhook_status", extra={"status": response.status_code})
        except Exception as exc:  # the guard's refusals included: tried again next cycle
            log.warning("alerts.webhook_failed", extra={"error": type(exc).__name__})
        return False


def _notice(event: str, entry: Mapping[str, Any], now_ms: int) -> dict[str, Any]:
    """The data of one notification; `id` is stable per (alert, episode, event, repeat)."""
    seed = f"{entry['key']}|{entry['since_ms']}|{event}|{entry.get('repeats', 0)}"
    return {
        "id": "alert_" + hashlib.sha256(seed.encode()).hexdigest()[:32],
        "event": event,
        "alert": entry["alert"],
        "labels": entry["labels"],
        "summary": entry["summary"],
        "value": entry["value"],
        "threshold": entry["threshold"],
        "since": _at(int(entry["since_ms"])).isoformat(timespec="seconds"),
        "at": _at(now_ms).isoformat(timespec="seconds"),
    }


async def update(
    state: SharedState, settings: Settings, conditions: list[Condition], notifier: Notifier
) -> None:
    """Record `conditions` as the active alerts and notify new, repeated and resolved ones."""
    prefix = settings.queue_prefix
    now_ms = heartbeat.now_ms()
    stored = await _load(state, prefix)
    repeat_ms = settings.alert_repeat_s * 1000
    for_ms = settings.alert_for_s * 1000
    for c in conditions[:_MAX_ALERTS]:
        entry = stored.pop(c.key, None) or {"key": c.key, "since_ms": now_ms, "repeats": 0}
        entry.pop("resolved_ms", None)  # firing again before its resolve was sent: same episode
        entry.update(
            alert=c.alert,
            labels=c.labels,
            value=c.value,
            threshold=c.threshold,
            summary=c.summary,
            last_seen_ms=now_ms,
        )
        was = entry.get("state")
        entry["state"] = "pending" if now_ms - int(entry["since_ms"]) < for_ms else "firing"
        if entry["state"] == "firing" and was != "firing":
            log.warning("alert.firing", extra={"alert": c.key, "value": c.value})
        notified = entry.get("notified_ms")
        due = entry["state"] == "firing" and (
            notified is None or (repeat_ms > 0 and now_ms - int(notified) >= repeat_ms)
        )
        if due and notifier.configured:
            # A repeat gets a new notification id; a failed send retries with the same id.
            repeats = int(entry.get("repeats", 0)) + (0 if notified is None else 1)
            if await notifier.send("firing", {**entry, "repeats": repeats}, now_ms):
                entry.update(notified_ms=now_ms, repeats=repeats)
        await state.hash_put(alerts_key(prefix), c.key, json.dumps(entry))
    for key, entry in stored.items():  # no longer holding: resolved
        entry.setdefault("resolved_ms", now_ms)
        if entry.get("notified_ms") is None or not notifier.configured:
            await state.hash_delete(alerts_key(prefix), key)
        elif await notifier.send("resolved", entry, now_ms):
            await state.hash_delete(alerts_key(prefix), key)
            log.info("alert.resolved", extra={"alert": key})
        else:
            await state.hash_put(alerts_key(prefix), key, json.dumps(entry))


async def cycle(
    probe: Callable[[], Awaitable[Snapshot]],
    state: SharedState,
    settings: Settings,
    holder: str,
    notifier: Notifier,
) -> Snapshot:
    """One evaluation: `probe()` gives the snapshot; only the lease holder updates alerts."""
    snapshot = await probe()
    if await lead(state, settings.queue_prefix, holder, settings.alert_interval_s):
        await update(state, settings, evaluate(snapshot, settings), notifier)
    return snapshot
