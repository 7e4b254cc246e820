"""One reconciliation job, start to finish: the use case the job handler calls.

The job data carries only the definition id; the specs (with their secrets) are read
from the database here, the heavy work runs in `executor` (a process pool in the
worker), and the results replace whatever an earlier attempt of the same job stored.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import Executor
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from settler_jobs.domain import validate_tenant_id
from settler_jobs.errors import PermanentFailure
from settler_jobs.net_guard import GuardPolicy
from settler_jobs.reconcile import results, store
from settler_jobs.reconcile.raw import SourceError
from settler_jobs.reconcile.run import run_reconciliation
from settler_jobs.secrets_box import SecretBox


def _utc_now() -> datetime:
    return datetime.now(UTC)


def tenant_files_root(files_dir: Path, tenant_id: str) -> Path:
    """The folder a tenant's file sources are read from: ``<files_dir>/<tenant>/``."""
    return files_dir / validate_tenant_id(tenant_id)


async def execute_run(
    sessions: async_sessionmaker[AsyncSession],
    box: SecretBox,
    *,
    tenant_id: str,
    definition_id: str,
    job_id: str,
    files_dir: Path,
    policy: GuardPolicy,
    executor: Executor | None = None,
    clock: Callable[[], datetime] = _utc_now,
) -> store.Run:
    """Run the tenant's definition for job `job_id` and store the results; the finished run.

    A retry of the same job reuses its run and replaces its results. A source that cannot
    be read marks the run failed and raises `PermanentFailure`, or the `SourceError` itself
    when trying again may help (network, server errors), so the worker retries it.
    """
    async with sessions() as session, session.begin():
        run = await store.ensure_run(
            session, tenant_id=tenant_id, definition_id=definition_id, job_id=job_id, now=clock()
        )
        await store.start_run(session, run.id, now=clock())
        source, target, rules = await store.reveal_specs(
            session, box, definition_id, tenant_id=tenant_id
        )
    work = functools.partial(
        run_reconciliation,
        source,
        target,
        rules,
        files_root=tenant_files_root(files_dir, tenant_id),
        policy=policy,
    )
    try:
        result = await asyncio.get_running_loop().run_in_executor(executor, work)
    except Exception as exc:
        async with sessions() as session, session.begin():
            await store.fail_run(session, run.id, f"{type(exc).__name__}: {exc}", now=clock())
        if isinstance(exc, SourceError) and not exc.transient:
            raise PermanentFailure(str(exc)) from exc
        raise
    async with sessions() as session, session.begin():
        return await results.save_results(session, run.id, result, now=clock())
