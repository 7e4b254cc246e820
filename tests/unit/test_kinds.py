"""The kind registry and the seed's defaults."""

from __future__ import annotations

import pytest

from settler_jobs.context import JobContext
from settler_jobs.domain import PriorityClass
from settler_jobs.errors import UnknownJobKind
from settler_jobs.kinds import JobKind, Registry
from settler_jobs.registry import default_registry


async def _noop(payload: object, ctx: JobContext) -> None:
    return None


def test_seed_kinds_and_defaults() -> None:
    reg = default_registry()
    expected = {
        "reconciliation": (PriorityClass.HIGH, 3),
        "webhook-delivery": (PriorityClass.NORMAL, 5),
        "export-generation": (PriorityClass.NORMAL, 2),
        "email-sending": (PriorityClass.LOW, 3),
        "cache-warming": (PriorityClass.LOW, 1),
        "data-retention": (PriorityClass.LOW, 2),
        "webhook-sweep": (PriorityClass.LOW, 1),
    }
    assert {k.name: (k.priority, k.retry.attempts) for k in reg} == expected
    assert {k.name: k.concurrency for k in reg} == {
        "reconciliation": 8,
        "webhook-delivery": 10,
        "export-generation": 3,
        "email-sending": 5,
        "cache-warming": 2,
        "data-retention": 1,
        "webhook-sweep": 1,
    }
    assert reg.for_queue("reconciliation-express").name == "reconciliation"
    assert len(reg.queues()) == 14


def test_unknown_kind_lists_the_known_ones() -> None:
    with pytest.raises(
        UnknownJobKind, match="known kinds: cache-warming, data-retention, email-sending"
    ):
        default_registry().get("nope")


@pytest.mark.parametrize("name", ["Bad", "a:b", "x-express", "", "1abc"])
def test_kind_names_are_validated(name: str) -> None:
    with pytest.raises(ValueError, match="invalid kind name"):
        JobKind(name, _noop)


def test_a_name_registers_once() -> None:
    reg = Registry([JobKind("a", _noop)])
    with pytest.raises(ValueError, match="already registered"):
        reg.register(JobKind("a", _noop))
    assert "a" in reg and len(reg.select(["a"])) == 1
