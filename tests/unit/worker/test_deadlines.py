"""Attempt deadlines: asyncio.timeout's semantics on one shared timer."""

from __future__ import annotations

import asyncio

import pytest

from settler_jobs.worker.deadlines import Deadline, Deadlines
from tests.helpers import eventually


async def _attempt(deadlines: Deadlines, timeout_s: float, work: asyncio.Event) -> str:
    """What the runtime does around a handler: 'done', 'timed out' or CancelledError."""
    deadline = deadlines.start(timeout_s)
    try:
        await work.wait()
    except asyncio.CancelledError:
        if not deadlines.finish(deadline):
            raise
        return "timed out"
    finally:
        deadlines.finish(deadline)
    return "done"


async def test_an_attempt_past_its_deadline_times_out_and_its_task_is_not_left_cancelling() -> None:
    deadlines = Deadlines()
    task = asyncio.ensure_future(_attempt(deadlines, 0.05, asyncio.Event()))
    assert await task == "timed out"
    assert task.cancelling() == 0
    assert deadlines.live == 0


async def test_a_finished_attempt_is_never_cancelled_by_its_passed_deadline() -> None:
    deadlines = Deadlines()
    finished = asyncio.Event()
    finished.set()
    assert await _attempt(deadlines, 0.02, finished) == "done"
    # A later attempt's expiry proves the timer has run past the first deadline.
    assert await _attempt(deadlines, 0.05, asyncio.Event()) == "timed out"
    assert deadlines.live == 0


async def test_a_shorter_timeout_started_later_expires_first() -> None:
    deadlines = Deadlines()
    never = asyncio.Event()
    long = asyncio.ensure_future(_attempt(deadlines, 60, never))
    short = asyncio.ensure_future(_attempt(deadlines, 0.05, never))
    assert await short == "timed out"
    assert not long.done()
    never.set()
    assert await long == "done"


async def test_an_outside_cancel_is_not_mistaken_for_the_deadline() -> None:
    deadlines = Deadlines()
    started = asyncio.Event()
    entries: list[Deadline] = []

    async def attempt() -> None:
        entries.append(deadlines.start(60))
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            if not deadlines.finish(entries[0]):
                raise

    task = asyncio.ensure_future(attempt())
    await started.wait()
    assert deadlines.expire(entries[0])
    task.cancel()  # e.g. a lane interrupt at the same moment
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_expire_cuts_a_running_attempt_short_once() -> None:
    deadlines = Deadlines()
    started = asyncio.Event()
    entries: list[Deadline] = []

    async def attempt() -> str:
        entries.append(deadlines.start(60))
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            if deadlines.finish(entries[0]):
                return "cut short"
            raise
        return "done"

    task = asyncio.ensure_future(attempt())
    await started.wait()
    assert deadlines.expire(entries[0])
    assert not deadlines.expire(entries[0])
    assert await task == "cut short"
    assert not deadlines.expire(entries[0])  # finished


async def test_finished_entries_behind_a_long_attempt_do_not_pile_up() -> None:
    deadlines = Deadlines()

    async def _live() -> int:
        return deadlines.live

    never = asyncio.Event()
    long = asyncio.ensure_future(_attempt(deadlines, 60, never))
    await eventually(_live, lambda live: live == 1)  # the long attempt's deadline is set

    done = asyncio.Event()
    done.set()
    for _ in range(10_000):
        assert await _attempt(deadlines, 60, done) == "done"
    assert deadlines._pending() < 200
    never.set()
    assert await long == "done"
    assert deadlines._pending() == 0
