"""SETTLER_QUEUE_BACKEND=postgres end to end at the edges: no Redis at all, the API's 503
within 2 s when PostgreSQL goes away (and back), the CLI's exit code 5 when it is
unreachable."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pydantic import SecretStr
from sqlalchemy import make_url

from settler_jobs.config import Settings
from settler_jobs.queue.pg import PgJobQueue
from settler_jobs.secrets_box import SecretBox
from settler_jobs.wiring import open_services
from tests.api.kinds import registry
from tests.api.live import OPERATOR_TOKEN, auth, live_api

QUEUE_UNAVAILABLE_EXIT = 5


def _closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class TcpProxy:
    """Forwards a local port to PostgreSQL; `cut()` drops every connection and refuses new
    ones (the server "goes down"), `restore()` accepts again on the same port."""

    def __init__(self, target_port: int) -> None:
        self._target = target_port
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self._target)
        self._writers |= {writer, up_writer}

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))

    async def cut(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()
        tasks, self._tasks = self._tasks, set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def restore(self) -> None:
        await self.start()


@pytest.fixture
async def proxy(postgres_database: str) -> AsyncIterator[TcpProxy]:
    port = make_url(postgres_database).port or 5432
    p = TcpProxy(port)
    await p.start()
    try:
        yield p
    finally:
        await p.cut()


def _pg_settings(database_url: str, tmp_path: Path, **extra: object) -> Settings:
    return Settings(
        queue_backend="postgres",
        database_url=database_url,
        # A Redis URL nobody listens on: anything touching Redis would fail loudly.
        redis_url=f"redis://127.0.0.1:{_closed_port()}/0",
        data_dir=tmp_path / "data",
        metrics_port=0,
        operator_token=SecretStr(OPERATOR_TOKEN),
        secret_key=SecretStr(SecretBox.generate_key()),
        **extra,  # type: ignore[arg-type]
    )


async def test_postgres_backend_opens_no_redis(postgres_database: str, tmp_path: Path) -> None:
    settings = _pg_settings(postgres_database, tmp_path)
    async with open_services(settings, registry(), migrate=True) as services:
        assert services.redis_url is None and services.embedded is None
        assert isinstance(services.queue, PgJobQueue)
        await services.queue.ping()
    assert not any((tmp_path / "data").rglob("redis*"))


async def test_api_answers_503_within_2s_while_postgres_is_down(
    postgres_database: str, proxy: TcpProxy, tmp_path: Path
) -> None:
    url = make_url(postgres_database).set(port=proxy.port).render_as_string(hide_password=False)
    settings = _pg_settings(url, tmp_path)
    # Rate-limit buckets have no PostgreSQL store yet: unlimited tiers need none.
    settings = settings.model_copy(
        update={"api_rate_limits": {t: 0.0 for t in settings.api_rate_limits}}
    )
    async with live_api(settings, registry=registry()) as live:
        key = await live.tenant_key("acme")
        made = await live.http.post("/v1/jobs", json={"kind": "echo"}, headers=auth(key))
        assert made.status_code == 201, made.text
        ready = await live.http.get("/readyz")
        assert ready.json()["checks"]["queue"] == "ok"
        assert ready.json()["checks"]["database"] == "ok"
        assert "redis" not in ready.json()["checks"]

        await proxy.cut()
        for path, method, body in (
            ("/v1/jobs", "POST", {"kind": "echo"}),
            (f"/v1/jobs/{made.json()['job']['id']}", "GET", None),
            ("/readyz", "GET", None),
        ):
            started = time.monotonic()
            answer = await live.http.request(method, path, json=body, headers=auth(key))
            took = time.monotonic() - started
            assert answer.status_code == 503 and took < 2.0, (path, answer.text, took)
        down = await live.http.get("/readyz")
        assert down.json()["checks"]["queue"] != "ok"
        assert down.json()["checks"]["database"] != "ok"
        assert (await live.http.get("/healthz")).status_code == 200

        await proxy.restore()
        back = await live.http.get(f"/v1/jobs/{made.json()['job']['id']}", headers=auth(key))
        assert back.status_code == 200 and back.json()["id"] == made.json()["job"]["id"]


def test_cli_exits_5_when_postgres_is_unreachable(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SETTLER_")}
    env.pop("REDIS_URL", None)
    env |= {
        "SETTLER_QUEUE_BACKEND": "postgres",
        "DATABASE_URL": f"postgresql://postgres@127.0.0.1:{_closed_port()}/settler",
        "SETTLER_DATA_DIR": str(tmp_path / "data"),
        "SETTLER_METRICS_PORT": "0",
        "COLUMNS": "200",
    }
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "settler_jobs", "job", "show", "some-job"],
        cwd=tmp_path,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    took = time.monotonic() - started
    assert result.returncode == QUEUE_UNAVAILABLE_EXIT, result.stderr[-2000:]
    assert result.stderr.startswith("error: PostgreSQL is unreachable")
    assert "Traceback" not in result.stderr
    # Fails fast rather than hangs; loose because start-up alone takes seconds on a busy
    # 2-vCPU machine.
    assert took < 20.0, f"took {took:.1f}s"
    assert not (tmp_path / "data" / "redis").exists()
