"""Fair share inside a lane, folded into plain BullMQ priority numbers.

A *flow* is (tenant, class) within one lane; its weight is `importance(class, tier)`.
Each lane keeps a virtual clock V in "<queue>:sf:fair" (just below the level of its
waiting head; an empty lane jumps to the latest tag). A job's tag is
`max(F_flow, V) + step`, with `step = 200 / weight` (domain.fair_step), and its BullMQ
priority is that tag (clamped to V + horizon): the n-th waiting job of a flow sorts after
the first job of every other flow, and a flow of weight w gets w jobs per 200 units of
virtual time. Tags, quota checks and clock moves happen in one script (lua/reserve.lua)
before bullmq's own add scripts write the jobs with those priorities.

A flow's waiting jobs are `(F - V) / step`: the backlog quota reads it, so it also counts
jobs that Node producers' workers already consumed only until the clock passes them.

Caps: lua/pop.lua replaces bullmq's pop inside moveToActive and moveToFinished (run by
our lane loop only; Node workers ignore caps) and parks a capped tenant's jobs.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any, Final

from redis.asyncio import Redis

from settler_jobs.domain import PriorityClass

_POP_ANCHOR: Final = "local function moveJobFromPrioritizedToActive("
CLASSES: Final = tuple(c.value for c in PriorityClass)
# Per-tier counts of refused submissions ("<prefix>:settler:quota-refusals:all"), written
# by producers in any process and read back for metrics.
REFUSALS_KEY: Final = "settler:quota-refusals"


def lua(name: str) -> str:
    """The text of one of our Lua scripts (queue/lua/<name>.lua)."""
    return resources.files("settler_jobs.queue").joinpath(f"lua/{name}.lua").read_text()


_OPTS_ANCHOR: Final = "local opts = cmsgpack.unpack(ARGV[3])\n"


def wrap_add(script: str, name: str) -> str:
    """bullmq's add script as a Lua function `name(KEYS, ARGV, settlerPriority)` that adds
    the job with that priority (its opts, hash and score all carry it)."""
    if script.count(_OPTS_ANCHOR) != 1:
        raise RuntimeError("bullmq's add script does not unpack its options as expected")
    body = script.replace(_OPTS_ANCHOR, _OPTS_ANCHOR + "opts['priority'] = settlerPriority\n")
    return f"local function {name}(KEYS, ARGV, settlerPriority)\n{body}\nend\n"


def patch_pop(script: str) -> str:
    """bullmq's moveToActive / moveToFinished text with our capped pop in place of its own.

    Fails loudly if the pinned bullmq's helper is not found exactly once.
    """
    if script.count(_POP_ANCHOR) != 1:
        raise RuntimeError("bullmq's moveJobFromPrioritizedToActive helper was not found")
    start = script.index(_POP_ANCHOR)
    end = script.index("\nend\n", start) + len("\nend\n")
    return script[:start] + lua("pop") + script[end:]


class PatchedScript:
    """A bullmq script with a patched text: what `_PipeScript` needs (sha and text)."""

    def __init__(self, script: str) -> None:
        self.script = script
        self.sha = hashlib.sha1(script.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Tagged:
    """One job to tag: its lane, tenant, class and step."""

    queue: str
    tenant_id: str
    priority: PriorityClass
    step: int
    delayed: bool = False


@dataclass(frozen=True, slots=True)
class Refusal:
    """A tenant the reserve script refused: its backlog and quota."""

    tenant_id: str
    backlog: int
    quota: int


class FairTagger:
    """Runs the reserve script: quota checks for the call, then one priority per job."""

    def __init__(self, client: Redis, prefix: str, *, horizon: int, rebase_at: int) -> None:
        self._client = client
        self._prefix = prefix
        self._horizon = horizon
        self._rebase_at = rebase_at
        self._script = client.register_script(lua("fair_lib") + lua("reserve"))
        self._add_script: Any = None

    def _keys(self, queues: Sequence[str]) -> list[str]:
        keys: list[str] = []
        for q in queues:
            keys += [f"{self._prefix}:{q}:sf:fair", f"{self._prefix}:{q}:prioritized"]
        return keys

    def _head(
        self, queues: Sequence[str], quotas: Mapping[str, tuple[int, int]]
    ) -> tuple[dict[str, int], list[Any]]:
        index = {q: i + 1 for i, q in enumerate(queues)}
        args: list[Any] = [self._rebase_at, self._horizon, len(queues), len(quotas)]
        for tenant, (quota, adding) in quotas.items():
            args += [tenant, quota, adding]
        return index, args

    async def tag(
        self,
        queues: Sequence[str],
        jobs: Sequence[Tagged],
        quotas: Mapping[str, tuple[int, int]],
    ) -> list[int] | Refusal:
        """Priorities for `jobs`, or the first tenant whose backlog + adds pass its quota.

        `queues` are the lanes a backlog is summed over (and must include every job's
        lane); `quotas` maps tenant -> (quota, jobs it adds); a quota of 0 is unlimited.
        """
        index, args = self._head(queues, quotas)
        for job in jobs:
            args += [index[job.queue], job.tenant_id, job.priority.value, job.step]
            args.append(1 if job.delayed else 0)
        reply = await self._script(keys=self._keys(queues), args=args)
        return _reply(reply)

    async def add(
        self,
        queues: Sequence[str],
        jobs: Sequence[Tagged],
        quotas: Mapping[str, tuple[int, int]],
        bullmq_keys: Sequence[str],
        bullmq_args: Sequence[Sequence[Any]],
    ) -> list[int] | Refusal:
        """`tag`, and add every job (all of one lane) with bullmq's own add scripts in the
        same script: one round trip, and a refusal adds nothing.

        `bullmq_keys` are the prioritized-add keys (9) then the delayed-add keys (6);
        `bullmq_args` the three add arguments of each job (packed args, data, packed opts).
        """
        index, args = self._head(queues, quotas)
        for job, extra in zip(jobs, bullmq_args, strict=True):
            args += [index[job.queue], job.tenant_id, job.priority.value, job.step]
            args += [1 if job.delayed else 0, *extra]
        if self._add_script is None:
            from importlib import resources as res

            def text(name: str) -> str:
                return res.files("bullmq").joinpath(f"commands/{name}").read_text()

            script = (
                lua("fair_lib")
                + wrap_add(text("addPrioritizedJob-9.lua"), "settlerAddPrioritized")
                + wrap_add(text("addDelayedJob-6.lua"), "settlerAddDelayed")
                + lua("add")
            )
            self._add_script = self._client.register_script(script)
        reply = await self._add_script(keys=[*self._keys(queues), *bullmq_keys], args=args)
        return _reply(reply)

    async def refund(self, queue: str, tenant_id: str, priority: PriorityClass, step: int) -> None:
        """Give back the virtual time of a waiting job that was removed (cancelled)."""
        field = f"f:{tenant_id}:{priority.value}"
        await self._client.hincrby(f"{self._prefix}:{queue}:sf:fair", field, -step)

    async def backlog(self, queues: Sequence[str], tenant_id: str) -> dict[str, int]:
        """Waiting jobs of a tenant per lane, as the quota counts them (read-only)."""
        fields = [f"{k}:{tenant_id}:{c}" for c in CLASSES for k in ("f", "w")]
        pipe = self._client.pipeline(transaction=False)
        for q in queues:
            pipe.hmget(f"{self._prefix}:{q}:sf:fair", ["v", "fmaxw", *fields])
            pipe.zrange(f"{self._prefix}:{q}:prioritized", 0, 0, withscores=True)
            pipe.zcard(f"{self._prefix}:{q}:sf:park:{tenant_id}")
        replies = await pipe.execute()
        out: dict[str, int] = {}
        for i, q in enumerate(queues):
            values, head, parked = replies[3 * i : 3 * i + 3]
            clock = _clock(values[0], values[1], head)
            total = int(parked)
            for k in range(2, len(values), 2):
                f, w = values[k], values[k + 1]
                if f is not None and w is not None and int(float(w)) > 0:
                    ahead = float(f) - clock
                    if ahead > 0:
                        total += -(-int(ahead) // int(float(w)))
            out[q] = total
        return out


def _reply(reply: Any) -> list[int] | Refusal:
    if _text(reply[0]) == "REFUSED":
        return Refusal(_text(reply[1]), int(reply[2]), int(reply[3]))
    return [int(p) for p in reply[1:]]


def _clock(v: Any, fmax: Any, head: list[tuple[Any, float]]) -> float:
    clock = float(v or 0)
    if head:
        return max(clock, float(int(head[0][1]) // 0x100000000 - 1))
    return max(clock, float(fmax or 0))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
