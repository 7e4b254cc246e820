"""The PostgreSQL queue answers every public call of the Redis one, with the same
signature: callers (API, CLI, dashboard, capabilities) work unchanged on either."""

from __future__ import annotations

import inspect

import pytest

from settler_jobs.queue import JobQueue, PgJobQueue
from settler_jobs.queue.control import Control
from settler_jobs.queue.reads import Reader
from settler_jobs.queue.schedules import Schedules
from settler_jobs.queue.usage import Usage

# Redis-only handles: the PostgreSQL queue has none (their users go through a state port).
REDIS_ONLY = {"client", "key_prefix"}
PARTS = (Reader, Control, Schedules, Usage)


def _public(cls: type) -> dict[str, object]:
    return {
        name: member
        for klass in reversed(cls.__mro__)
        for name, member in vars(klass).items()
        if not name.startswith("_")
    }


@pytest.mark.parametrize("part", PARTS, ids=lambda p: p.__name__)
def test_every_public_call_of_a_part_has_the_same_signature(part: type) -> None:
    redis_side, pg_side = _public(part), _public(PgJobQueue)
    for name, member in redis_side.items():
        if name in REDIS_ONLY:
            continue
        assert name in pg_side, f"PgJobQueue lacks {name}"
        if callable(member):
            theirs = pg_side[name]
            assert callable(theirs)
            assert inspect.signature(member) == inspect.signature(theirs), name
            assert inspect.iscoroutinefunction(member) == inspect.iscoroutinefunction(theirs)


def test_the_producer_calls_exist_too() -> None:
    for name in ("submit", "submit_bulk", "get", "close", "ping", "registry"):
        assert hasattr(PgJobQueue, name) and hasattr(JobQueue, name), name
    assert inspect.signature(JobQueue.submit_bulk) == inspect.signature(PgJobQueue.submit_bulk)
