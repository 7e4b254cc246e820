"""Property-based fuzzing of every operation in /openapi.json: no answer may be a 5xx.

A live uvicorn serves the app in a thread (schemathesis calls synchronously); requests
carry a real tenant key, or the operator token on /v1/admin routes, so they reach the
handlers. Webhook URLs resolve through a stub (no DNS); no worker runs.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import schemathesis
import uvicorn
from hypothesis import HealthCheck, settings
from pydantic import SecretStr
from schemathesis.checks import not_a_server_error
from schemathesis.generation.modes import GenerationMode

from settler_jobs import heartbeat
from settler_jobs.api import create_app
from settler_jobs.config import Settings
from settler_jobs.domain import Tier
from settler_jobs.storage.db import create_engine, session_factory
from settler_jobs.storage.migrate import upgrade_async
from settler_jobs.tenants.directory import TenantDirectory
from tests.api.live import OPERATOR_TOKEN
from tests.api.test_isolation import public_dns

MAX_EXAMPLES = 12


def _clean(url: str, prefix: str) -> None:
    client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        for start in range(0, len(keys), 500):
            client.delete(*keys[start : start + 500])
    finally:
        client.close()


@pytest.fixture(scope="module")
def fuzz_target(
    redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, str]]:
    """(base URL, tenant key) of a live API in a thread, for this module."""
    tmp: Path = tmp_path_factory.mktemp("fuzz")
    prefix = f"test-{uuid.uuid4().hex[:12]}"
    own = Settings(
        redis_url=redis_url,
        queue_prefix=prefix,
        data_dir=tmp / "data",
        database_url=f"sqlite+aiosqlite:///{tmp / 'settler.db'}",
        metrics_port=0,
        operator_token=SecretStr(OPERATOR_TOKEN),
        api_rate_limits={},
    )
    plain = asyncio.run(_tenant_key(own))
    # A worker's heartbeat, so /readyz answers 200 (its 503 is by design, not a fault).
    beat = heartbeat.WorkerInfo("fuzz-worker", "host", 1, ("echo",), 1, 0, 1, 1)
    with redis.Redis.from_url(redis_url) as client:
        client.set(heartbeat.heartbeat_key(prefix, beat.id), beat.to_json(), px=600_000)
    app = create_app(own, resolver=public_dns)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    started = threading.Event()
    while not server.started and thread.is_alive():
        started.wait(0.02)  # uvicorn offers no start event: poll its flag
    assert server.started
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}", plain
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()
        _clean(redis_url, prefix)


async def _tenant_key(own: Settings) -> str:
    """A key of a growth tenant, made before the server starts (same database)."""
    await upgrade_async(own.effective_database_url)
    engine = create_engine(own.effective_database_url)
    try:
        directory = TenantDirectory(session_factory(engine))
        await directory.create_tenant("fuzz", Tier.GROWTH)
        return (await directory.create_key("fuzz"))[1]
    finally:
        await engine.dispose()


# The spec is static: build it from an app that is never started (no lifespan runs).
schema = schemathesis.openapi.from_dict(create_app(Settings(api_rate_limits={})).openapi())
# Valid and invalid inputs alike: bad input must answer 4xx, never 5xx.
schema.config.generation.update(modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE])


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_no_operation_answers_5xx(case: Any, fuzz_target: tuple[str, str]) -> None:
    base, key = fuzz_target
    assert base
    token = OPERATOR_TOKEN if case.path.startswith("/v1/admin") else key
    case.call_and_validate(
        base_url=base,
        headers={"Authorization": f"Bearer {token}"},
        checks=[not_a_server_error],
        timeout=10,
    )
