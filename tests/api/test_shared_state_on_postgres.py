"""The API with SETTLER_QUEUE_BACKEND=postgres keeps its rate-limit buckets and reads worker
heartbeats in the database: 429s come from rows of `shared_values`, /readyz has no Redis,
and the dashboard's login throttle counts failures there."""

from __future__ import annotations

import pytest
from pydantic import SecretStr
from sqlalchemy import text

from settler_jobs.config import Settings
from settler_jobs.storage.db import create_engine
from tests.api.live import OPERATOR_TOKEN, auth, live_api
from tests.integration.conftest import postgres_database  # noqa: F401 - the fixture

pytestmark = pytest.mark.postgres


@pytest.fixture
def pg_settings(api_settings: Settings, postgres_database: str) -> Settings:  # noqa: F811
    return api_settings.model_copy(
        update={
            "queue_backend": "postgres",
            "database_url": postgres_database,
            "api_rate_limits": {"free": 0.5, "enterprise": 0.0},
            "api_rate_burst_s": 4.0,
            "secret_key": SecretStr("k" * 43),
        }
    )


async def _buckets(settings: Settings) -> list[str]:
    engine = create_engine(settings.effective_database_url)
    try:
        async with engine.connect() as connection:
            rows = await connection.execute(
                text("SELECT key FROM shared_values WHERE key LIKE :p ORDER BY key"),
                {"p": f"{settings.queue_prefix}:settler:ratelimit:%"},
            )
            return [str(row[0]) for row in rows]
    finally:
        await engine.dispose()


async def test_rate_limits_and_readiness_use_the_database(pg_settings: Settings) -> None:
    async with live_api(pg_settings) as live:
        free = await live.tenant_key("acme-pg", "free")
        big = await live.tenant_key("big-pg", "enterprise")
        answers = [await live.http.get("/v1/jobs", headers=auth(free)) for _ in range(3)]
        assert [a.status_code for a in answers] == [200, 200, 429]
        assert 1 <= int(answers[2].headers["retry-after"]) <= 2
        for _ in range(3):
            assert (await live.http.get("/v1/jobs", headers=auth(big))).status_code == 200
        ready = await live.http.get("/readyz")
        assert ready.status_code == 503  # no worker has beaten yet
        checks = ready.json()["checks"]
        assert checks == {
            "queue": "ok",
            "database": "ok",
            "workers": "LookupError: no worker heartbeat",
        }
    assert await _buckets(pg_settings) == [f"{pg_settings.queue_prefix}:settler:ratelimit:acme-pg"]


async def test_dashboard_login_failures_are_throttled(pg_settings: Settings) -> None:
    async with live_api(pg_settings) as live:
        form = await live.http.get("/dashboard/login")
        assert form.status_code == 200

        async def attempt(token: str) -> int:
            nonce = live.http.cookies["settler_dash_login"]  # each answer sets a new one
            answer = await live.http.post(
                "/dashboard/login", data={"csrf": nonce, "token": token}, follow_redirects=False
            )
            return answer.status_code

        assert [await attempt("wrong") for _ in range(10)] == [401] * 10
        assert await attempt("wrong") == 429
        assert await attempt(OPERATOR_TOKEN) == 429  # even the right token waits
