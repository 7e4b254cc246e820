"""The lane loop's wiring: its options, bullmq's scripts on the pipelined connection, and
the state its slots share (`LaneBase`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final

from bullmq.backends.redis_backend import RedisBackend
from bullmq.job_scheduler import JobScheduler
from bullmq.lock_manager import LockManager
from bullmq.redis_connection import RedisConnection
from redis.asyncio import Redis

from settler_jobs.queue.cluster_route import slot_locator
from settler_jobs.queue.fair import PatchedScript, patch_pop
from settler_jobs.queue.lane_jobs import CompletionArgs
from settler_jobs.queue.pipe import Address, Arg, Head, PipelinedConnection
from settler_jobs.redis_cluster import is_cluster

# The whole lane loop logs as its main module, lane_loop.py.
log = logging.getLogger("settler_jobs.queue.lane_loop")
_RETRY_S: Final = (0.05, 0.1, 0.25, 0.5, 1.0)  # pauses between resends after a drop

Processor = Callable[[Any, str], Awaitable[Any]]
FailedHook = Callable[[Any, BaseException], None]


@dataclass(frozen=True, slots=True)
class LaneOptions:
    """Worker options of one lane (bullmq's names in comments)."""

    concurrency: int
    lock_duration_ms: int = 30_000  # lockDuration
    stalled_interval_ms: int = 30_000  # stalledInterval
    max_stalled_count: int = 1  # maxStalledCount
    remove_on_fail: Any = False  # removeOnFail, for jobs that do not set it
    name: str | None = None  # the worker name in CLIENT LIST
    drain_delay_s: float = 5.0  # drainDelay: longest idle block without a delayed job
    retry_s: float = 1.0  # runRetryDelay: pause after a failed fetch
    tenant_caps: dict[str, int] | None = None  # per tier; None: bullmq's own pop, no caps


def _now_ms() -> int:
    return int(time.time() * 1000)


class _PipeScript:
    """A bullmq script, called the way `Scripts` calls it, run on the pipelined connection."""

    def __init__(self, pipe: PipelinedConnection, script: Any) -> None:
        self._pipe = pipe
        self.sha: str = script.sha
        self.script: str = script.script

    def __call__(
        self,
        keys: list[Arg] | None = None,
        args: list[Arg] | None = None,
        client: Any = None,
        head: Head | None = None,
    ) -> Awaitable[Any]:
        return self._pipe.evalsha(self.sha, self.script, keys or [], args or [], head)


class _QueueView:
    """What bullmq's Job, LockManager and JobScheduler read from their worker or queue."""

    def __init__(self, backend: RedisBackend, opts: dict[str, Any]) -> None:
        self.backend = backend
        self.qualifiedName = backend.qualifiedName
        self.opts = opts
        self.name = backend.name

    def emit(self, event: str, *args: Any) -> None:
        if event in ("error", "lockRenewalFailed"):
            log.warning("lane.%s", event, extra={"queue": self.name, "detail": repr(args)})


class LaneBase:
    """A lane loop's connections, bullmq helpers and shared state, wired from its options."""

    def __init__(
        self,
        queue: str,
        processor: Processor,
        *,
        client: Redis,
        prefix: str,
        options: LaneOptions,
        on_failed: FailedHook | None = None,
    ) -> None:
        self.queue = queue
        self.id = uuid.uuid4().hex
        self._processor = processor
        self._on_failed = on_failed
        self._o = options
        self._backend = RedisBackend(queue, RedisConnection(client), None, prefix, False)
        self._name = self._backend.clientName(f":w:{options.name}" if options.name else "")
        scripts = self._backend.scripts
        cluster = is_cluster(client)  # then both sockets go to the primary of the lane's slot
        address = Address() if cluster else Address.of(client)
        self.pipe, self.blocking = (
            PipelinedConnection(
                address,
                name=self._name,
                locate=slot_locator(client, scripts.keys[""]) if cluster else None,
            )
            for _ in range(2)
        )
        commands = dict(scripts.commands)
        if options.tenant_caps is not None:
            # The pop that parks capped tenants (queue/fair.py); bullmq's text otherwise.
            for name in ("moveToActive", "moveToFinished"):
                commands[name] = PatchedScript(patch_pop(commands[name].script))
        scripts.commands = {n: _PipeScript(self.pipe, s) for n, s in commands.items()}
        self._scripts = scripts
        self._keys = scripts.keys
        self._finish_script = scripts.commands["moveToFinished"]
        self._view = _QueueView(
            self._backend,
            {"prefix": prefix, "lockDuration": options.lock_duration_ms, "limiter": None},
        )
        self._completion_args = CompletionArgs(scripts, self._view.opts)
        finish_keys = self._completion_args.head_keys
        self._finish_head = Head.of("EVALSHA", self._finish_script.sha, 14, *finish_keys)
        self._locks = LockManager(
            self._view, options.lock_duration_ms // 2, options.lock_duration_ms, self.id
        )
        self._schedulers = JobScheduler(self._view)
        self._fetch_lock = asyncio.Lock()
        self._caps_ready = asyncio.Event()  # slots fetch once the tier caps are published
        self._wake = asyncio.Event()  # set to stop an idle wait (pause, close)
        self._resumed = asyncio.Event()
        self._resumed.set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._closing = False
        self._interrupted = False
        self._drained = False
        self._block_until = 0
        self._limit_until = 0
        self._marker_wait: asyncio.Future[Any] | None = None
        self._busy = 0
        self._slots: list[asyncio.Task[None]] = []
        self._stalled_task: asyncio.Task[None] | None = None

    def _fetching(self) -> bool:
        return not self._closing and self._resumed.is_set()

    async def _nap(self, seconds: float) -> None:
        """Sleep, but wake early on pause or close."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)
