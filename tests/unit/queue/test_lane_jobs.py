"""The lane loop's lean job and finish-argument builders match bullmq's own."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from unittest import mock

import msgpack
import pytest
from bullmq import Job
from bullmq.backends.redis_backend import RedisBackend
from bullmq.redis_connection import RedisConnection
from bullmq.scripts import raw2NextJobData
from redis.asyncio import Redis

from settler_jobs.queue.lane_base import _QueueView
from settler_jobs.queue.lane_jobs import CompletionArgs, job_from_raw, next_job_data
from settler_jobs.queue.pipe import Head, _pack, _pack_after

OPTS = {
    "removeOnComplete": {"age": 86400, "count": 10},
    "backoff": {"type": "exponential", "delay": 2000, "jitter": 0.5},
    "priority": 8,
    "jobId": "j1",
    "timestamp": 1796598217664,
    "delay": 0,
    "attempts": 3,
}
DATA = {"tenantId": "t-000", "tenantTier": "growth", "jobId": "j1", "x": [1, 2]}


def raw_job(**extra: Any) -> dict[str, Any]:
    """A job hash as moveToActive returns it (after a first start)."""
    raw = {
        "timestamp": "1796598217664",
        "priority": "8",
        "data": json.dumps(DATA),
        "delay": "0",
        "name": "kind-a",
        "opts": json.dumps(OPTS),
        "processedOn": "1796598217700",
        "ats": "1",
        "pb": "worker-1",
    }
    raw.update(extra)
    return raw


@pytest.fixture
def view() -> Iterator[_QueueView]:
    client = Redis()  # never connected: the builders only read names and keys
    backend = RedisBackend("lane-a", RedisConnection(client), None, "pfx", False)
    yield _QueueView(backend, {"prefix": "pfx", "lockDuration": 30_000, "limiter": None})


def attrs(job: Any) -> dict[str, Any]:
    return dict(vars(job))


@pytest.mark.parametrize(
    "extra",
    [
        {},
        {"atm": "2", "stc": "1"},
        {"attemptsMade": "1", "progress": "42", "finishedOn": "5"},
        {"opts": json.dumps({**OPTS, "backoff": 500, "removeOnFail": True})},
        {"opts": json.dumps({"attempts": 1})},
        # Not plain: handed to bullmq's fromJSON.
        {"rjk": "sched-1"},
        {"stacktrace": json.dumps(["boom"]), "failedReason": "boom"},
        {"parentKey": "pfx:p:1", "parent": json.dumps({"id": "1", "queueKey": "pfx:p"})},
        {"opts": json.dumps({**OPTS, "fpof": True})},
        {"opts": json.dumps({**OPTS, "de": {"id": "d1"}})},
    ],
)
def test_job_from_raw_builds_what_fromjson_builds(view: _QueueView, extra: dict[str, Any]) -> None:
    raw = raw_job(**extra)
    ours, theirs = job_from_raw(view, dict(raw), "j1"), Job.fromJSON(view, dict(raw), "j1")
    assert type(ours) is Job
    assert attrs(ours) == attrs(theirs)
    assert list(attrs(ours)) == list(attrs(theirs))


def job_of(view: _QueueView, **opts: Any) -> Any:
    return Job.fromJSON(view, raw_job(opts=json.dumps({**OPTS, **opts})), "j1")


@pytest.mark.parametrize(
    ("keep", "result", "fetch", "opts"),
    [
        ({"age": 86400, "count": 10}, None, True, {}),
        ({"count": 10, "age": 86400}, {"ok": 1}, False, {}),
        (True, "text", True, {}),
        (False, 3, True, {}),
        (25, [1, 2], True, {}),
        ({"age": 60}, None, True, {"attempts": 5}),
        ({"count": 2, "limit": 3}, None, True, {}),  # not cached
        ({"age": 60}, None, True, {"fpof": True}),  # bullmq's builder
    ],
)
def test_completion_args_match_bullmq(
    view: _QueueView, keep: Any, result: Any, fetch: bool, opts: dict[str, Any]
) -> None:
    scripts = view.backend.scripts
    build = CompletionArgs(scripts, view.opts)
    job = job_of(view, **opts)
    with mock.patch("time.time", return_value=1_800_000_000.123):
        for token in ("w:1", "w:2", "w:1"):  # the second "w:1" comes from the cache
            for made in (0, 1, 0):
                job.attemptsMade = made
                ours = build(job, result, keep, token, fetch)
                theirs = scripts.moveToCompletedArgs(job, result, keep, token, fetch)
                assert ours == theirs
                assert msgpack.unpackb(ours[1][7])["token"] == token
                assert tuple(ours[0][:11]) == build.head_keys  # what the lane packs once


def test_a_packed_head_sends_the_same_bytes_as_the_whole_command(view: _QueueView) -> None:
    build = CompletionArgs(view.backend.scripts, view.opts)
    keys, args = build(job_of(view), {"r": "ü"}, True, "w:1", True)
    head = Head.of("EVALSHA", "f" * 40, len(keys), *build.head_keys)
    whole = _pack(("EVALSHA", "f" * 40, len(keys), *keys, *args))
    assert _pack_after(head, (*keys[11:], *args)) == whole


def test_completion_args_fail_like_bullmq_on_a_result_json_cannot_hold(view: _QueueView) -> None:
    build = CompletionArgs(view.backend.scripts, view.opts)
    with pytest.raises(ValueError):
        build(job_of(view), float("nan"), True, "w:1", True)
    with pytest.raises(TypeError):
        build(job_of(view), object(), True, "w:1", True)


@pytest.mark.parametrize(
    "reply",
    [
        [["name", "a", "data", "{}", "opts", "{}"], "7", 0, 0],
        [[], "7", 5, 0],
        [None, None, 0, 1796598217664],
        [["name", "a"], "7"],
        [],
        None,
        0,
    ],
)
def test_next_job_data_reads_a_fetch_next_reply_as_bullmq_does(reply: Any) -> None:
    assert next_job_data(reply) == raw2NextJobData(reply)
