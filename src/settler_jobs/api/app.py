"""The application factory: `create_app(settings)` -> FastAPI, services opened in its lifespan.

Routers are mounted from `ROUTERS`, one module per capability: exports and
reconciliations add theirs there when they exist.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Final

from fastapi import APIRouter, FastAPI
from prometheus_client import CollectorRegistry

from settler_jobs import __version__
from settler_jobs.api import errors
from settler_jobs.api.deps import ApiContext
from settler_jobs.api.middleware import ApiMetrics, AuditTrail, BodyLimit, RequestMetrics
from settler_jobs.api.ratelimit import RateLimiter
from settler_jobs.api.routers import (
    dlq,
    exports,
    health,
    jobs,
    queues,
    reconciliations,
    usage,
    webhooks,
)
from settler_jobs.audit import record_audit_now
from settler_jobs.config import Settings
from settler_jobs.dashboard import install as install_dashboard
from settler_jobs.keyring import derived_key, secret_box
from settler_jobs.kinds import Registry
from settler_jobs.net_guard import Resolver, outbound_policy
from settler_jobs.reconcile.service import Reconciliations
from settler_jobs.redis_server import redis_client
from settler_jobs.shared_state import shared_state
from settler_jobs.tenants.directory import TenantDirectory
from settler_jobs.webhooks.service import Webhooks
from settler_jobs.wiring import open_services

log = logging.getLogger(__name__)
API_PREFIX: Final = "/v1"
ROUTERS: Final[tuple[APIRouter, ...]] = (
    jobs.router,
    queues.router,
    dlq.router,
    dlq.admin_router,
    webhooks.router,
    exports.router,
    reconciliations.router,
    usage.router,
    usage.admin_router,
)
"""Versioned routers, mounted under /v1 (health and metrics sit at the root)."""


def api_settings(settings: Settings) -> Settings:
    """The settings with Redis timeouts short enough to answer 503 within 2 s."""
    timeout = settings.api_redis_timeout_s
    return settings.model_copy(
        update={
            "redis_connect_timeout_s": min(settings.redis_connect_timeout_s, timeout),
            "redis_command_timeout_s": min(settings.redis_command_timeout_s, timeout),
        }
    )


def _recorder(app: FastAPI) -> Any:
    """Writes audit rows through the app's database (opened by the lifespan)."""

    async def record(**fields: Any) -> None:
        try:
            await record_audit_now(app.state.ctx.services.sessions, **fields)
        except Exception:
            log.exception("audit.record_failed", extra={"action": fields.get("action")})

    return record


def create_app(
    settings: Settings,
    *,
    registry: Registry | None = None,
    migrate: bool = True,
    resolver: Resolver | None = None,
) -> FastAPI:
    """The HTTP API over `settings`; Redis may be down at start (requests then answer 503).

    `resolver` replaces DNS for webhook URL checks (tests).
    """
    metrics_registry = CollectorRegistry()
    metrics = ApiMetrics(metrics_registry)
    own = api_settings(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        timeout = own.api_redis_timeout_s
        async with open_services(
            own, registry, migrate=migrate, check_redis=False, queue_timeout_s=timeout
        ) as services:
            client = redis_client(services.redis_url, own) if services.redis_url else None
            state = shared_state(own, client, services.sessions)
            hooks = Webhooks(
                services.sessions,
                services.queue,
                secret_box(own),
                outbound_policy(own),
                resolver=resolver,
            )
            app.state.ctx = ApiContext(
                settings=own,
                services=services,
                state=state,
                directory=TenantDirectory(services.sessions),
                limiter=RateLimiter(state, own),
                webhooks=hooks,
                metrics_registry=metrics_registry,
                metrics=metrics,
                exports=services.exports,
                reconciliations=Reconciliations(
                    own, services.sessions, services.queue, secret_box(own)
                ),
                link_key=derived_key(own, "export-links"),
            )
            try:
                yield
            finally:
                if client is not None:
                    await client.aclose()

    app = FastAPI(
        title="Settler Jobs",
        version=__version__,
        description="Tenant-aware background jobs: submit and steer jobs, queues, "
        "dead letters and webhooks.",
        lifespan=lifespan,
    )
    errors.install(app)
    app.include_router(health.router)
    for router in ROUTERS:
        app.include_router(router, prefix=API_PREFIX)
    install_dashboard(app)
    app.add_middleware(RequestMetrics, metrics=metrics)
    app.add_middleware(AuditTrail, record=_recorder(app), prefix=API_PREFIX)
    # Added last, so it runs first: nothing reads a body past the limit.
    app.add_middleware(BodyLimit, limit=settings.api_max_body_bytes)
    return app
