"""The lane loop's per-job bullmq plumbing, without bullmq's per-call overhead.

`job_from_raw` builds the same `bullmq.Job` as `Job.fromJSON` and `CompletionArgs`
the same keys and arguments as `Scripts.moveToCompletedArgs` (tests compare them with
bullmq's own); each falls back to bullmq's code for anything but a plain job.
`next_job_data` reads a fetch-next reply as `raw2NextJobData` does. They run once per
job, where bullmq's versions spend about twice (the job) and four times (the arguments)
as long: four `json.loads`, the parent and deduplication handling, a `getKeys` list and
a fresh msgpack of the finish options every time (bench/RESULTS.md, section t).
"""

from __future__ import annotations

import json
import time
from typing import Any, Final

import msgpack
from bullmq import Job
from bullmq.backoffs import Backoffs

# Job hash fields a plain job can have; any other (parent, rjk, stacktrace, returnvalue,
# failedReason, defa, ...) goes through bullmq's `Job.fromJSON`.
_PLAIN_FIELDS: Final = frozenset(
    {"name", "data", "opts", "timestamp", "delay", "priority", "processedOn", "ats", "atm"}
    | {"attemptsMade", "stc", "pb", "progress", "finishedOn"}
)
# Options bullmq's Job treats specially (parents, flags it renames, deduplication).
_SPECIAL_OPTS: Final = frozenset(
    {"parent", "fpof", "cpof", "idof", "rdof", "kl", "de"}
    | {"failParentOnFailure", "continueParentOnFailure", "ignoreDependencyOnFailure"}
    | {"removeDependencyOnFailure", "keepLogs", "deduplication"}
)
_loads = json.loads
_new = object.__new__


def job_from_raw(queue: Any, raw: dict[str, Any], job_id: str) -> Any:
    """`Job.fromJSON(queue, raw, job_id)` for a job hash as moveToActive returns it."""
    if not _PLAIN_FIELDS.issuperset(raw):
        return Job.fromJSON(queue, raw, job_id)
    opts = _loads(raw.get("opts", "{}"))
    if not _SPECIAL_OPTS.isdisjoint(opts):
        return Job.fromJSON(queue, raw, job_id)
    job = _new(Job)
    d = job.__dict__
    # The attributes in the order Job.__init__ sets them, then fromJSON's overrides.
    d["name"] = raw.get("name")
    d["id"] = job_id
    progress = raw.get("progress")
    d["progress"] = 0 if progress is None or progress == "0" else _loads(progress)
    d["timestamp"] = int(raw.get("timestamp", "0"))
    final = {"attempts": 0, "delay": 0}
    final.update(opts)
    final["backoff"] = Backoffs.normalize(opts.get("backoff"))
    d["discarded"] = False
    d["opts"] = final
    d["queue"] = queue
    d["delay"] = int(raw.get("delay", "0"))
    d["priority"] = int(raw.get("priority", "0"))
    d["attempts"] = opts.get("attempts", 1)
    d["attemptsMade"] = int(raw.get("attemptsMade") or raw.get("atm") or "0")
    ats = raw.get("ats")
    d["attemptsStarted"] = int(ats) if ats else 0
    d["stalledCounter"] = int(raw.get("stc") or "0")
    d["data"] = _loads(raw.get("data", "{}"))
    d["removeOnComplete"] = opts.get("removeOnComplete", True)
    d["removeOnFail"] = opts.get("removeOnFail", False)
    processed = raw.get("processedOn")
    d["processedOn"] = int(processed) if processed else 0
    finished = raw.get("finishedOn")
    d["finishedOn"] = int(finished) if finished else 0
    d["returnvalue"] = None
    d["deferredFailure"] = None
    d["failedReason"] = None
    d["repeatJobKey"] = None
    d["token"] = None
    d["parentKey"] = None
    d["parent"] = None
    d["stacktrace"] = []
    d["deduplication_id"] = None
    d["backend"] = queue.backend
    d["queueQualifiedName"] = queue.qualifiedName
    return job


def next_job_data(raw: Any) -> list[Any]:
    """bullmq's `raw2NextJobData` (a fetch-next reply), the hash pairs zipped in C."""
    if not raw:
        return [None, None, None, None]
    pairs = raw[0]
    data = dict(zip(pairs[::2], pairs[1::2], strict=True)) if pairs else None
    if len(raw) == 2:
        return [data, raw[1], None, None]
    return [data, raw[1], raw[2], raw[3]]


class CompletionArgs:
    """`Scripts.moveToCompletedArgs` for one lane, with its keys and packed options reused.

    The finish options differ per job only in the token, attempts and attemptsMade and
    the job's `removeOnComplete`; a plain job's are packed once per combination.
    """

    def __init__(self, scripts: Any, queue_opts: dict[str, Any]) -> None:
        self._scripts = scripts
        keys = scripts.keys
        self.head_keys = tuple(keys[k] for k in _FINISH_KEYS)  # the same for every job
        self._base = keys[""]
        self._metrics = scripts.toKey("metrics:completed")
        self._marker = keys["marker"]
        metrics = queue_opts.get("metrics")
        self._metrics_size = metrics.get("maxDataPoints", "") if metrics is not None else ""
        self._limiter = queue_opts.get("limiter")
        self._lock_ms = queue_opts.get("lockDuration")
        self._packed: dict[tuple[Any, ...], bytes] = {}

    def __call__(
        self, job: Any, result: Any, keep: Any, token: str, fetch: bool
    ) -> tuple[list[Any], list[Any]]:
        """Keys and arguments of moveToFinished completing `job` with `result`."""
        if not _SPECIAL_OPTS.isdisjoint(job.opts):
            return self._scripts.moveToCompletedArgs(job, result, keep, token, fetch)  # type: ignore[no-any-return]
        value = (
            "null" if result is None else json.dumps(result, separators=(",", ":"), allow_nan=False)
        )
        keys = [*self.head_keys, self._base + job.id, self._metrics, self._marker]
        packed = self._pack(job, keep, token)
        args = [job.id, round(time.time() * 1000), "returnvalue", value, "completed"]
        args += ["1" if fetch else "", self._base, packed]
        return keys, args

    def _pack(self, job: Any, keep: Any, token: str) -> bytes:
        keep_jobs = _keep_jobs(keep)
        if not _KEEP_FIELDS.issuperset(keep_jobs) or not all(
            type(v) is int for v in keep_jobs.values()
        ):
            return self._packb(job, keep_jobs, token)
        # The items in order: msgpack keeps the dict's order, and so does the cache.
        cache_key = (token, job.attempts, job.attemptsMade, *keep_jobs.items())
        packed = self._packed.get(cache_key)
        if packed is None:
            if len(self._packed) >= _CACHE_MAX:
                self._packed.clear()
            packed = self._packed[cache_key] = self._packb(job, keep_jobs, token)
        return packed

    def _packb(self, job: Any, keep_jobs: Any, token: str) -> bytes:
        packed: bytes = msgpack.packb(
            {
                "token": token,
                "keepJobs": keep_jobs,
                "limiter": self._limiter,
                "lockDuration": self._lock_ms,
                "attempts": job.attempts,
                "attemptsMade": job.attemptsMade,
                "maxMetricsSize": self._metrics_size,
                "fpof": False,
                "cpof": False,
                "idof": False,
                "rdof": False,
            },
            use_bin_type=True,
        )
        return packed


_FINISH_KEYS: Final = (
    "wait",
    "active",
    "prioritized",
    "events",
    "stalled",
    "limiter",
    "delayed",
    "paused",
    "meta",
    "pc",
    "completed",
)
_KEEP_FIELDS: Final = frozenset({"age", "count"})
_CACHE_MAX: Final = 4096


def _keep_jobs(keep: Any) -> Any:
    """bullmq's `getKeepJobs` (moveToFinishedArgs)."""
    if type(keep) is int:
        return {"count": keep}
    if type(keep) is dict:
        return keep
    if keep:
        return {"count": 0}
    return {"count": -1}
