"""The `data-retention` kind: one retention run over every registered target (system only)."""

from __future__ import annotations

from typing import Any

from settler_jobs.context import JobContext
from settler_jobs.retention.targets import retention_run, run_retention
from settler_jobs.scheduling import ScheduledPayload, require_system, run_recorded


class RetentionPayload(ScheduledPayload):
    """A retention run; `dryRun` only counts."""

    dryRun: bool = False


async def apply_retention(payload: RetentionPayload, ctx: JobContext) -> dict[str, Any]:
    """Delete expired data in bounded batches; the report is stored with the run."""
    require_system(ctx)
    res = ctx.resources
    run = retention_run(
        res.settings, res.sessions, res.require_queue_ops(), res.now(), dry_run=payload.dryRun
    )
    return await run_recorded(ctx, payload, lambda: run_retention(run))
