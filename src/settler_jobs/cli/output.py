"""How the CLI prints: JSON for scripts, Rich tables for people."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from datetime import UTC, datetime
from enum import Enum
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from settler_jobs.dlq.store import DlqEntry
    from settler_jobs.records import JobRecord, QueueCounts, TenantUsage

_PIPE_WIDTH = 200
_ID_COLUMNS = frozenset({"id", "job", "schedule"})


def _make_console() -> Console:
    # Rich lays out for 80 columns when stdout is not a terminal; piped tables are read by
    # people and by grep, so give them room unless COLUMNS says otherwise.
    console = Console()
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console = Console(width=_PIPE_WIDTH)
    return console


_console = _make_console()


def _print_rows(table: Table, rows: Sequence[Sequence[str]]) -> None:
    """Add `rows` to `table` and print it; id columns are never shortened, since an id is
    what a reader copies into the next command."""
    for row in rows:
        table.add_row(*row)
    for i, column in enumerate(table.columns):
        if str(column.header) in _ID_COLUMNS:
            column.no_wrap = True
            column.min_width = max((len(row[i]) for row in rows), default=0)
    _console.print(table)


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    return str(value)


def emit(value: Any) -> None:
    """Print one JSON document on stdout."""
    print(json.dumps(value, default=_default, indent=2, sort_keys=True))


def _when(ms: int | None) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="seconds") if ms else "-"


def emit_job(job: JobRecord, as_json: bool) -> None:
    """One job, in full."""
    if as_json:
        emit({**job.as_dict(), "stacktrace": list(job.stacktrace)})
        return
    table = Table(show_header=False, title=f"job {job.id}")
    rows = {
        "state": job.state.value,
        "queue": job.queue,
        "tenant": job.tenant_id or "-",
        "tier": job.tier or "-",
        "priority": f"{job.priority_class} ({job.bullmq_priority})",
        "attempts": f"{job.attempts_made}/{job.max_attempts}",
        "progress": str(job.progress),
        "created": _when(job.created_at_ms),
        "started": _when(job.processed_at_ms),
        "finished": _when(job.finished_at_ms),
        "data": json.dumps(job.payload)[:2000],
        "result": json.dumps(job.result, default=str)[:2000],
        "failure": job.failure_reason or "-",
    }
    for key, value in rows.items():
        table.add_row(key, value)
    _console.print(table)


def emit_jobs(jobs: Sequence[JobRecord], as_json: bool) -> None:
    """A list of jobs, one line each."""
    if as_json:
        emit([j.as_dict() for j in jobs])
        return
    table = Table("id", "queue", "state", "tenant", "tier", "attempts", "created")
    cells = [
        [
            j.id,
            j.queue,
            j.state.value,
            j.tenant_id or "-",
            j.tier or "-",
            f"{j.attempts_made}/{j.max_attempts}",
            _when(j.created_at_ms),
        ]
        for j in jobs
    ]
    _print_rows(table, cells)


def emit_counts(counts: Sequence[QueueCounts], as_json: bool) -> None:
    """Per-queue counts by state."""
    if as_json:
        emit([dataclasses.asdict(c) for c in counts])
        return
    states = ["waiting", "delayed", "active", "completed", "failed"]
    table = Table()
    table.add_column("queue", no_wrap=True)
    for heading in (*states, "oldest waiting"):
        table.add_column(heading, justify="right")
    for c in counts:
        age = f"{c.oldest_waiting_ms / 1000:.1f}s" if c.oldest_waiting_ms is not None else "-"
        table.add_row(c.queue, *(str(c.counts.get(s, 0)) for s in states), age)
    _console.print(table)


def emit_usage(usage: TenantUsage, as_json: bool) -> None:
    """One tenant's fair share: per lane waiting, running, parked and cap hits."""
    if as_json:
        emit(usage.as_dict())
        return
    quota = str(usage.quota) if usage.quota else "unlimited"
    cap = str(usage.cap) if usage.cap else "none"
    # One line of its own: as a table title it would wrap to the (narrow) table's width.
    _console.print(
        f"{usage.tenant_id} ({usage.tier}): waiting {usage.waiting} of quota {quota}, "
        f"running {usage.active} (cap {cap} per lane), cap hits {usage.cap_hits}",
        soft_wrap=True,
        highlight=False,
    )
    table = Table()
    table.add_column("queue", no_wrap=True)
    for heading in ("waiting", "running", "parked", "cap hits"):
        table.add_column(heading, justify="right")
    for lane in usage.lanes:
        if lane.waiting or lane.active or lane.parked or lane.cap_hits:
            cells = (lane.waiting, lane.active, lane.parked, lane.cap_hits)
            table.add_row(lane.queue, *(str(n) for n in cells))
    _console.print(table)


def emit_dlq(entries: Sequence[DlqEntry], as_json: bool, *, detail: bool = False) -> None:
    """Dead letters: a table, or one entry in full with `detail`."""
    if as_json:
        rows = [dataclasses.asdict(e) for e in entries]
        emit(rows[0] if detail and rows else rows)
        return
    if detail and entries:
        e = entries[0]
        table = Table(show_header=False, title=f"dead letter {e.id}")
        for key, value in dataclasses.asdict(e).items():
            table.add_row(key, json.dumps(value, default=_default)[:4000])
        _console.print(table)
        return
    table = Table("id", "kind", "job", "tenant", "error", "attempts", "status", "failed at")
    cells = [
        [
            e.id,
            e.kind,
            e.job_id,
            e.tenant_id or "-",
            e.error_type,
            str(e.attempts),
            e.status.value,
            e.last_failed_at.isoformat(timespec="seconds"),
        ]
        for e in entries
    ]
    _print_rows(table, cells)


def emit_rows(rows: Sequence[dict[str, Any]], as_json: bool) -> None:
    """Uniform rows: JSON, or a table whose columns are the keys of the first row."""
    if as_json or not rows:
        emit(list(rows))
        return
    table = Table(*rows[0])
    _print_rows(table, [[str(v) for v in row.values()] for row in rows])
