"""Bulk adds on a Redis Cluster: bullmq's add scripts in one MULTI/EXEC on a pipelined
connection to the primary of the prefix's slot.

redis-py's cluster client queues each command of a transaction on a thread of its own
(about half a millisecond each, with the caller's event loop blocked meanwhile): a bulk
add of 1,000 jobs would stall the producer for half a second. Here the scripts bullmq
would queue are recorded instead and sent as MULTI, EVALSHA…, EXEC on one socket, as one
atomic transaction, without threads.
"""

from __future__ import annotations

from typing import Any, Final

import bullmq
import hiredis
from redis.asyncio import Redis
from redis.exceptions import ConnectionError, NoScriptError, ResponseError

from settler_jobs.queue.cluster_route import slot_locator
from settler_jobs.queue.pipe import Address, Arg, PipelinedConnection

_SENDS: Final = 3  # a first send, one after loading scripts, one after a reconnect


class _Recorder:
    """Stands in for a pipeline: keeps the EVALSHA commands bullmq's scripts issue."""

    def __init__(self) -> None:
        self.commands: list[tuple[Arg, ...]] = []

    async def evalsha(self, sha: str, numkeys: int, *keys_and_args: Arg) -> str:
        self.commands.append(("EVALSHA", sha, numkeys, *keys_and_args))
        return "QUEUED"


class ClusterBulkAdder:
    """Adds jobs to bullmq queues atomically per call, over one connection per JobQueue."""

    def __init__(self, client: Redis, prefix: str) -> None:
        self._client = client
        self._pipe = PipelinedConnection(
            Address(), name=f"{prefix}:producer", locate=slot_locator(client, f"{prefix}:")
        )

    async def add(self, queue: bullmq.Queue, jobs: list[dict[str, Any]]) -> None:
        """Add `jobs` (name, data, opts with jobId) to `queue` in one transaction.

        Sending again is safe: a job whose id exists is left as it is.
        """
        recorder = _Recorder()
        for spec in jobs:
            opts = {**queue.jobsOpts, **(spec.get("opts") or {})}
            job = bullmq.Job(queue, spec.get("name"), spec.get("data"), opts, opts.get("jobId"))
            await queue.scripts.addJob(job, recorder)
        for attempt in range(_SENDS):
            try:
                replies = await self._pipe.transaction(recorder.commands)
            except NoScriptError:
                await self._load_scripts(queue)
                continue
            except ConnectionError:  # dropped, or the slot moved: reconnect and resend
                if attempt == _SENDS - 1:
                    raise
                continue
            errors = [str(r) for r in replies if isinstance(r, hiredis.ReplyError)]
            if not errors:
                return
            if not all(e.startswith("NOSCRIPT") for e in errors):
                raise ResponseError(f"adding jobs to {queue.name} failed: {errors[0]}")
            await self._load_scripts(queue)
        raise ResponseError(f"adding jobs to {queue.name}: scripts could not be loaded")

    async def _load_scripts(self, queue: bullmq.Queue) -> None:
        for script in queue.scripts.commands.values():
            await self._pipe.execute("SCRIPT", "LOAD", script.script)

    async def close(self) -> None:
        await self._pipe.close()
