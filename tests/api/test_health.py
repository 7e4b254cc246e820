"""/healthz, /readyz (Redis, database, worker heartbeats), /metrics and the OpenAPI docs."""

from __future__ import annotations

import redis.asyncio

from settler_jobs import heartbeat
from settler_jobs.config import Settings
from settler_jobs.shared_state import RedisState
from tests.api.kinds import registry
from tests.api.live import LiveApi, auth, live_api
from tests.harness import system
from tests.helpers import eventually


async def test_readyz_needs_a_heartbeating_worker(api_settings: Settings) -> None:
    fast = api_settings.model_copy(update={"worker_heartbeat_s": 0.2})
    async with system(fast, registry(), start=False) as sys_, live_api(fast) as live:
        idle = await live.http.get("/readyz")
        assert idle.status_code == 503
        assert idle.json()["checks"] == {
            "redis": "ok",
            "database": "ok",
            "workers": "LookupError: no worker heartbeat",
        }
        await sys_.runtime.start()
        ready = await eventually(lambda: live.http.get("/readyz"), lambda r: r.status_code == 200)
        assert ready.json() == {
            "status": "ok",
            "checks": {"redis": "ok", "database": "ok", "workers": "ok"},
            "workers": 1,
        }
        client = redis.asyncio.from_url(fast.redis_url or "", decode_responses=True)
        try:
            [info] = await heartbeat.live_workers(RedisState(client), fast.queue_prefix)
            assert info.id == sys_.runtime.worker_id
            assert "echo" in info.lanes and info.concurrency > 0 and info.running == 0
            await sys_.runtime.stop(1)
            # A clean stop removes the heartbeat at once.
            assert await heartbeat.live_workers(RedisState(client), fast.queue_prefix) == []
        finally:
            await client.aclose()
        assert (await live.http.get("/readyz")).status_code == 503


async def test_heartbeat_expires_when_a_worker_stops_beating(settings: Settings) -> None:
    client = redis.asyncio.from_url(settings.redis_url or "", decode_responses=True)
    info = heartbeat.WorkerInfo("w1", "host", 1, ("echo",), 3, 0, 1, 1)
    try:
        await heartbeat.beat(RedisState(client), settings.queue_prefix, info, interval_s=0.4)
        assert await heartbeat.live_workers(RedisState(client), settings.queue_prefix) == [info]
        await eventually(
            lambda: heartbeat.live_workers(RedisState(client), settings.queue_prefix),
            lambda found: found == [],
            timeout_s=5,
        )
    finally:
        await client.aclose()


async def test_healthz_metrics_and_docs(api: LiveApi) -> None:
    assert (await api.http.get("/healthz")).json() == {"status": "ok"}
    key = await api.tenant_key("acme")
    await api.http.get("/v1/jobs", headers=auth(key))
    metrics = await api.http.get("/metrics")
    assert metrics.status_code == 200
    assert "api_requests_total" in metrics.text
    assert 'status="200"' in metrics.text and "api_request_duration_seconds" in metrics.text
    spec = (await api.http.get("/openapi.json")).json()
    assert "/v1/jobs" in spec["paths"] and "/v1/admin/dlq/{entry_id}/retry" in spec["paths"]
    assert set(spec["components"]["securitySchemes"]) == {"TenantKey", "OperatorToken"}
    assert (await api.http.get("/docs")).status_code == 200
