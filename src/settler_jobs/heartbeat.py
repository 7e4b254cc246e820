"""Worker heartbeats: each worker process announces itself in the shared state under a key
with a TTL (Redis, or the database on the postgres backend).

``<prefix>:settler:workers:<id>`` holds a JSON `WorkerInfo`, rewritten every few
seconds and gone a few beats after the process stops (or at once on a clean stop).
Readiness checks and the dashboard read them with `live_workers`.
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from dataclasses import asdict, dataclass
from typing import Any, Final

from settler_jobs.shared_state import SharedState

_MAX_WORKERS: Final = 10_000
TTL_BEATS: Final = 3
"""A worker counts as alive for this many heartbeat intervals after its last beat."""


def workers_pattern(prefix: str) -> str:
    """The key pattern of every heartbeat under a queue prefix."""
    return f"{workers_key_prefix(prefix)}*"


def workers_key_prefix(prefix: str) -> str:
    """What every heartbeat key under a queue prefix starts with."""
    return f"{prefix}:settler:workers:"


def heartbeat_key(prefix: str, worker_id: str) -> str:
    """The heartbeat key of one worker."""
    return f"{prefix}:settler:workers:{worker_id}"


def host_name() -> str:
    """This machine's name, as heartbeats show it."""
    return socket.gethostname()[:64]


def new_worker_id() -> str:
    """A worker id: host, pid and a random suffix (pids repeat across hosts and restarts)."""
    return f"{host_name()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True)
class WorkerInfo:
    """What a worker process says about itself in each beat."""

    id: str
    host: str
    pid: int
    lanes: tuple[str, ...]
    concurrency: int
    running: int
    started_at_ms: int
    beat_at_ms: int

    def to_json(self) -> str:
        """The stored form."""
        return json.dumps({**asdict(self), "lanes": list(self.lanes)})

    @classmethod
    def from_json(cls, text: str) -> WorkerInfo | None:
        """Parse a stored beat; None if it is not one (a foreign or damaged key)."""
        try:
            raw: Any = json.loads(text)
            return cls(
                id=str(raw["id"]),
                host=str(raw["host"]),
                pid=int(raw["pid"]),
                lanes=tuple(str(lane) for lane in raw["lanes"]),
                concurrency=int(raw["concurrency"]),
                running=int(raw["running"]),
                started_at_ms=int(raw["started_at_ms"]),
                beat_at_ms=int(raw["beat_at_ms"]),
            )
        except (ValueError, KeyError, TypeError):
            return None


def now_ms() -> int:
    """Wall-clock milliseconds (beats are compared across machines)."""
    return int(time.time() * 1000)


async def beat(state: SharedState, prefix: str, info: WorkerInfo, interval_s: float) -> None:
    """Write one heartbeat that expires after `TTL_BEATS` intervals."""
    ttl_ms = max(1000, round(interval_s * TTL_BEATS * 1000))
    await state.put(heartbeat_key(prefix, info.id), info.to_json(), ttl_ms)


async def forget(state: SharedState, prefix: str, worker_id: str) -> None:
    """Remove a worker's heartbeat (a clean stop)."""
    await state.delete(heartbeat_key(prefix, worker_id))


async def live_workers(state: SharedState, prefix: str) -> list[WorkerInfo]:
    """Every worker whose heartbeat has not expired, by id."""
    values = await state.values_under(workers_key_prefix(prefix), _MAX_WORKERS)
    infos = [WorkerInfo.from_json(v) for v in values]
    return sorted((i for i in infos if i is not None), key=lambda i: i.id)
