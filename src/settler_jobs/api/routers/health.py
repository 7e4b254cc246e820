"""Process and dependency health, and Prometheus metrics (unversioned, no auth).

/healthz: the process answers. /readyz: the queue (Redis, or PostgreSQL on that backend)
and the database answer and at least one worker is heartbeating; 503 with the failing
checks otherwise. Each check gives up after 1.5 s, so a dead server answers within 2 s.
"""

from __future__ import annotations

import asyncio
from typing import Any, Final

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel
from sqlalchemy import text

from settler_jobs import heartbeat
from settler_jobs.api.deps import Context
from settler_jobs.api.errors import RETRY_AFTER_UNAVAILABLE_S

router = APIRouter(tags=["health"])
_CHECK_TIMEOUT_S: Final = 1.5


class Health(BaseModel):
    """Liveness answer."""

    status: str


class Readiness(BaseModel):
    """Each dependency's state ("ok" or why not) and the live workers."""

    status: str
    checks: dict[str, str]
    workers: int


@router.get("/healthz", response_model=Health)
async def healthz() -> Health:
    """The process is up."""
    return Health(status="ok")


async def _check(probe: Any) -> str:
    try:
        await asyncio.wait_for(probe, _CHECK_TIMEOUT_S)
    except TimeoutError:
        return f"timed out after {_CHECK_TIMEOUT_S:g}s"
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"[:300]
    return "ok"


@router.get(
    "/readyz",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "Not ready."}},
)
async def readyz(ctx: Context) -> JSONResponse:
    """Ready to serve: the queue and the database reachable, a worker alive."""

    async def database() -> None:
        async with ctx.services.sessions() as session:
            await session.execute(text("SELECT 1"))

    workers: list[heartbeat.WorkerInfo] = []

    async def alive() -> None:
        workers.extend(await heartbeat.live_workers(ctx.state, ctx.settings.queue_prefix))
        if not workers:
            raise LookupError("no worker heartbeat")

    on_redis = ctx.settings.queue_backend == "redis"
    queue_name = "redis" if on_redis else "queue"
    probe = ctx.services.queue.ping()
    queue_state, db_state = await asyncio.gather(_check(probe), _check(database()))
    down = f"unknown ({'Redis' if on_redis else 'PostgreSQL'} down)"
    worker_state = await _check(alive()) if queue_state == "ok" else down
    checks = {queue_name: queue_state, "database": db_state, "workers": worker_state}
    ready = all(state == "ok" for state in checks.values())
    body = Readiness(status="ok" if ready else "unavailable", checks=checks, workers=len(workers))
    headers = None if ready else {"Retry-After": str(RETRY_AFTER_UNAVAILABLE_S)}
    return JSONResponse(body.model_dump(), status_code=200 if ready else 503, headers=headers)


@router.get("/metrics", response_class=Response, responses={200: {"content": {"text/plain": {}}}})
async def metrics(ctx: Context) -> Response:
    """Prometheus text exposition of the API's metrics."""
    return Response(generate_latest(ctx.metrics_registry), media_type=CONTENT_TYPE_LATEST)
