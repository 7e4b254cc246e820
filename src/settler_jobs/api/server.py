"""Serving the API with uvicorn: alone (`settler-jobs api`) or next to the workers (`up`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Iterator
from typing import Final

import uvicorn

from settler_jobs.config import Settings
from settler_jobs.errors import ConfigError
from settler_jobs.kinds import Registry

log = logging.getLogger(__name__)
_START_TIMEOUT_S: Final = 60.0
_STOP_TIMEOUT_S: Final = 15.0
_POLL_S: Final = 0.02


def uvicorn_config(
    settings: Settings, registry: Registry | None = None, *, migrate: bool = False
) -> uvicorn.Config:
    """uvicorn serving `create_app(settings)` on SETTLER_API_HOST:SETTLER_API_PORT."""
    from settler_jobs.api.app import create_app

    return uvicorn.Config(
        create_app(settings, registry=registry, migrate=migrate),
        host=settings.api_host,
        port=settings.api_port,
        log_config=None,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=max(1, int(settings.shutdown_grace_s)),
    )


class _Embedded(uvicorn.Server):
    """A uvicorn server inside a process whose signals someone else handles."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def serve_api(settings: Settings) -> None:
    """Serve the API until SIGTERM/SIGINT (a second signal cuts open requests short).

    The embedded SQLite database is migrated at start; an external DATABASE_URL is not
    (several API processes must not race: run `settler-jobs db upgrade` when deploying).
    """
    server = _Embedded(uvicorn_config(settings, migrate=settings.database_url is None))
    loop = asyncio.get_running_loop()

    def handle() -> None:
        if server.should_exit:
            server.force_exit = True
        server.should_exit = True

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, handle)
    await server.serve()
    if not server.started:
        raise ConfigError(
            f"the HTTP API could not start on {settings.api_host}:{settings.api_port}"
        )


class EmbeddedApi:
    """The API running as a task of the current event loop (see `runner.serve`)."""

    def __init__(self, settings: Settings, registry: Registry | None = None) -> None:
        self.url = f"http://{settings.api_host}:{settings.api_port}"
        self._server = _Embedded(uvicorn_config(settings, registry))
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start serving; ConfigError if the server cannot start (port taken, ...)."""
        self._task = asyncio.create_task(self._server.serve(), name="api")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _START_TIMEOUT_S
        # uvicorn offers no start event: poll its flag (bounded).
        while not self._server.started and not self._task.done():
            if loop.time() > deadline:
                break
            await asyncio.sleep(_POLL_S)
        if not self._server.started:
            await self.stop()
            raise ConfigError(f"the HTTP API could not start on {self.url}; see the log")

    async def stop(self) -> None:
        """Finish open requests (bounded) and stop."""
        if self._task is None:
            return
        self._server.should_exit = True
        done, _ = await asyncio.wait({self._task}, timeout=_STOP_TIMEOUT_S)
        if not done:
            log.warning("api.stop_timeout")
            self._task.cancel()
            await asyncio.wait({self._task}, timeout=_STOP_TIMEOUT_S)
        elif not self._task.cancelled() and self._task.exception() is not None:
            log.warning("api.stopped_with_error", extra={"error": str(self._task.exception())})
        self._task = None
