"""Schedule definitions and the missed-run rule (pure: the clock is passed in)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from settler_jobs.config import Settings
from settler_jobs.records import ScheduleInfo
from settler_jobs.scheduling import plan as schedules
from settler_jobs.scheduling.runs import ScheduleRun

NOW = datetime(2026, 6, 10, 14, 30, tzinfo=UTC)
GRACE = timedelta(minutes=5)
DAILY = schedules.Schedule("data-retention", "data-retention", "0 2 * * *", "")


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def _info(next_run: datetime, registered: datetime) -> ScheduleInfo:
    return ScheduleInfo(
        "data-retention",
        "data-retention",
        "0 2 * * *",
        None,
        "UTC",
        _ms(next_run),
        1,
        _ms(registered),
        {},
    )


def _run(started: datetime) -> ScheduleRun:
    return ScheduleRun(
        "r", "data-retention", "schedule", "repeat:x:1", started, None, "running", None, None
    )


def test_defaults_match_the_design_brief() -> None:
    configured = {s.id: s for s in schedules.configured(Settings())}
    assert configured["data-retention"].pattern == "0 2 * * *"
    assert configured["webhook-sweep"].pattern == "*/5 * * * *"
    assert configured["cache-warming"].pattern == "0 * * * *"
    assert all(s.kind == s.id for s in configured.values())


def test_previous_slot_counts_a_slot_at_the_boundary() -> None:
    assert schedules.previous_slot("0 2 * * *", NOW) == datetime(2026, 6, 10, 2, tzinfo=UTC)
    at_slot = datetime(2026, 6, 10, 2, tzinfo=UTC)
    assert schedules.previous_slot("0 2 * * *", at_slot) == at_slot
    assert schedules.previous_slot("*/5 * * * *", NOW + timedelta(minutes=3)) == NOW


def test_a_schedule_that_ran_its_last_slot_is_not_missed() -> None:
    info = _info(datetime(2026, 6, 11, 2, tzinfo=UTC), NOW - timedelta(days=3))
    ran = _run(datetime(2026, 6, 10, 2, 0, 1, tzinfo=UTC))
    assert schedules.missed_reason(DAILY, info, ran, NOW, GRACE) is None


def test_no_run_since_the_previous_slot_is_missed() -> None:
    info = _info(datetime(2026, 6, 11, 2, tzinfo=UTC), NOW - timedelta(days=3))
    stale = _run(datetime(2026, 6, 9, 2, 0, 1, tzinfo=UTC))
    assert schedules.missed_reason(DAILY, info, stale, NOW, GRACE) == (
        "no run since the 2026-06-10T02:00:00+00:00 slot"
    )
    assert schedules.missed_reason(DAILY, info, None, NOW, GRACE) is not None


def test_a_slot_before_registration_is_not_missed() -> None:
    info = _info(datetime(2026, 6, 11, 2, tzinfo=UTC), NOW - timedelta(hours=1))
    assert schedules.missed_reason(DAILY, info, None, NOW, GRACE) is None


def test_an_overdue_next_run_is_missed_after_the_grace() -> None:
    due = NOW - timedelta(minutes=4)
    info = _info(due, NOW - timedelta(days=3))
    ran = _run(datetime(2026, 6, 10, 2, 0, 1, tzinfo=UTC))
    assert schedules.missed_reason(DAILY, info, ran, NOW, GRACE) is None
    late = schedules.missed_reason(DAILY, info, ran, NOW + timedelta(minutes=2), GRACE)
    assert late == "next run overdue since 2026-06-10T14:26:00+00:00"


def test_unregistered_and_disabled_schedules() -> None:
    assert schedules.missed_reason(DAILY, None, None, NOW, GRACE) == (
        "not registered: no worker serving this kind has started"
    )
    disabled = schedules.Schedule("data-retention", "data-retention", "", "")
    assert schedules.missed_reason(disabled, None, None, NOW, GRACE) is None
