"""The Prometheus rules file: valid for promtool, and the same alerts as the built-in evaluator."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from datetime import UTC, datetime

import pytest

from settler_jobs.alerts.evaluator import evaluate
from settler_jobs.alerts.probes import LaneState, Snapshot
from settler_jobs.config import Settings
from tests.promql import RULES_FILE, metric_names, rules


def test_promtool_accepts_the_rules() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        message = "promtool is not installed (Debian package prometheus; scripts/test installs it)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    done = subprocess.run(
        [promtool, "check", "rules", str(RULES_FILE)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(rules())} rules found" in done.stdout


def test_metric_names_are_read_from_expressions() -> None:
    expr = (
        'sum by (queue) (increase(job_failures_total{outcome="dead"}[10m])) / clamp_min('
        "sum without (kind) (rate(job_completions_total[5m])), 1e-9) > 0.1 and on () "
        "max(dlq_open_entries offset 1h) > 0 or absent(settler_workers_alive)"
    )
    assert metric_names(expr) == {
        "job_failures_total",
        "job_completions_total",
        "dlq_open_entries",
        "settler_workers_alive",
    }


def _everything_wrong(settings: Settings) -> Snapshot:
    lane = LaneState(
        waiting=settings.alert_queue_depth + 1,
        oldest_waiting_s=settings.alert_oldest_waiting_s + 1,
        oldest_active_s=settings.alert_active_stuck_s + 1,
        completed=0,
        failed=settings.alert_failure_min_jobs,
    )
    return Snapshot(
        at=datetime.now(UTC),
        lanes={"q": lane},
        workers_alive=0,
        schedule_missed={"data-retention": "no run since the last slot"},
        schedule_last_success={"data-retention": None},
        dlq_open=settings.alert_dlq_growth + 1,
        dlq_open_recent=settings.alert_dlq_growth + 1,
    )


def test_the_evaluator_knows_exactly_the_alerts_of_the_rules_file() -> None:
    settings = Settings()
    fired = {c.alert for c in evaluate(_everything_wrong(settings), settings)}
    assert fired == {rule["alert"] for rule in rules()}


def test_nothing_fires_at_the_thresholds() -> None:
    settings = Settings()
    at_limit = Snapshot(
        at=datetime.now(UTC),
        lanes={
            "q": LaneState(
                waiting=settings.alert_queue_depth,
                oldest_waiting_s=settings.alert_oldest_waiting_s,
                oldest_active_s=settings.alert_active_stuck_s,
                completed=9 * settings.alert_failure_min_jobs,
                failed=settings.alert_failure_min_jobs,  # exactly the 0.1 ratio
            )
        },
        workers_alive=settings.alert_min_workers,
        schedule_missed={"data-retention": None},
        schedule_last_success={"data-retention": None},
        dlq_open=settings.alert_dlq_growth,
        dlq_open_recent=settings.alert_dlq_growth,
    )
    assert evaluate(at_limit, settings) == []


def _duration(seconds: float) -> str:
    for unit, size in (("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


@pytest.mark.parametrize("rule", rules(), ids=lambda r: str(r["alert"]))
def test_rule_thresholds_are_the_settings_defaults(rule: dict[str, str]) -> None:
    expr = rule["expr"]
    assert rule["for"] == _duration(Settings.model_fields["alert_for_s"].default)
    pairs = rule["annotations"]["settings"].split()  # type: ignore[index]
    for pair in pairs:
        name, _, value = pair.partition("=")
        default = Settings.model_fields[name].default
        assert float(value) == default, f"{rule['alert']}: {name} default is {default}"
        if name == "alert_dlq_window_s":
            continue  # applied by the worker computing dlq_open_entries_recent
        if name.endswith("_window_s"):
            assert f"[{_duration(default)}]" in expr, (rule["alert"], name)
        else:
            assert re.search(rf"[<>=]=?\s*{re.escape(f'{default:g}')}\b", expr), (
                rule["alert"],
                name,
            )
