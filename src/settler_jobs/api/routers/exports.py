"""Exports of the caller's tenant: create, status, and download through a signed link.

A link is `/v1/exports/{id}/download?tenant=..&expires=..&signature=..`: an HMAC (under a
key derived from the application key) of tenant, export id and expiry. Whoever holds it
may download that one file until it expires; it opens nothing else.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import Annotated, Any, Final

from fastapi import APIRouter, HTTPException, Path, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from settler_jobs.api.deps import Context, Tenant
from settler_jobs.api.errors import ERROR_RESPONSES
from settler_jobs.exports.store import Export

router = APIRouter(prefix="/exports", tags=["exports"], responses=ERROR_RESPONSES)
ExportId = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
LINK_TTL_S: Final = 900
_MEDIA: Final = {"csv": "text/csv; charset=utf-8", "pdf": "application/pdf"}


class ExportIn(BaseModel):
    """What to export: a dataset (see `settler-jobs exports datasets`), format, filters."""

    model_config = ConfigDict(extra="forbid")

    dataset: str = Field(min_length=1, max_length=64)
    format: str = Field(default="csv", pattern=r"^(csv|pdf)$")
    filters: dict[str, Any] = Field(default_factory=dict)


class LinkOut(BaseModel):
    """A download link and when it stops working (Unix seconds)."""

    url: str
    expires_at: int


def _signature(key: bytes, tenant_id: str, export_id: str, expires: int) -> str:
    message = f"{tenant_id}\n{export_id}\n{expires}".encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


@router.post("", response_model=Export, status_code=201)
async def create_export(body: ExportIn, principal: Tenant, ctx: Context) -> Export:
    """Record an export and enqueue its generation; poll its status."""
    return await ctx.exports.create_export(
        principal.tenant_id, body.dataset, body.format, body.filters, principal.tier
    )


@router.get("", response_model=list[Export])
async def list_exports(
    principal: Tenant, ctx: Context, limit: Annotated[int, Query(ge=1, le=500)] = 50
) -> list[Export]:
    """The tenant's exports, newest first."""
    return await ctx.exports.list_exports(principal.tenant_id, limit=limit)


@router.get("/{export_id}", response_model=Export)
async def get_export(export_id: ExportId, principal: Tenant, ctx: Context) -> Export:
    """One export: status, rows, size, sha256, expiry."""
    return await ctx.exports.get_export(principal.tenant_id, export_id)


@router.post("/{export_id}/link", response_model=LinkOut)
async def create_link(
    export_id: ExportId, principal: Tenant, ctx: Context, request: Request
) -> LinkOut:
    """A link that downloads the finished export for the next 15 minutes."""
    export = await ctx.exports.get_export(principal.tenant_id, export_id)
    if export.status.value != "succeeded":
        raise HTTPException(409, f"export {export_id} is {export.status.value}, not ready")
    expires = int(time.time()) + LINK_TTL_S
    signature = _signature(ctx.link_key, principal.tenant_id, export_id, expires)
    url = request.url_for("download_export", export_id=export_id).include_query_params(
        tenant=principal.tenant_id, expires=expires, signature=signature
    )
    return LinkOut(url=str(url), expires_at=expires)


@router.get("/{export_id}/download", name="download_export", response_class=StreamingResponse)
async def download(
    export_id: ExportId,
    ctx: Context,
    tenant: Annotated[str, Query(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")],
    expires: Annotated[int, Query(ge=0)],
    signature: Annotated[str, Query(pattern=r"^[0-9a-f]{64}$")],
) -> StreamingResponse:
    """The export's file, for a valid, unexpired link (403 otherwise)."""
    expected = _signature(ctx.link_key, tenant, export_id, expires)
    if not hmac.compare_digest(expected, signature) or expires < time.time():
        raise HTTPException(403, "the download link is invalid or has expired")
    download = await ctx.exports.open_download(tenant, export_id)
    export = download.export
    headers = {
        "Content-Disposition": f'attachment; filename="{export.id}.{export.format.value}"',
        "Cache-Control": "private, no-store",
    }
    if export.size_bytes is not None:
        headers["Content-Length"] = str(export.size_bytes)
    return StreamingResponse(
        download.chunks(), media_type=_MEDIA[export.format.value], headers=headers
    )
