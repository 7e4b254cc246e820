"""Every metric the alerting rules read is exported by a real worker's /metrics endpoint."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from settler_jobs.config import Settings
from settler_jobs.context import JobContext
from settler_jobs.domain import JobState, RetryPolicy, Tier
from settler_jobs.errors import PermanentFailure
from settler_jobs.kinds import JobKind, Registry
from settler_jobs.records import JobRecord, Submission
from tests.harness import System, system
from tests.helpers import eventually
from tests.promql import metric_names, rules


async def _ok(payload: dict[str, Any], ctx: JobContext) -> str:
    return "ok"


async def _refuse(payload: dict[str, Any], ctx: JobContext) -> None:
    raise PermanentFailure("bad input")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _scrape(url: str) -> dict[str, float]:
    text = httpx.get(url, timeout=5).text
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[sample.name] = samples.get(sample.name, 0.0) + sample.value
    return samples


async def test_every_metric_of_every_rule_is_scraped_from_a_worker(settings: Settings) -> None:
    settings = settings.model_copy(update={"alert_interval_s": 0.2})
    once = RetryPolicy(attempts=1, base_delay_s=0)
    registry = Registry([JobKind("ok", _ok), JobKind("refuse", _refuse, retry=once)])
    async with system(settings, registry) as sys_:
        port = _free_port()
        sys_.runtime.metrics.serve("127.0.0.1", port)
        done = await sys_.queue.submit(Submission("ok", {}, "t1", Tier.FREE))
        dead = await sys_.queue.submit(Submission("refuse", {}, "t1", Tier.FREE))
        for job_id, state in ((done.job.id, JobState.COMPLETED), (dead.job.id, JobState.FAILED)):
            await _reaches(sys_, job_id, state)
        url = f"http://127.0.0.1:{port}/metrics"
        # The alerts loop has exported a snapshot taken after the dead letter was stored.
        scraped = await eventually(
            lambda: asyncio.to_thread(_scrape, url), lambda s: s.get("dlq_open_entries") == 1.0
        )
    needed = {name: rule["alert"] for rule in rules() for name in metric_names(rule["expr"])}
    missing = {name: alert for name, alert in needed.items() if name not in scraped}
    assert not missing, f"metrics read by rules but not exported: {missing}"
    assert scraped["settler_workers_alive"] >= 1
    assert scraped["dlq_open_entries_recent"] == 1.0
    assert scraped["job_failures_total"] == 1.0 and scraped["job_completions_total"] == 1.0
    assert "queue_active_oldest_seconds" in scraped and "schedule_missed" in scraped


async def _reaches(sys_: System, job_id: str, state: JobState) -> None:
    async def probe() -> JobRecord:
        return await sys_.queue.get(job_id)

    await eventually(probe, lambda r: r.state is state)
