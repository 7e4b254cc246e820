"""A worker process for the end-to-end tests: the real `cli.serve.serve`, one test-only kind.

Run as `python tests/e2e/slow_worker.py` with the usual settings in the environment
(REDIS_URL, SETTLER_QUEUE_PREFIX, ...) plus:

    SLOW_WORKER_LOG   file that gets "start <job id> <pid> <attempt>" when a job starts
                      and "done <job id> <pid> <attempt>" when it finishes
    SLOW_WORKER_MODE  how long a job takes: "instant" (default), "hang" (until the
                      process is killed or the attempt cancelled), or seconds ("1.5")

The default kinds' handlers finish at once, so the tests run this one kind instead:
`slow-e2e` (4 slots, one attempt, no payload model). Everything else, signals and the
shutdown grace included, is the production code path of `settler-jobs worker`.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any, Final

from settler_jobs import logs
from settler_jobs.cli import serve
from settler_jobs.config import Settings
from settler_jobs.context import JobContext
from settler_jobs.domain import RetryPolicy
from settler_jobs.kinds import JobKind, Registry

KIND: Final = "slow-e2e"
LOG_ENV: Final = "SLOW_WORKER_LOG"
MODE_ENV: Final = "SLOW_WORKER_MODE"


def _note(event: str, ctx: JobContext) -> None:
    with Path(os.environ[LOG_ENV]).open("a", encoding="utf-8") as log:
        log.write(f"{event} {ctx.job_id} {os.getpid()} {ctx.attempt}\n")


async def slow(payload: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    """Record the start, take as long as SLOW_WORKER_MODE says, record the end."""
    _note("start", ctx)
    mode = os.environ.get(MODE_ENV, "instant")
    if mode == "hang":
        await asyncio.Event().wait()  # never set: only a kill or a cancel ends this attempt
    elif mode != "instant":
        await asyncio.sleep(float(mode))  # the slow work under test, not synchronisation
    _note("done", ctx)
    return {"pid": os.getpid(), "attempt": ctx.attempt, "payload": payload}


def build_registry() -> Registry:
    """The registry the worker serves, and the tests submit to."""
    return Registry(
        [JobKind(KIND, slow, concurrency=4, retry=RetryPolicy(attempts=1), timeout_s=600)]
    )


def main() -> int:
    """Serve `slow-e2e` until SIGTERM/SIGINT, exactly as `settler-jobs worker` serves."""
    logs.setup()
    serve.run(serve.serve(Settings(), None, migrate=True, registry=build_registry()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
