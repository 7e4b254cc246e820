"""A per-minute history of queue depth: one capped Redis list per lane.

Any number of workers may call `record` every few seconds: a per-minute `SET NX` lets
one of them write the minute's sample, so a lane holds at most one sample a minute and
at most `KEEP` samples (two hours).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from redis.asyncio import Redis

from settler_jobs.records import QueueCounts

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


async def record(client: Redis, prefix: str, counts: Sequence[QueueCounts], now_s: float) -> bool:
    """Store this minute's sample unless another process did; True if this call wrote it."""
    minute = int(now_s // 60)
    if not await client.set(f"{prefix}:settler:depth-sampled:{minute}", "1", nx=True, ex=180):
        return False
    pipe = client.pipeline(transaction=False)
    for c in counts:
        sample = [minute, c.counts.get("waiting", 0), c.counts.get("active", 0)]
        sample.append(c.counts.get("delayed", 0))
        pipe.lpush(_key(prefix, c.queue), json.dumps(sample))
        pipe.ltrim(_key(prefix, c.queue), 0, KEEP - 1)
    await pipe.execute()
    return True


async def read(
    client: Redis, prefix: str, queues: Sequence[str], minutes: int = 60
) -> dict[str, list[DepthSample]]:
    """The samples of the last `minutes` per lane, oldest first."""
    pipe = client.pipeline(transaction=False)
    for queue in queues:
        pipe.lrange(_key(prefix, queue), 0, minutes - 1)
    out: dict[str, list[DepthSample]] = {}
    for queue, raws in zip(queues, await pipe.execute(), strict=True):
        samples = []
        for raw in reversed(raws):
            try:
                minute, waiting, active, delayed = (int(v) for v in json.loads(raw))
            except (ValueError, TypeError):
                continue
            samples.append(DepthSample(minute, waiting, active, delayed))
        out[queue] = samples
    return out
