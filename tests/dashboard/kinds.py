"""Job kinds for dashboard tests: `flaky` fails for good while `FLAKY.failing` is set."""

from __future__ import annotations

from typing import Any

from settler_jobs.context import JobContext
from settler_jobs.domain import RetryPolicy
from settler_jobs.errors import PermanentFailure
from settler_jobs.kinds import JobKind, Registry
from settler_jobs.registry import default_registry


class _Switch:
    failing = True


FLAKY = _Switch()


async def flaky(payload: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    if FLAKY.failing:
        raise PermanentFailure("flaky failure on purpose")
    return {"ok": True}


async def echo(payload: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    return {"echo": payload}


def registry() -> Registry:
    """The default kinds plus `flaky` and `echo`, each with a single attempt."""
    once = RetryPolicy(attempts=1, base_delay_s=0)
    kinds = [JobKind("flaky", flaky, retry=once), JobKind("echo", echo, retry=once)]
    return Registry([*default_registry(), *kinds])
