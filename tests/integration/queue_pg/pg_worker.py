"""A worker process on the PostgreSQL queue for the crash tests: `WorkerRuntime` serving
the end-to-end tests' `slow-e2e` kind (tests/e2e/slow_worker.py), settings from the
environment, until killed.
"""

from __future__ import annotations

import asyncio
import sys

from settler_jobs.config import Settings
from settler_jobs.storage.db import create_engine, session_factory
from settler_jobs.worker.runtime import WorkerRuntime
from tests.e2e.slow_worker import build_registry


async def main() -> None:
    """Run the lanes until the process is killed."""
    settings = Settings()
    engine = create_engine(settings.effective_database_url)
    runtime = WorkerRuntime(settings, build_registry(), "", session_factory(engine))
    await runtime.start()
    print("ready", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
