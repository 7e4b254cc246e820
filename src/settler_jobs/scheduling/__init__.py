"""Scheduled system jobs: the configured schedules, their recorded runs, the system kind.

`plan` registers schedules with BullMQ's job schedulers; `runs` records each slot's run;
handlers of scheduled kinds wrap their work in `run_recorded`.
"""

from __future__ import annotations

from settler_jobs.scheduling.plan import SYSTEM_TENANT, Schedule, configured, missed_reason
from settler_jobs.scheduling.plan import register as register_schedules
from settler_jobs.scheduling.runs import ScheduleRun, last_runs
from settler_jobs.scheduling.system import ScheduledPayload, require_system, run_recorded

__all__ = [
    "SYSTEM_TENANT",
    "Schedule",
    "ScheduleRun",
    "ScheduledPayload",
    "configured",
    "last_runs",
    "missed_reason",
    "register_schedules",
    "require_system",
    "run_recorded",
]
