"""Job rows as `JobRecord`s: the columns read and how they map (no I/O)."""

from __future__ import annotations

from typing import Any, Final

from settler_jobs import envelope
from settler_jobs.domain import JobState
from settler_jobs.records import JobRecord

# Every column a JobRecord needs (no locks, no flow bookkeeping); `seq` orders ties.
COLUMNS: Final = (
    "queue, id, seq, name, state::text AS state, data, opts, priority, delay_ms,"
    " max_attempts, attempts_made, progress, return_value, failed_reason, stacktrace,"
    " added_at_ms, processed_at_ms, finished_at_ms"
)
# Our own key in a job's opts: when it first failed (Node ignores it).
FIRST_FAILED: Final = "settlerFirstFailedOn"


def record_from(row: dict[str, Any], kind: str) -> JobRecord:
    """A `job` row (COLUMNS) as the record the Redis side builds from a job hash."""
    data = row["data"] if isinstance(row["data"], dict) else {}
    try:
        env: envelope.Envelope | None = envelope.parse(data)
    except Exception:
        env = None
    stacktrace = row["stacktrace"] if isinstance(row["stacktrace"], list) else []
    opts = row["opts"] if isinstance(row["opts"], dict) else {}
    first_failed = opts.get(FIRST_FAILED)
    progress = row["progress"]
    return JobRecord(
        id=str(row["id"]),
        queue=str(row["queue"]),
        kind=kind,
        state=JobState.from_bullmq(str(row["state"])),
        tenant_id=env.tenant_id if env else envelope.tenant_of(data),
        tier=env.tier.value if env else None,
        priority_class=env.priority.value if env and env.priority else None,
        bullmq_priority=int(row["priority"] or 0),
        payload=env.payload if env else data,
        progress=0 if progress is None else progress,
        attempts_made=int(row["attempts_made"] or 0),
        max_attempts=int(opts.get("attempts") or row["max_attempts"] or 1),
        created_at_ms=int(row["added_at_ms"]),
        processed_at_ms=int(row["processed_at_ms"]) if row["processed_at_ms"] else None,
        finished_at_ms=int(row["finished_at_ms"]) if row["finished_at_ms"] else None,
        delay_ms=int(row["delay_ms"] or 0),
        result=row["return_value"],
        failure_reason=row["failed_reason"],
        stacktrace=tuple(str(s) for s in stacktrace),
        first_failed_at_ms=int(first_failed) if isinstance(first_failed, int | float) else None,
    )
