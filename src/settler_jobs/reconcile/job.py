"""The reconciliation kind: run a tenant's definition and publish the outcome.

The job carries only the definition id (`definitionId`, or the seed's
`adapterConfig.definitionId`); sources and their credentials are read from the
database. Matching runs in the worker's process pool; the results replace those of an
earlier attempt of the same job. `reconciliation.completed` / `reconciliation.failed`
events go to the tenant's webhook endpoints.
"""

from __future__ import annotations

import logging
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from settler_jobs.context import JobContext
from settler_jobs.errors import NotFound, PermanentFailure
from settler_jobs.net_guard import outbound_policy
from settler_jobs.reconcile.execute import execute_run
from settler_jobs.reconcile.store import Run
from settler_jobs.tenants import TenantDirectory
from settler_jobs.webhooks import Webhooks

log = logging.getLogger(__name__)
_ID = r"^[A-Za-z0-9_-]{1,64}$"


class ReconciliationPayload(BaseModel):
    """Which definition to run. Inline adapter settings are refused: credentials must
    not travel in job data, so sources are defined first (`reconciliations create`)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    definitionId: str | None = Field(default=None, pattern=_ID)
    adapterConfig: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _has_definition(self) -> ReconciliationPayload:
        if self.definition_id is None:
            raise ValueError(
                "a reconciliation job needs a definitionId (create the definition with "
                "`settler-jobs reconciliations create` or the API); inline adapterConfig "
                "sources are not accepted because credentials must not travel in job data"
            )
        return self

    @property
    def definition_id(self) -> str | None:
        """`definitionId`, else `adapterConfig.definitionId` (the seed's shape)."""
        if self.definitionId is not None:
            return self.definitionId
        inner = (self.adapterConfig or {}).get("definitionId")
        return inner if isinstance(inner, str) and inner else None


def summary(run: Run) -> dict[str, Any]:
    """The run as the job result and the event payload (counts and totals, no rows)."""
    return {
        "runId": run.id,
        "definitionId": run.definition_id,
        "status": run.status,
        "sourceRecords": run.source_records,
        "targetRecords": run.target_records,
        "matched": run.matched,
        "discrepancies": run.discrepancies,
        "unmatchedSource": run.unmatched_source,
        "unmatchedTarget": run.unmatched_target,
        "malformedSource": run.malformed_source,
        "malformedTarget": run.malformed_target,
        "totals": run.totals,
        "durationMs": run.duration_ms,
    }


async def reconcile(payload: ReconciliationPayload, ctx: JobContext) -> dict[str, Any]:
    """Run the definition, store its results, and announce the outcome."""
    res = ctx.resources
    definition_id = payload.definition_id
    assert definition_id is not None  # the validator guarantees it
    await ctx.report_progress(0)
    try:
        run = await execute_run(
            res.sessions,
            res.secret_box,
            tenant_id=ctx.tenant_id,
            definition_id=definition_id,
            job_id=ctx.job_id,
            files_dir=res.settings.files_dir,
            policy=outbound_policy(res.settings),
            executor=res.process_pool,
        )
    except NotFound as exc:  # no such definition for this tenant: retrying cannot help
        await _publish(ctx, "reconciliation.failed", _failed(definition_id, ctx, exc))
        raise PermanentFailure(str(exc)) from exc
    except Exception as exc:
        if isinstance(exc, PermanentFailure) or ctx.is_last_attempt:
            await _publish(ctx, "reconciliation.failed", _failed(definition_id, ctx, exc))
        raise
    await ctx.report_progress(100)
    result = summary(run)
    await _publish(ctx, "reconciliation.completed", result)
    await _email_contact(ctx, run)
    return result


async def _email_contact(ctx: JobContext, run: Run) -> None:
    """Email the tenant's contact, when one is set, that the run completed (once per run)."""
    from settler_jobs.emails import Emails

    res = ctx.resources
    try:
        tenant = await TenantDirectory(res.sessions).get_tenant(ctx.tenant_id)
    except NotFound:
        return
    if tenant.contact_email is None:
        return
    data = {
        "run_id": run.id,
        "matched": run.matched,
        "unmatched": run.unmatched_source + run.unmatched_target,
    }
    try:
        await Emails(res.sessions, res.submitter).send(
            ctx.tenant_id,
            tenant.contact_email,
            "reconciliation_completed",
            data,
            tier=ctx.tier,
            idempotency_key=f"reconciliation:{run.id}",
        )
    except Exception:
        log.exception("reconciliation.email_failed", extra={"run_id": run.id})


def _failed(definition_id: str, ctx: JobContext, exc: Exception) -> dict[str, Any]:
    return {"definitionId": definition_id, "jobId": ctx.job_id, "error": str(exc)[:2000]}


async def _publish(ctx: JobContext, event_type: str, payload: dict[str, Any]) -> None:
    """Publish to the tenant's endpoints; a failure here never fails the reconciliation."""
    res = ctx.resources
    hooks = Webhooks(res.sessions, res.submitter, res.secret_box, outbound_policy(res.settings))
    try:
        await hooks.publish(ctx.tenant_id, event_type, payload, tier=ctx.tier)
    except Exception:
        log.exception("reconciliation.event_failed", extra={"event_type": event_type})
