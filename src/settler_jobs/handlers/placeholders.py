"""Minimal handlers for the seed's kinds until their own modules replace them.

Each validates its payload (so bad input fails fast and permanently) and reports
what it was asked to do; none has side effects yet.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from settler_jobs.handlers.context import JobContext


class _Payload(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)


class ExportPayload(_Payload):
    """An export request."""

    reportId: str | None = None
    format: Literal["csv", "pdf"] = "csv"
    filters: dict[str, Any] = Field(default_factory=dict)


def _summary(ctx: JobContext, **extra: Any) -> dict[str, Any]:
    return {"kind": ctx.kind, "tenantId": ctx.tenant_id, "attempt": ctx.attempt, **extra}


async def generate_export(payload: ExportPayload, ctx: JobContext) -> dict[str, Any]:
    """Accept an export request (rendering arrives with exports)."""
    return _summary(ctx, format=payload.format)
