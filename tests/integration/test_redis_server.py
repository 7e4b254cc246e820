"""The embedded Redis, the start-up checks and the client factory, against real servers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
import redis.asyncio

from settler_jobs.config import Settings
from settler_jobs.errors import RedisConfigError
from settler_jobs.redis_server import EmbeddedRedis, preflight, redis_client, resolve_redis_url

Launch = Callable[[Path], EmbeddedRedis]


def _settings(tmp_path: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {"data_dir": tmp_path / "data", "redis_url": None}
    values.update(overrides)
    return Settings.model_validate(values)


def _alive(pid: int) -> bool:
    """Whether the process runs; an exited one awaiting its reaper counts as gone."""
    try:
        os.kill(pid, 0)
        stat = Path(f"/proc/{pid}/stat").read_text()
    except ProcessLookupError:
        return False
    except OSError:
        return True  # no /proc on this platform: the signal check is all there is
    return stat.rpartition(")")[2].split()[:1] != ["Z"]


def _wait_gone(pid: int, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while _alive(pid):
        if time.monotonic() >= deadline:
            return False
    return True


def _kill_from_pidfile(directory: Path) -> None:
    """Stop a server this test process did not start itself (it has no owner object)."""
    try:
        pid = int((directory / "redis.pid").read_text().strip())
    except (OSError, ValueError):
        return
    if _alive(pid):
        os.kill(pid, signal.SIGTERM)
        assert _wait_gone(pid)


@pytest.fixture
def launch() -> Iterator[Launch]:
    """Start embedded servers; every one started here is stopped at teardown."""
    started: list[EmbeddedRedis] = []

    def start(directory: Path) -> EmbeddedRedis:
        server = EmbeddedRedis(directory)
        started.append(server)
        server.start()
        return server

    yield start
    for server in reversed(started):
        server.stop()


@pytest.fixture
def embedded(tmp_path: Path, launch: Launch) -> EmbeddedRedis:
    return launch(tmp_path / "redis")


async def _roundtrip(
    url: str, settings: Settings, key: str, value: str | None = None
) -> str | None:
    client = redis_client(url, settings)
    try:
        if value is not None:
            await client.set(key, value)
        result = await client.get(key)
        return None if result is None else str(result)
    finally:
        await client.aclose()


async def test_data_survives_a_restart(tmp_path: Path, launch: Launch) -> None:
    settings = _settings(tmp_path)
    directory = tmp_path / "redis"
    first = launch(directory)
    assert first.started_here
    assert first.start().startswith("unix://")
    assert await _roundtrip(first.url, settings, "job:1", "queued") == "queued"
    first.stop()
    assert not first.started_here

    second = launch(directory)
    assert second.started_here
    assert await _roundtrip(second.url, settings, "job:1") == "queued"
    assert (directory / "redis.conf").is_file()


async def test_second_instance_reuses_the_running_server(
    tmp_path: Path, embedded: EmbeddedRedis
) -> None:
    settings = _settings(tmp_path)
    other = EmbeddedRedis(embedded.directory)
    assert other.start() == embedded.url
    assert not other.started_here
    other.stop()
    assert await _roundtrip(embedded.url, settings, "still", "up") == "up"


def test_context_manager_stops_the_server(tmp_path: Path) -> None:
    server = EmbeddedRedis(tmp_path / "redis")
    try:
        with server as url:
            assert url == server.url
            pid = int((tmp_path / "redis" / "redis.pid").read_text())
            assert _alive(pid)
        assert not server.started_here
        assert _wait_gone(pid)
    finally:
        server.stop()


async def test_long_directory_uses_a_short_socket(tmp_path: Path, launch: Launch) -> None:
    directory = tmp_path / ("d" * 80) / ("e" * 80)
    server = launch(directory)
    socket_path = server.url.removeprefix("unix://")
    assert len(os.fsencode(socket_path)) < 104
    assert not socket_path.startswith(str(directory))
    assert await _roundtrip(server.url, _settings(tmp_path), "long", "path") == "path"
    assert EmbeddedRedis(directory).url == server.url


def test_concurrent_starts_share_one_server(tmp_path: Path) -> None:
    directory = tmp_path / "redis"
    script = (
        "import sys; from pathlib import Path; "
        "from settler_jobs.redis_server import EmbeddedRedis; "
        "r = EmbeddedRedis(Path(sys.argv[1])); url = r.start(); "
        "print(r.started_here, url)"
    )
    try:
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", script, str(directory)],
                stdout=subprocess.PIPE,
                text=True,
            )
            for _ in range(3)
        ]
        outputs = [proc.communicate(timeout=30)[0].split() for proc in procs]
        assert all(proc.returncode == 0 for proc in procs)
        assert sorted(started for started, _ in outputs) == ["False", "False", "True"]
        assert len({url for _, url in outputs}) == 1
    finally:
        _kill_from_pidfile(directory)


async def test_preflight_accepts_the_embedded_server(
    tmp_path: Path, embedded: EmbeddedRedis
) -> None:
    client = redis_client(embedded.url, _settings(tmp_path))
    try:
        version = await preflight(client, allow_eviction=False)
    finally:
        await client.aclose()
    assert tuple(int(part) for part in version.split(".")[:2]) >= (6, 2)


async def test_preflight_refuses_an_evicting_server(
    tmp_path: Path, embedded: EmbeddedRedis
) -> None:
    client = redis_client(embedded.url, _settings(tmp_path))
    try:
        await client.config_set("maxmemory-policy", "allkeys-lru")
        with pytest.raises(RedisConfigError) as caught:
            await preflight(client, allow_eviction=False)
        message = str(caught.value)
        assert "allkeys-lru" in message
        assert "evicted" in message
        assert "SETTLER_ALLOW_EVICTION_POLICY=true" in message
        assert await preflight(client, allow_eviction=True)
    finally:
        await client.aclose()


async def test_resolve_redis_url(tmp_path: Path) -> None:
    external = _settings(tmp_path, redis_url="redis://example.invalid:6379/0")
    assert resolve_redis_url(external) == ("redis://example.invalid:6379/0", None)

    settings = _settings(tmp_path)
    url, server = resolve_redis_url(settings)
    assert server is not None
    try:
        assert server.started_here
        assert server.directory == settings.redis_dir
        assert await _roundtrip(url, settings, "k", "v") == "v"
    finally:
        server.stop()


async def test_producer_client_fails_fast_when_redis_is_down(tmp_path: Path) -> None:
    client = redis_client("redis://127.0.0.1:1", _settings(tmp_path))
    started = time.monotonic()
    try:
        with pytest.raises(redis.ConnectionError):
            await client.ping()
    finally:
        await client.aclose()
    assert time.monotonic() - started < 2.5


async def test_client_options(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    producer = redis_client("redis://127.0.0.1:1", settings, max_connections=7)
    worker = redis_client("redis://127.0.0.1:1", settings, patient=True)
    try:
        kwargs = producer.connection_pool.connection_kwargs
        assert kwargs["socket_timeout"] == settings.redis_command_timeout_s
        assert kwargs["socket_connect_timeout"] == settings.redis_connect_timeout_s
        assert kwargs["decode_responses"] is True
        assert producer.connection_pool.max_connections == 7
        assert kwargs["retry"].get_retries() == 1
        assert worker.connection_pool.connection_kwargs["socket_timeout"] is None
        assert worker.connection_pool.connection_kwargs["retry"].get_retries() > 1
    finally:
        await producer.aclose()
        await worker.aclose()
