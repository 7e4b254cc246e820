"""Alerting: probes of queues and workers, the built-in evaluator and depth history.

`probes` takes a `Snapshot` and exports it as gauges; `evaluator` runs one alert cycle
with a `Notifier`; `depth_history` keeps recent queue depths for the dashboard.
"""

from __future__ import annotations

from settler_jobs.alerts.depth_history import record as record_depth
from settler_jobs.alerts.evaluator import Notifier
from settler_jobs.alerts.evaluator import cycle as alert_cycle
from settler_jobs.alerts.probes import Snapshot
from settler_jobs.alerts.probes import export as export_snapshot
from settler_jobs.alerts.probes import take as take_snapshot

__all__ = [
    "Notifier",
    "Snapshot",
    "alert_cycle",
    "export_snapshot",
    "record_depth",
    "take_snapshot",
]
