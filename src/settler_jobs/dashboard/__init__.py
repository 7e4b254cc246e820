"""The operator dashboard: server-rendered pages (Jinja2 + htmx) under /dashboard."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from settler_jobs.dashboard import dead_letters, fleet, jobs, login, overview
from settler_jobs.dashboard.web import PREFIX, LoginRequired, SecurityHeaders, to_login

ROUTERS = (
    login.router,
    jobs.router,
    overview.router,
    dead_letters.router,
    fleet.router,
)


def install(app: FastAPI) -> None:
    """Mount the dashboard's pages, static files and security headers on `app`."""
    for router in ROUTERS:
        app.include_router(router, prefix=PREFIX, include_in_schema=False)
    static = Path(__file__).parent / "static"
    app.mount(f"{PREFIX}/static", StaticFiles(directory=static), name="dashboard-static")
    app.add_exception_handler(LoginRequired, to_login)
    app.add_middleware(SecurityHeaders)
