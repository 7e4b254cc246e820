"""Reconciliations of the caller's tenant: definitions, source files, runs and result pages.

Runs are jobs on the `reconciliation` queue at the key's tier; their results are read a
page at a time (`after` = the previous page's `next_after`).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from settler_jobs.api.deps import Context, Tenant
from settler_jobs.api.errors import ERROR_RESPONSES
from settler_jobs.reconcile.store import Definition, Run

router = APIRouter(prefix="/reconciliations", tags=["reconciliations"], responses=ERROR_RESPONSES)
Id = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
FileName = Annotated[
    str, Path(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
]
ResultSet = Literal["matches", "discrepancies", "unmatched-source", "unmatched-target"]


class DefinitionIn(BaseModel):
    """A source, a target (file, sql or http adapters) and the matching rules."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    source: dict[str, Any]
    target: dict[str, Any]
    rules: dict[str, Any] = Field(default_factory=dict)


class RunStarted(BaseModel):
    """The job that runs the reconciliation."""

    job_id: str
    queue: str


class PageOut(BaseModel):
    """One page of results; `next_after` is None on the last page."""

    items: list[dict[str, Any]]
    next_after: int | None


@router.post("", response_model=Definition, status_code=201)
async def create(body: DefinitionIn, principal: Tenant, ctx: Context) -> Definition:
    """Define a reconciliation (credentials are sealed and never shown again)."""
    return await ctx.reconciliations.create(
        principal.tenant_id, body.name, source=body.source, target=body.target, rules=body.rules
    )


@router.get("", response_model=list[Definition])
async def list_definitions(principal: Tenant, ctx: Context) -> list[Definition]:
    """The tenant's definitions."""
    return await ctx.reconciliations.list_definitions(principal.tenant_id)


@router.put("/files/{name}", status_code=201)
async def upload(
    name: FileName, request: Request, principal: Tenant, ctx: Context
) -> dict[str, str]:
    """Store a source file (request body = the file; the API body limit applies)."""
    content = await request.body()
    stored = await ctx.reconciliations.upload(principal.tenant_id, name, content)
    return {"path": stored}


@router.get("/runs", response_model=list[Run])
async def list_runs(
    principal: Tenant,
    ctx: Context,
    definition_id: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> list[Run]:
    """The tenant's runs, newest first."""
    return await ctx.reconciliations.list_runs(
        principal.tenant_id, definition_id=definition_id, limit=limit
    )


@router.get("/runs/{run_id}", response_model=Run)
async def get_run(run_id: Id, principal: Tenant, ctx: Context) -> Run:
    """A run: status, progress, counts, totals per currency, duration."""
    return await ctx.reconciliations.get_run(principal.tenant_id, run_id)


@router.get("/runs/{run_id}/{result_set}", response_model=PageOut)
async def results(
    run_id: Id,
    result_set: ResultSet,
    principal: Tenant,
    ctx: Context,
    after: Annotated[int, Query(ge=-1)] = -1,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> PageOut:
    """A page of matches, discrepancies or unmatched items."""
    page = await ctx.reconciliations.results(
        principal.tenant_id, run_id, result_set, after=after, limit=limit
    )
    items = [dict(vars(item)) for item in page.items]
    return PageOut(items=items, next_after=page.next_after)


@router.get("/{definition_id}", response_model=Definition)
async def get_definition(definition_id: Id, principal: Tenant, ctx: Context) -> Definition:
    """One definition."""
    return await ctx.reconciliations.get_definition(principal.tenant_id, definition_id)


@router.post("/{definition_id}/runs", response_model=RunStarted, status_code=202)
async def run(definition_id: Id, principal: Tenant, ctx: Context) -> RunStarted:
    """Run the definition as a job at the key's tier; follow it under /runs."""
    submitted = await ctx.reconciliations.run(
        principal.tenant_id, definition_id, tier=principal.tier
    )
    return RunStarted(job_id=submitted.job.id, queue=submitted.job.queue)
