"""Test helpers: polling with a deadline instead of sleeping."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest

T = TypeVar("T")


async def eventually(
    probe: Callable[[], Awaitable[T]],
    accept: Callable[[T], bool],
    *,
    timeout_s: float = 10.0,
    interval_s: float = 0.02,
) -> T:
    """Poll `probe` until `accept` holds; fail with the last value after `timeout_s`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        value = await probe()
        if accept(value):
            return value
        if loop.time() > deadline:
            pytest.fail(f"condition not met within {timeout_s}s; last value: {value!r}")
        await _tick(interval_s)


async def _tick(seconds: float) -> None:
    # The poll interval between re-checks of the condition, not a synchronisation point.
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    loop.call_later(seconds, done.set_result, None)
    await done
