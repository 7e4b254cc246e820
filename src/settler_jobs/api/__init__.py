"""The HTTP API (FastAPI, versioned under /v1): `create_app(settings)` builds it."""

from __future__ import annotations

from settler_jobs.api.app import create_app

__all__ = ["create_app"]
