"""The dead-letter queue: failed jobs kept in the database, listed, noted, retried.

`store` holds the entries; `capture` moves exhausted jobs from BullMQ into it.
"""

from __future__ import annotations

from settler_jobs.dlq.capture import record as record_dead_letter
from settler_jobs.dlq.capture import sweep as sweep_dead_letters
from settler_jobs.dlq.store import DlqEntry, count_open

__all__ = ["DlqEntry", "count_open", "record_dead_letter", "sweep_dead_letters"]
