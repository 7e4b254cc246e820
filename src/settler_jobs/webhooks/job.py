"""The webhook-delivery kind: one job per delivery generation, one attempt per run.

The job carries only the delivery id and generation; URL, payload and secret are read
from the database at send time. The handler's outcome drives the queue: a retryable
failure becomes `RetryLater` with the delay the attempt chose (Retry-After or
backoff), the last failure or a 410 a `PermanentFailure` (a dead letter). Periodic
work served with this kind: the outbox flush. The retry sweep is the scheduled
`webhook-sweep` kind (`sweep_webhooks`).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from settler_jobs.clock import utc_now
from settler_jobs.context import JobContext
from settler_jobs.domain import RetryPolicy
from settler_jobs.errors import NotFound, PermanentFailure, RetryLater
from settler_jobs.net_guard import display_url
from settler_jobs.ports import Submitter
from settler_jobs.records import Submitted
from settler_jobs.resources import Resources
from settler_jobs.scheduling import ScheduledPayload, require_system, run_recorded
from settler_jobs.tenants import TenantDirectory
from settler_jobs.webhooks import store
from settler_jobs.webhooks.endpoints import get_endpoint
from settler_jobs.webhooks.outbox import enqueue, flush_outbox, sweep
from settler_jobs.webhooks.send import SendConfig, SendResult, send_delivery

_STALE_MARGIN_S = 120.0
"""How long past its deadline a `delivering` attempt counts as abandoned."""


class DeliveryPayload(BaseModel):
    """Which delivery, and which generation of it, this job sends."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    deliveryId: str = Field(pattern=r"^msg_[0-9a-f]{32}$")
    generation: int = Field(ge=1, le=1_000_000)

    @model_validator(mode="before")
    @classmethod
    def _not_the_seed_shape(cls, data: Any) -> Any:
        if isinstance(data, dict) and "deliveryId" not in data and {"url", "secret"} & set(data):
            raise ValueError(
                "webhook-delivery jobs carry a deliveryId: publish events with "
                "Webhooks.publish or POST /v1/webhooks/events (URLs and signing secrets "
                "never travel in job data)"
            )
        return data


def send_config(resources: Resources) -> SendConfig:
    """The per-attempt deadline and auto-disable thresholds from the settings."""
    settings = resources.settings
    return SendConfig(
        deadline_s=settings.webhook_deadline_s,
        max_consecutive_failures=settings.webhook_disable_after_failures,
        max_failing=timedelta(days=settings.webhook_disable_after_days),
    )


async def deliver_webhook(payload: DeliveryPayload, ctx: JobContext) -> dict[str, Any]:
    """Send one attempt of the delivery and turn its outcome into the job's."""
    res = ctx.resources
    policy = RetryPolicy(
        attempts=ctx.max_attempts,
        base_delay_s=min(res.settings.webhook_retry_base_s, res.settings.webhook_retry_max_s),
        max_delay_s=res.settings.webhook_retry_max_s,
    )
    result = await send_delivery(
        payload.deliveryId,
        generation=payload.generation,
        is_last=ctx.is_last_attempt,
        sessions=res.sessions,
        transactions=res.transactions,
        box=res.secret_box,
        client=res.webhook_http,
        policy=policy,
        config=send_config(res),
        rng=res.rng,
        now=res.now,
    )
    if result.notification is not None:
        ctx.log.warning("webhook endpoint disabled: %s", result.notification.subject)
        await _email_notice(ctx, result)
    summary: dict[str, Any] = {"deliveryId": payload.deliveryId, "generation": payload.generation}
    if result.skipped:
        return {**summary, "skipped": result.reason}
    if not result.final:
        raise RetryLater(result.retry_in_s or 0.0, f"receiver: {_describe(result)}; will retry")
    if result.outcome != "succeeded":
        raise PermanentFailure(f"webhook delivery {result.outcome}: {_describe(result)}")
    return {**summary, "outcome": result.outcome, "statusCode": result.status_code}


async def _email_notice(ctx: JobContext, result: SendResult) -> None:
    """Email the tenant's contact about a disabled endpoint (once: keyed by the notice).

    The notice itself is already recorded; a failure here is logged, never the job's.
    """
    from settler_jobs.emails import Emails

    res, notice = ctx.resources, result.notification
    if notice is None or result.endpoint_id is None:
        return
    try:
        tenant = await TenantDirectory(res.sessions).get_tenant(ctx.tenant_id)
        if tenant.contact_email is None:
            return
        async with res.sessions() as session:
            endpoint = await get_endpoint(session, result.endpoint_id, tenant_id=ctx.tenant_id)
        await Emails(res.sessions, res.submitter).notify_endpoint_disabled(
            ctx.tenant_id,
            tenant.contact_email,
            notification_id=notice.id,
            endpoint_url=display_url(httpx.URL(endpoint.url)),
            reason=endpoint.disabled_reason or "disabled",
            disabled_at=endpoint.disabled_at,
            tier=ctx.tier,
        )
    except NotFound:
        return  # no tenant record (or the endpoint was deleted): the notice stays recorded
    except Exception:
        ctx.log.exception("webhook.notice_email_failed")


def _describe(result: SendResult) -> str:
    if result.status_code is not None:
        return f"HTTP {result.status_code}"
    return result.error_class or "no response"


async def flush_outbox_step(resources: Resources) -> float:
    """Enqueue committed deliveries that have no job yet."""
    await flush_outbox(resources.sessions, resources.submitter)
    return resources.settings.webhook_outbox_interval_s


async def sweep_webhooks(payload: ScheduledPayload, ctx: JobContext) -> dict[str, Any]:
    """The retry sweep (scheduled): re-enqueue due or abandoned deliveries without a live job."""
    require_system(ctx)
    res = ctx.resources

    async def work() -> dict[str, Any]:
        requeued = await sweep(
            res.sessions,
            res.submitter,
            now=res.now(),
            stale_after=timedelta(seconds=res.settings.webhook_deadline_s + _STALE_MARGIN_S),
        )
        return {"requeued": requeued}

    return await run_recorded(ctx, payload, work)


async def retry_dead_delivery(
    data: Mapping[str, Any],
    tenant_id: str,
    sessions: async_sessionmaker[AsyncSession],
    submitter: Submitter,
) -> Submitted:
    """A dead delivery job is retried as a redelivery: a new generation, a new job."""
    payload = DeliveryPayload.model_validate(dict(data))
    async with sessions() as session, session.begin():
        delivery = await store.redeliver(
            session, payload.deliveryId, tenant_id=tenant_id, now=utc_now()
        )
    (submitted,) = await enqueue(sessions, submitter, [delivery])
    return submitted
