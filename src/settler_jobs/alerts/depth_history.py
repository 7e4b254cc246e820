"""A per-minute history of queue depth: one capped shared list per lane.

Any number of workers may call `record` every few seconds: a per-minute claim (a value
stored only if new) lets one of them write the minute's sample, so a lane holds at most
one sample a minute and at most `KEEP` samples (two hours).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from settler_jobs.records import QueueCounts
from settler_jobs.shared_state import SharedState

KEEP: Final = 120


@dataclass(frozen=True, slots=True)
class DepthSample:
    """Depth of one lane at the start of a minute (minute = Unix time // 60)."""

    minute: int
    waiting: int
    active: int
    delayed: int


def _key(prefix: str, queue: str) -> str:
    return f"{prefix}:settler:depth:{queue}"


async def record(
    state: SharedState, prefix: str, counts: Sequence[QueueCounts], now_s: float
) -> bool:
    """Store this minute's sample unless another process did; True if this call wrote it."""
    minute = int(now_s // 60)
    claim = f"{prefix}:settler:depth-sampled:{minute}"
    if not await state.put(claim, "1", 180_000, only_new=True):
        return False
    samples: dict[str, list[str]] = {}
    for c in counts:
        sample = [minute, c.counts.get("waiting", 0), c.counts.get("active", 0)]
        sample.append(c.counts.get("delayed", 0))
        samples.setdefault(_key(prefix, c.queue), []).append(json.dumps(sample))
    await state.push_capped(samples, KEEP)
    return True


async def read(
    state: SharedState, prefix: str, queues: Sequence[str], minutes: int = 60
) -> dict[str, list[DepthSample]]:
    """The samples of the last `minutes` per lane, oldest first."""
    keys = [_key(prefix, queue) for queue in queues]
    out: dict[str, list[DepthSample]] = {}
    for queue, raws in zip(queues, await state.read_lists(keys, minutes), strict=True):
        samples = []
        for raw in reversed(raws):
            try:
                minute, waiting, active, delayed = (int(v) for v in json.loads(raw))
            except (ValueError, TypeError):
                continue
            samples.append(DepthSample(minute, waiting, active, delayed))
        out[queue] = samples
    return out
