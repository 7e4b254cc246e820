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


async def test_a_nul_in_any_json_string_is_422_and_nothing_is_stored(api: LiveApi) -> None:
    key = await api.tenant_key("acme")
    headers = auth(key) | {"content-type": "application/json"}
    bodies = [
        ("/v1/jobs", b'{"kind": "cache-warming", "data": {"x": "a\\u0000b"}}'),
        ("/v1/webhooks/endpoints", b'{"url": "https://hooks.example/\\u0000"}'),
        ("/v1/reconciliations", b'{"name": "n\\u0000"}'),
    ]
    for path, body in bodies:
        answer = await api.http.post(path, content=body, headers=headers)
        assert answer.status_code == 422, path
        assert answer.json() == {
            "error": "invalid_input",
            "detail": "request strings must not contain NUL characters (U+0000)",
        }

    async def split() -> AsyncIterator[bytes]:  # the escape cut between two chunks
        yield b'{"kind": "cache-warming", "data": {"x": "a\\u00'
        yield b'00"}}'

    answer = await api.http.post("/v1/jobs", content=split(), headers=headers)
    assert answer.status_code == 422
    listed = await api.http.get("/v1/jobs", headers=auth(key))
    assert listed.json()["jobs"] == []
    # An escaped backslash followed by "u0000" is text, not a NUL.
    email = {"to": "ann@example.com", "template": "welcome", "data": {"name": "C:\\u0000dir"}}
    text = {"kind": "email-sending", "data": email}
    assert (await api.http.post("/v1/jobs", json=text, headers=auth(key))).status_code == 201


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
