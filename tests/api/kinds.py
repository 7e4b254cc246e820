"""Job kinds for API tests: one that succeeds and one that always fails for good."""

from __future__ import annotations

from typing import Any

from settler_jobs.context import JobContext
from settler_jobs.domain import RetryPolicy
from settler_jobs.errors import PermanentFailure
from settler_jobs.kinds import JobKind, Registry
from settler_jobs.registry import default_registry


async def echo(payload: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    return {"echo": payload}


async def boom(payload: dict[str, Any], ctx: JobContext) -> None:
    raise PermanentFailure("boom on purpose")


def registry() -> Registry:
    """The default kinds plus `echo` (succeeds) and `boom` (fails at once, no retries)."""
    once = RetryPolicy(attempts=1, base_delay_s=0)
    test_kinds = [JobKind("echo", echo, retry=once), JobKind("boom", boom, retry=once)]
    return Registry([*default_registry(), *test_kinds])
