"""Bad input and overload: body limit (declared and chunked), 422 paths, 429, 503."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from settler_jobs.config import Settings
from settler_jobs.redis_server import EmbeddedRedis
from tests.api.live import OPERATOR, LiveApi, auth, live_api

LIMIT = 4096


@pytest.fixture
async def small(api_settings: Settings) -> AsyncIterator[LiveApi]:
    async with live_api(api_settings.model_copy(update={"api_max_body_bytes": LIMIT})) as live:
        yield live


async def test_declared_body_over_the_limit_is_413(small: LiveApi) -> None:
    key = await small.tenant_key("acme")
    body = json.dumps({"kind": "cache-warming", "data": {"x": "a" * LIMIT}})
    answer = await small.http.post(
        "/v1/jobs", content=body, headers=auth(key) | {"content-type": "application/json"}
    )
    assert answer.status_code == 413
    assert answer.json()["error"] == "body_too_large"


async def test_chunked_body_over_the_limit_is_413(small: LiveApi) -> None:
    key = await small.tenant_key("acme")

    async def chunks() -> AsyncIterator[bytes]:
        # No Content-Length: httpx sends this body with chunked transfer encoding.
        yield b'{"kind": "cache-warming", "data": {"x": "'
        for _ in range(64):  # 64 KiB in all, far past the limit
            yield b"a" * 1024
        yield b'"}}'

    answer = await small.http.post(
        "/v1/jobs", content=chunks(), headers=auth(key) | {"content-type": "application/json"}
    )
    assert answer.status_code == 413
    assert answer.json()["error"] == "body_too_large"
    # A body under the limit still passes through the same path.
    ok = await small.http.post("/v1/jobs", json={"kind": "cache-warming"}, headers=auth(key))
    assert ok.status_code == 201


async def test_validation_errors_name_the_field(api: LiveApi) -> None:
    key = await api.tenant_key("acme")
    answer = await api.http.post(
        "/v1/jobs", json={"kind": "cache-warming", "delay_s": -1}, headers=auth(key)
    )
    assert answer.status_code == 422
    assert answer.json()["detail"][0]["loc"] == ["body", "delay_s"]
    bad_json = await api.http.post(
        "/v1/jobs", content=b"{not json", headers=auth(key) | {"content-type": "application/json"}
    )
    assert bad_json.status_code == 422


async def test_rate_limit_answers_429_with_retry_after(api_settings: Settings) -> None:
    limited = api_settings.model_copy(
        update={"api_rate_limits": {"free": 0.5, "enterprise": 0.0}, "api_rate_burst_s": 4.0}
    )
    async with live_api(limited) as live:
        free, big = (
            await live.tenant_key("acme", "free"),
            await live.tenant_key("big", "enterprise"),
        )
        answers = [await live.http.get("/v1/jobs", headers=auth(free)) for _ in range(3)]
        assert [a.status_code for a in answers] == [200, 200, 429]
        assert answers[2].json()["error"] == "rate_limited"
        assert 1 <= int(answers[2].headers["retry-after"]) <= 2
        # Buckets are per tenant, and an unlimited tier is never limited.
        for _ in range(5):
            assert (await live.http.get("/v1/jobs", headers=auth(big))).status_code == 200


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _timed(
    http: httpx.AsyncClient, path: str, **kwargs: object
) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    answer = await http.request(kwargs.pop("method", "GET"), path, **kwargs)  # type: ignore[arg-type]
    return answer, time.monotonic() - started


async def test_dead_redis_port_answers_503_fast(api_settings: Settings) -> None:
    dead = api_settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{_free_port()}/0"})
    async with live_api(dead) as live:
        key = await live.tenant_key("acme")
        answer, took = await _timed(
            live.http, "/v1/jobs", method="POST", json={"kind": "cache-warming"}, headers=auth(key)
        )
        assert answer.status_code == 503 and took < 2.0
        assert answer.headers["retry-after"] == "2"
        assert answer.json()["error"] == "unavailable"
        ready, took = await _timed(live.http, "/readyz")
        assert ready.status_code == 503 and took < 2.0
        assert ready.json()["checks"]["redis"] != "ok"
        assert (await live.http.get("/healthz")).status_code == 200


@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(tmp_path / "redis")
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def test_stopped_redis_answers_503_fast_then_recovers_nothing_hangs(
    api_settings: Settings, embedded: EmbeddedRedis
) -> None:
    own = api_settings.model_copy(update={"redis_url": embedded.url})
    async with live_api(own) as live:
        key = await live.tenant_key("acme")
        up = await live.http.post("/v1/jobs", json={"kind": "cache-warming"}, headers=auth(key))
        assert up.status_code == 201
        embedded.stop()
        for method, path, body in (
            ("POST", "/v1/jobs", {"kind": "cache-warming"}),
            ("GET", "/v1/jobs", None),
            ("GET", f"/v1/jobs/{up.json()['job']['id']}", None),
        ):
            answer, took = await _timed(
                live.http, path, method=method, json=body, headers=auth(key)
            )
            assert answer.status_code == 503, (path, answer.text)
            assert took < 2.0, (path, took)
        queues, took = await _timed(live.http, "/v1/admin/queues", headers=OPERATOR)
        assert queues.status_code == 503 and took < 2.0
