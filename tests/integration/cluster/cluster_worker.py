"""A worker process on the Redis Cluster for the multi-process test: the real
`cli.serve.serve` (as `settler-jobs worker` runs it) with one test-only kind.

Run as `python tests/integration/cluster/cluster_worker.py` with the usual settings in the
environment (REDIS_URL, SETTLER_REDIS_CLUSTER, SETTLER_QUEUE_PREFIX, SETTLER_DATA_DIR,
DATABASE_URL). Each run of a `cluster-e2e` job adds an audit row (action
`cluster-e2e.run`, target the job id, actor the process) to the shared database, so the
test counts runs per job there.
"""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any, Final

from settler_jobs import logs
from settler_jobs.audit import record_audit_now
from settler_jobs.cli import serve
from settler_jobs.config import Settings
from settler_jobs.context import JobContext
from settler_jobs.domain import RetryPolicy
from settler_jobs.kinds import JobKind, Registry

KIND: Final = "cluster-e2e"
ACTION: Final = "cluster-e2e.run"
WORK_S: Final = 0.01


async def record_run(payload: dict[str, Any], ctx: JobContext) -> int:
    """Do a little work, then record this run in the database."""
    await asyncio.sleep(WORK_S)  # the job's work, not synchronisation
    await record_audit_now(
        ctx.resources.sessions,
        actor=f"pid:{os.getpid()}",
        tenant_id=ctx.tenant_id,
        action=ACTION,
        target=("job", ctx.job_id),
    )
    return os.getpid()


def build_registry() -> Registry:
    """The registry the worker serves, and the test submits to."""
    return Registry([JobKind(KIND, record_run, concurrency=4, retry=RetryPolicy(attempts=1))])


def main() -> int:
    """Serve `cluster-e2e` until SIGTERM/SIGINT, as `settler-jobs worker` serves."""
    logs.setup()
    serve.run(serve.serve(Settings(), None, migrate=False, registry=build_registry()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
