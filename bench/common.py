"""Shared pieces of the benchmarks: a private Redis, settings, seed-shaped jobs, tables.

Every script runs against its own `redis-server` (a free port, no persistence, killed at
the end) unless given `--redis-url`; then it uses a unique key prefix and deletes its
keys afterwards. Nothing here flushes a database.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import pstats
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import redis

from settler_jobs.config import Settings
from settler_jobs.redis_server import EmbeddedRedis


def add_redis_args(parser: argparse.ArgumentParser) -> None:
    """`--redis-url` (shared server, unique prefix) and `--redis-server` (binary to start)."""
    parser.add_argument(
        "--redis-url",
        help="use this Redis (unique key prefix, keys deleted afterwards) instead of "
        "starting a private redis-server",
    )
    parser.add_argument(
        "--redis-server",
        help="redis-server binary for the private server (default: the newest on PATH)",
    )


def _version(binary: str) -> tuple[int, ...]:
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return ()
    for word in out.stdout.split():
        if word.startswith("v="):
            return tuple(int(p) for p in word[2:].split(".") if p.isdigit())
    return ()


def find_redis_server() -> str | None:
    """The newest `redis-server` on PATH (a venv may shadow the system one with an older one)."""
    found = []
    for entry in os.environ.get("PATH", "").split(os.pathsep):
        path = shutil.which("redis-server", path=entry)
        if path and path not in found:
            found.append(path)
    return max(found, key=_version, default=None)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def private_redis(binary: str | None = None) -> Iterator[str]:
    """Start a throw-away redis-server and yield its URL; stop it afterwards."""
    binary = binary or find_redis_server()
    if binary is None:
        with tempfile.TemporaryDirectory() as tmp, EmbeddedRedis(Path(tmp)) as url:
            yield url
        return
    port = _free_port()
    cmd = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly"]
    proc = subprocess.Popen([*cmd, "no", "--daemonize", "no"], stdout=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    try:
        client = redis.Redis.from_url(url)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.02)
        client.close()
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def delete_prefix(url: str, prefix: str) -> int:
    """Delete every key under `prefix:` (SCAN + DEL); returns how many went."""
    client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        for start in range(0, len(keys), 500):
            client.delete(*keys[start : start + 500])
        return len(keys)
    finally:
        client.close()


@contextlib.contextmanager
def redis_for(args: argparse.Namespace) -> Iterator[str]:
    """The Redis URL a script uses: `--redis-url` if given, else a private server."""
    if args.redis_url:
        yield args.redis_url
    else:
        with private_redis(args.redis_server) as url:
            yield url


@contextlib.contextmanager
def scoped_prefix(url: str, label: str) -> Iterator[str]:
    """A unique key prefix whose keys are deleted when the block ends."""
    prefix = f"bench-{label}-{uuid.uuid4().hex[:10]}"
    try:
        yield prefix
    finally:
        delete_prefix(url, prefix)


def settings(url: str, prefix: str, data_dir: Path, **overrides: Any) -> Settings:
    """Settings for a benchmark: own prefix and data folder, no metrics port."""
    values: dict[str, Any] = {
        "redis_url": url,
        "queue_prefix": prefix,
        "data_dir": data_dir,
        "database_url": f"sqlite+aiosqlite:///{data_dir / 'bench.db'}",
        "metrics_port": 0,
        **overrides,
    }
    return Settings(**values)


def redis_info(url: str, section: str) -> dict[str, Any]:
    """One INFO section of the server at `url`."""
    client = redis.Redis.from_url(url, decode_responses=True)
    try:
        return dict(client.info(section))
    finally:
        client.close()


def redis_cpu_s(url: str) -> float:
    """Redis server CPU seconds so far (user + sys)."""
    info = redis_info(url, "cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def median(values: Sequence[float]) -> float:
    """Median, 0 for no values."""
    return statistics.median(values) if values else 0.0


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (pct in 0..100) of `values`."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(pct / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def machine(url: str) -> str:
    """One line naming the machine, Python and Redis."""
    model = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    server = redis_info(url, "server")
    memory = redis_info(url, "memory")
    return (
        f"{os.cpu_count()} CPUs ({model}), Python {platform.python_version()}, "
        f"Redis {server.get('redis_version')} ({memory.get('mem_allocator')}), "
        f"load {os.getloadavg()[0]:.2f}"
    )


def table(title: str, headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """Print a Markdown table (pasteable into RESULTS.md)."""
    cells = [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    print(f"\n{title}\n")
    print("| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in cells:
        print("| " + " | ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) + " |")


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def short(path: str) -> str:
    """A source path without this machine's directories."""
    for marker in ("site-packages/", "/src/", "/lib/python3.11/", "/bench/"):
        if marker in path:
            return path.split(marker, 1)[1]
    return path


def print_cprofile(profiler: Any, top: int, wall: float) -> None:
    """Top functions of a cProfile run by cumulative and by own time."""
    stats = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    python_s = sum(v[2] for v in stats.values())
    print(f"\nPython time under the profiler: {python_s:.2f} s of {wall:.2f} s wall")
    headers = ["function", "calls", "own s", "cumulative s", "cum % of Python"]
    for title, col, rows in (("cumulative", 3, top), ("own", 2, 15)):
        ranked = sorted(stats.items(), key=lambda kv: kv[1][col], reverse=True)[:rows]
        cells = [
            [f"{short(f)}:{line}({func})", nc, tt, ct, f"{100 * ct / python_s:.0f}%"]
            for (f, line, func), (_, nc, tt, ct, _) in ranked
        ]
        table(f"Top {rows} by {title} time (cProfile)", headers, cells)
