"""Webhooks of the caller's tenant: endpoints, publishing events, the delivery log.

A thin layer over `settler_jobs.webhooks.service.Webhooks`; the tier of published deliveries is
the key's. Signing secrets are returned once, when created or rotated.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Response, status
from pydantic import BaseModel, ConfigDict, Field

from settler_jobs.api.deps import Context, Tenant
from settler_jobs.api.errors import ERROR_RESPONSES
from settler_jobs.webhooks.values import (
    MAX_DESCRIPTION,
    MAX_EVENT_TYPES,
    MAX_URL,
    UNCHANGED,
    Attempt,
    Delivery,
    DeliveryStatus,
    Endpoint,
    Event,
    Notification,
)

router = APIRouter(prefix="/webhooks", tags=["webhooks"], responses=ERROR_RESPONSES)
EndpointId = Annotated[str, Path(min_length=1, max_length=64)]
DeliveryId = Annotated[str, Path(min_length=1, max_length=64)]
EventTypes = Annotated[list[str] | None, Field(max_length=MAX_EVENT_TYPES)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EndpointIn(_Strict):
    """A receiver: https URL, event types (None or ["*"] = all), description."""

    url: str = Field(min_length=1, max_length=MAX_URL)
    event_types: EventTypes = None
    description: str = Field(default="", max_length=MAX_DESCRIPTION)


class EndpointPatch(_Strict):
    """Fields to change; absent ones stay (event_types null = all events)."""

    url: str | None = Field(default=None, min_length=1, max_length=MAX_URL)
    event_types: EventTypes = None
    description: str | None = Field(default=None, max_length=MAX_DESCRIPTION)


class DisableIn(_Strict):
    """Why the endpoint is disabled."""

    reason: str | None = Field(default=None, max_length=500)


class RotateIn(_Strict):
    """How long the old secret keeps signing next to the new one."""

    grace_s: float = Field(default=86_400.0, ge=0, le=30 * 86_400)


class EventIn(_Strict):
    """An event to deliver to every subscribed endpoint."""

    type: str = Field(min_length=1, max_length=128)
    payload: dict[str, Any] = Field(default_factory=dict)


class CreatedEndpointOut(BaseModel):
    """A new endpoint and its signing secret, shown this once."""

    endpoint: Endpoint
    secret: str


class PublishedOut(BaseModel):
    """An event and its deliveries; `enqueued` False: they wait in the outbox."""

    event: Event
    deliveries: list[Delivery]
    enqueued: bool


class DeliveryDetailOut(BaseModel):
    """A delivery with its attempt log."""

    delivery: Delivery
    attempts: list[Attempt]


@router.post("/endpoints", response_model=CreatedEndpointOut, status_code=201)
async def create_endpoint(body: EndpointIn, principal: Tenant, ctx: Context) -> CreatedEndpointOut:
    """Register a receiver (its URL passes the SSRF guard); returns the secret once."""
    endpoint, secret = await ctx.webhooks.create_endpoint(
        principal.tenant_id, body.url, event_types=body.event_types, description=body.description
    )
    return CreatedEndpointOut(endpoint=endpoint, secret=secret)


@router.get("/endpoints", response_model=list[Endpoint])
async def list_endpoints(principal: Tenant, ctx: Context) -> list[Endpoint]:
    """The tenant's endpoints, oldest first."""
    return await ctx.webhooks.list_endpoints(principal.tenant_id)


@router.get("/endpoints/{endpoint_id}", response_model=Endpoint)
async def get_endpoint(endpoint_id: EndpointId, principal: Tenant, ctx: Context) -> Endpoint:
    """One endpoint (never its secret; only a hint)."""
    return await ctx.webhooks.get_endpoint(principal.tenant_id, endpoint_id)


@router.patch("/endpoints/{endpoint_id}", response_model=Endpoint)
async def update_endpoint(
    endpoint_id: EndpointId, body: EndpointPatch, principal: Tenant, ctx: Context
) -> Endpoint:
    """Change the URL (checked again), subscriptions or description."""
    types = body.event_types if "event_types" in body.model_fields_set else UNCHANGED
    return await ctx.webhooks.update_endpoint(
        principal.tenant_id,
        endpoint_id,
        url=body.url,
        event_types=types,
        description=body.description,
    )


@router.post("/endpoints/{endpoint_id}/enable", response_model=Endpoint)
async def enable(endpoint_id: EndpointId, principal: Tenant, ctx: Context) -> Endpoint:
    """Enable an endpoint; its failure counters start from zero."""
    return await ctx.webhooks.enable(principal.tenant_id, endpoint_id)


@router.post("/endpoints/{endpoint_id}/disable", response_model=Endpoint)
async def disable(
    endpoint_id: EndpointId, body: DisableIn, principal: Tenant, ctx: Context
) -> Endpoint:
    """Disable an endpoint; pending deliveries to it fail when they come up."""
    return await ctx.webhooks.disable(principal.tenant_id, endpoint_id, body.reason)


@router.post("/endpoints/{endpoint_id}/rotate-secret", response_model=CreatedEndpointOut)
async def rotate_secret(
    endpoint_id: EndpointId, body: RotateIn, principal: Tenant, ctx: Context
) -> CreatedEndpointOut:
    """A new signing secret, shown once; the old one also signs during the grace period."""
    endpoint, secret = await ctx.webhooks.rotate_secret(
        principal.tenant_id, endpoint_id, grace=timedelta(seconds=body.grace_s)
    )
    return CreatedEndpointOut(endpoint=endpoint, secret=secret)


@router.delete("/endpoints/{endpoint_id}", status_code=204, response_class=Response)
async def delete_endpoint(endpoint_id: EndpointId, principal: Tenant, ctx: Context) -> Response:
    """Delete an endpoint and its delivery log."""
    await ctx.webhooks.delete_endpoint(principal.tenant_id, endpoint_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/endpoints/{endpoint_id}/test", response_model=Delivery, status_code=201)
async def send_test(endpoint_id: EndpointId, principal: Tenant, ctx: Context) -> Delivery:
    """Send a `webhook.test` event to this endpoint (409 if it is disabled)."""
    return await ctx.webhooks.send_test(principal.tenant_id, endpoint_id, tier=principal.tier)


@router.post("/events", response_model=PublishedOut, status_code=201)
async def publish(body: EventIn, principal: Tenant, ctx: Context) -> PublishedOut:
    """Record an event and deliver it to every enabled, subscribed endpoint."""
    published = await ctx.webhooks.publish(
        principal.tenant_id, body.type, body.payload, tier=principal.tier
    )
    return PublishedOut(
        event=published.event, deliveries=published.deliveries, enqueued=published.enqueued
    )


@router.get("/deliveries", response_model=list[Delivery])
async def list_deliveries(
    principal: Tenant,
    ctx: Context,
    endpoint_id: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
    status: DeliveryStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    before: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
) -> list[Delivery]:
    """The tenant's deliveries, newest first; `before` is the previous page's last id."""
    return await ctx.webhooks.list_deliveries(
        principal.tenant_id, endpoint_id=endpoint_id, status=status, limit=limit, before=before
    )


@router.get("/deliveries/{delivery_id}", response_model=DeliveryDetailOut)
async def get_delivery(
    delivery_id: DeliveryId, principal: Tenant, ctx: Context
) -> DeliveryDetailOut:
    """A delivery and its attempts."""
    detail = await ctx.webhooks.get_delivery(principal.tenant_id, delivery_id)
    return DeliveryDetailOut(delivery=detail.delivery, attempts=detail.attempts)


@router.post("/deliveries/{delivery_id}/redeliver", response_model=Delivery)
async def redeliver(delivery_id: DeliveryId, principal: Tenant, ctx: Context) -> Delivery:
    """Send a finished delivery again (same webhook-id; 409 while it is still pending)."""
    return await ctx.webhooks.redeliver(principal.tenant_id, delivery_id)


@router.post("/deliveries/{delivery_id}/cancel", response_model=Delivery)
async def cancel_delivery(delivery_id: DeliveryId, principal: Tenant, ctx: Context) -> Delivery:
    """Stop a pending delivery (409 if it already finished)."""
    return await ctx.webhooks.cancel_delivery(principal.tenant_id, delivery_id)


@router.get("/notifications", response_model=list[Notification])
async def notifications(
    principal: Tenant, ctx: Context, limit: Annotated[int, Query(ge=1, le=500)] = 50
) -> list[Notification]:
    """Messages for the tenant (such as an endpoint disabled), newest first."""
    return await ctx.webhooks.notifications(principal.tenant_id, limit=limit)
