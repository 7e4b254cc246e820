"""Attempt deadlines: `asyncio.timeout` semantics with one loop timer for all attempts.

An `asyncio.timeout` scope arms and cancels a loop timer per attempt, which costs more
than a no-op job itself on uvloop. Here an attempt's deadline is appended to the queue of
its timeout length (one queue per length, so each queue is in deadline order), and one
timer, set for the earliest deadline, cancels the tasks whose deadline has passed. A
finished attempt is only marked; the queues drop finished heads as they go and are
compacted when finished entries pile up behind a long attempt.

The expiry itself works as in `asyncio.timeout`: the task is cancelled, and on the way
out the cancel is taken back (`Task.uncancel`); the attempt then ends in TimeoutError
unless someone else cancelled the task too.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any, Final

_COMPACT_SLACK: Final = 64


class Deadline:
    """One attempt's deadline (see `Deadlines.start`)."""

    __slots__ = ("cancelling", "done", "expired", "length", "task", "when")

    def __init__(self, task: asyncio.Task[Any], length: float, when: float) -> None:
        self.task = task
        self.length = length
        self.when = when
        self.cancelling = task.cancelling()
        self.expired = False
        self.done = False


class Deadlines:
    """Deadlines of the attempts running on one event loop."""

    def __init__(self) -> None:
        self._queues: dict[float, deque[Deadline]] = {}
        self._live = 0
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0

    @property
    def live(self) -> int:
        """Deadlines started and not yet finished."""
        return self._live

    def start(self, timeout_s: float) -> Deadline:
        """The deadline of the current task's attempt, `timeout_s` from now."""
        loop = asyncio.get_running_loop()
        task = asyncio.current_task(loop)
        if task is None:
            raise RuntimeError("an attempt deadline needs a running task")
        entry = Deadline(task, timeout_s, loop.time() + timeout_s)
        queue = self._queues.get(timeout_s)
        if queue is None:
            queue = self._queues[timeout_s] = deque()
        queue.append(entry)
        self._live += 1
        if self._timer is None or entry.when < self._timer_at:
            self._arm(loop, entry.when)
        return entry

    def expire(self, entry: Deadline) -> bool:
        """Cancel the attempt now (a cancel request); False if it already ended or expired."""
        if entry.done or entry.expired:
            return False
        entry.expired = True
        entry.task.cancel()
        return True

    def finish(self, entry: Deadline) -> bool:
        """Mark the attempt finished (idempotent). True the first time, for an expired
        attempt whose cancel was ours alone: its CancelledError means "timed out"."""
        if entry.done:
            return False
        entry.done = True
        self._live -= 1
        ours = entry.expired and entry.task.uncancel() <= entry.cancelling
        queue = self._queues.get(entry.length)
        if queue and queue[0] is entry:
            self._trim(entry.length, queue)
        elif self._live * 4 + _COMPACT_SLACK < self._pending():
            self._compact()
        return ours

    def _pending(self) -> int:
        return sum(len(queue) for queue in self._queues.values())

    def _trim(self, length: float, queue: deque[Deadline]) -> None:
        while queue and queue[0].done:
            queue.popleft()
        if not queue:
            del self._queues[length]

    def _compact(self) -> None:
        for length in list(self._queues):
            kept = deque(entry for entry in self._queues[length] if not entry.done)
            if kept:
                self._queues[length] = kept
            else:
                del self._queues[length]

    def _arm(self, loop: asyncio.AbstractEventLoop, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = loop.call_at(when, self._fire)
        self._timer_at = when

    def _fire(self) -> None:
        self._timer = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        earliest: float | None = None
        for length in list(self._queues):
            queue = self._queues[length]
            while queue and (queue[0].done or queue[0].when <= now):
                entry = queue.popleft()
                if not entry.done:
                    self.expire(entry)
            if not queue:
                del self._queues[length]
            elif earliest is None or queue[0].when < earliest:
                earliest = queue[0].when
        if earliest is not None:
            self._arm(loop, earliest)
