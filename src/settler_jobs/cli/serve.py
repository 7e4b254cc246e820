"""Process lifecycle: the event loop, signals, and serving workers until told to stop."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

from settler_jobs.config import Settings
from settler_jobs.kinds import Registry
from settler_jobs.metrics import Metrics
from settler_jobs.wiring import open_services
from settler_jobs.worker.runtime import WorkerRuntime

if TYPE_CHECKING:
    from settler_jobs.api.server import EmbeddedApi

T = TypeVar("T")
log = logging.getLogger(__name__)


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine on uvloop where available, else on asyncio's loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


async def serve(
    settings: Settings,
    kinds: list[str] | None,
    *,
    migrate: bool,
    registry: Registry | None = None,
    api: bool = False,
) -> None:
    """Run workers (and embedded services) until SIGTERM/SIGINT; a second signal cuts short.

    With `api` (and SETTLER_API_PORT not 0) the HTTP API serves on the same event loop.
    """
    async with open_services(settings, registry, migrate=migrate) as services:
        registry = services.registry.select(kinds) if kinds else services.registry
        metrics = Metrics()
        if settings.metrics_port:
            metrics.serve(settings.metrics_host, settings.metrics_port)
        runtime = WorkerRuntime(settings, registry, services.redis_url, services.sessions, metrics)
        await runtime.start()
        try:
            http = await _start_api(settings, services.registry) if api else None
        except BaseException:
            await runtime.stop(0)
            raise
        log.info(
            "settler.started",
            extra={
                "lanes": ",".join(runtime.lanes),
                "data_dir": str(settings.data_dir),
                "embedded_redis": services.embedded is not None,
                # Where a Node producer (ioredis `path`) reaches the embedded Redis.
                "redis_socket": str(services.embedded.socket_path) if services.embedded else "-",
                "metrics": f"http://{settings.metrics_host}:{settings.metrics_port}/metrics"
                if settings.metrics_port
                else "off",
                "api": http.url if http else "off",
            },
        )
        stop, force = asyncio.Event(), asyncio.Event()
        _on_signals(stop, force)
        await stop.wait()
        log.info("settler.stopping", extra={"grace_s": settings.shutdown_grace_s})
        if http is not None:
            await http.stop()
        stopping = asyncio.ensure_future(runtime.stop())
        forced = asyncio.ensure_future(force.wait())
        await asyncio.wait({stopping, forced}, return_when=asyncio.FIRST_COMPLETED)
        if not stopping.done():
            log.warning("settler.forced_stop")
            runtime.interrupt()
        forced.cancel()
        clean = await stopping
        log.info("settler.stopped", extra={"clean": clean})


async def _start_api(settings: Settings, registry: Registry) -> EmbeddedApi | None:
    if not settings.api_port:
        return None
    from settler_jobs.api.server import EmbeddedApi

    http = EmbeddedApi(settings, registry)
    await http.start()
    return http


def _on_signals(stop: asyncio.Event, force: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()

    def handle() -> None:
        (force if stop.is_set() else stop).set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, handle)
