"""A live API for tests: `create_app` under uvicorn on a free loopback port, in this loop."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import httpx
import uvicorn
from fastapi import FastAPI

from settler_jobs.api import create_app
from settler_jobs.config import Settings
from settler_jobs.kinds import Registry
from settler_jobs.net_guard import Resolver
from settler_jobs.tenants.directory import TenantDirectory

OPERATOR_TOKEN = "op-test-token-0123456789"


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@dataclass
class LiveApi:
    """A running API: its URL, an HTTP client, and the tenant directory behind it."""

    url: str
    http: httpx.AsyncClient
    server: uvicorn.Server
    app: FastAPI

    @property
    def directory(self) -> TenantDirectory:
        """The tenant directory of the running app."""
        found: TenantDirectory = self.app.state.ctx.directory
        return found

    async def tenant_key(self, tenant_id: str, tier: str = "starter") -> str:
        """Create a tenant (with `tier`) and return a fresh key of it."""
        from settler_jobs.domain import Tier

        await self.directory.create_tenant(tenant_id, Tier.parse(tier))
        _key, plain = await self.directory.create_key(tenant_id, name="test")
        return plain


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


OPERATOR = auth(OPERATOR_TOKEN)


@contextlib.asynccontextmanager
async def live_api(
    settings: Settings, *, registry: Registry | None = None, resolver: Resolver | None = None
) -> AsyncIterator[LiveApi]:
    """Serve the API for `settings` until the block ends."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    app = create_app(settings, registry=registry, resolver=resolver)
    config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="on")
    server = _Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    started = asyncio.Event()

    async def watch() -> None:
        while not server.started and not task.done():
            await asyncio.sleep(0.01)  # uvicorn has no start event; poll its flag
        started.set()

    await asyncio.wait_for(watch(), 60)
    if task.done():
        task.result()
    url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            yield LiveApi(url, http, server, app)
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 30)
        sock.close()
