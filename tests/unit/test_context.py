"""The job context handlers receive."""

from __future__ import annotations

import logging
from dataclasses import FrozenInstanceError, fields
from typing import Any, cast

import pytest

from settler_jobs.context import JobContext, new_context
from settler_jobs.domain import PriorityClass, Tier


async def _progress(value: int | dict[str, Any]) -> None:
    return None


def test_new_context_is_the_same_frozen_context_as_the_constructor() -> None:
    values: dict[str, Any] = {
        "job_id": "j1",
        "kind": "email",
        "queue": "email-express",
        "tenant_id": "t1",
        "tier": Tier.ENTERPRISE,
        "priority": PriorityClass.HIGH,
        "attempt": 2,
        "max_attempts": 5,
        "log": logging.LoggerAdapter(logging.getLogger("x"), {}),
        "resources": cast(Any, object()),
        "report_progress": _progress,
    }
    fast = new_context(*(values[f.name] for f in fields(JobContext)))
    assert fast == JobContext(**values)
    assert repr(fast) == repr(JobContext(**values))
    with pytest.raises(FrozenInstanceError):
        fast.attempt = 3  # type: ignore[misc]
