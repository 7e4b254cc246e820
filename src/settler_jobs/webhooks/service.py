"""The Python API of webhooks: endpoints, publishing events, and the delivery log.

Every call is scoped to a tenant: another tenant's endpoint or delivery answers
`NotFound`, exactly like one that does not exist. Publishing commits the event and its
deliveries first and enqueues their jobs after; if Redis is down then, the deliveries
wait in the outbox and the workers enqueue them (`webhook_outbox`). On the PostgreSQL
queue backend the deliveries and their jobs commit in one transaction instead.

    hooks = services.webhooks
    endpoint, secret = await hooks.create_endpoint("acme", "https://example.com/hooks")
    await hooks.publish("acme", "invoice.paid", {"invoiceId": "inv_1"})
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from settler_jobs import errors
from settler_jobs.clock import utc_now
from settler_jobs.config import Settings
from settler_jobs.domain import Tier
from settler_jobs.net_guard import GuardPolicy, Resolver, outbound_policy
from settler_jobs.ports import Submitter, TransactionalSubmitter
from settler_jobs.secrets_box import SecretBox
from settler_jobs.webhooks import endpoints, store
from settler_jobs.webhooks.outbox import enqueue, enqueue_in
from settler_jobs.webhooks.values import (
    UNCHANGED,
    Attempt,
    Delivery,
    DeliveryStatus,
    Endpoint,
    Event,
    Notification,
    Unchanged,
)

log = logging.getLogger(__name__)

TEST_EVENT = "webhook.test"
DEFAULT_ROTATION_GRACE = timedelta(hours=24)


@dataclass(frozen=True)
class Published:
    """An event and its deliveries; `enqueued` is False if they wait in the outbox."""

    event: Event
    deliveries: list[Delivery]
    enqueued: bool


@dataclass(frozen=True)
class DeliveryDetail:
    """A delivery with its attempt log."""

    delivery: Delivery
    attempts: list[Attempt]


class Webhooks:
    """Tenant-scoped webhook operations over a database and the job queue."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        submitter: Submitter,
        box: SecretBox,
        policy: GuardPolicy,
        *,
        resolver: Resolver | None = None,
        now: Callable[[], datetime] = utc_now,
    ) -> None:
        self._sessions = sessions
        self._submitter = submitter
        # The PostgreSQL queue adds jobs in our own transaction (no outbox needed).
        self._in_transaction = submitter if isinstance(submitter, TransactionalSubmitter) else None
        self._box = box
        self._policy = policy
        self._resolver = resolver
        self._now = now

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        sessions: async_sessionmaker[AsyncSession],
        submitter: Submitter,
    ) -> Webhooks:
        """The API with the application key and SSRF policy these settings give."""
        from settler_jobs.keyring import secret_box

        return cls(sessions, submitter, secret_box(settings), outbound_policy(settings))

    # --- endpoints -------------------------------------------------------------------

    async def create_endpoint(
        self,
        tenant_id: str,
        url: str,
        *,
        event_types: list[str] | None = None,
        description: str = "",
    ) -> tuple[Endpoint, str]:
        """Register a receiver; returns it and its signing secret, shown this once.

        The URL passes the SSRF guard now and again at every send (`net_guard.Refused`
        names the rule); `event_types` None or ``["*"]`` subscribes to every event.
        """
        async with self._sessions() as session, session.begin():
            return await endpoints.create_endpoint(
                session,
                self._box,
                tenant_id=tenant_id,
                url=url,
                event_types=event_types,
                description=description,
                policy=self._policy,
                resolver=self._resolver,
                now=self._now(),
            )

    async def list_endpoints(self, tenant_id: str) -> list[Endpoint]:
        """The tenant's endpoints, oldest first."""
        async with self._sessions() as session:
            return await endpoints.list_endpoints(session, tenant_id=tenant_id)

    async def get_endpoint(self, tenant_id: str, endpoint_id: str) -> Endpoint:
        """One endpoint (NotFound if it is not the tenant's)."""
        async with self._sessions() as session:
            return await endpoints.get_endpoint(session, endpoint_id, tenant_id=tenant_id)

    async def update_endpoint(
        self,
        tenant_id: str,
        endpoint_id: str,
        *,
        url: str | None = None,
        event_types: list[str] | Unchanged | None = UNCHANGED,
        description: str | None = None,
    ) -> Endpoint:
        """Change the URL (vetted again), subscriptions or description."""
        async with self._sessions() as session, session.begin():
            return await endpoints.update_endpoint(
                session,
                endpoint_id,
                tenant_id=tenant_id,
                url=url,
                event_types=event_types,
                description=description,
                policy=self._policy,
                resolver=self._resolver,
                now=self._now(),
            )

    async def enable(self, tenant_id: str, endpoint_id: str) -> Endpoint:
        """Enable an endpoint; its failure counters start again from zero."""
        return await self._set_enabled(tenant_id, endpoint_id, True, None)

    async def disable(
        self, tenant_id: str, endpoint_id: str, reason: str | None = None
    ) -> Endpoint:
        """Disable an endpoint by hand; pending deliveries to it fail when they come up."""
        return await self._set_enabled(tenant_id, endpoint_id, False, reason)

    async def _set_enabled(
        self, tenant_id: str, endpoint_id: str, enabled: bool, reason: str | None
    ) -> Endpoint:
        async with self._sessions() as session, session.begin():
            return await endpoints.set_enabled(
                session,
                endpoint_id,
                tenant_id=tenant_id,
                enabled=enabled,
                reason=reason,
                now=self._now(),
            )

    async def rotate_secret(
        self, tenant_id: str, endpoint_id: str, *, grace: timedelta = DEFAULT_ROTATION_GRACE
    ) -> tuple[Endpoint, str]:
        """A new signing secret, shown once; the old one also signs until `grace` ends."""
        async with self._sessions() as session, session.begin():
            return await endpoints.rotate_secret(
                session, self._box, endpoint_id, tenant_id=tenant_id, grace=grace, now=self._now()
            )

    async def delete_endpoint(self, tenant_id: str, endpoint_id: str) -> None:
        """Delete an endpoint and its delivery log."""
        async with self._sessions() as session, session.begin():
            await endpoints.delete_endpoint(session, endpoint_id, tenant_id=tenant_id)

    async def notifications(self, tenant_id: str, *, limit: int = 50) -> list[Notification]:
        """Messages recorded for the tenant (such as an endpoint disabled), newest first."""
        async with self._sessions() as session:
            return await endpoints.list_notifications(session, tenant_id=tenant_id, limit=limit)

    # --- events ----------------------------------------------------------------------

    async def publish(
        self,
        tenant_id: str,
        event_type: str,
        payload: dict[str, Any],
        *,
        tier: Tier = Tier.STARTER,
    ) -> Published:
        """Record an event and deliver it to every enabled endpoint subscribed to it.

        `tier` is the tenant's plan: it sets the delivery jobs' priority and lane.
        """
        return await self._publish(tenant_id, event_type, payload, tier, None)

    async def send_test(
        self, tenant_id: str, endpoint_id: str, *, tier: Tier = Tier.STARTER
    ) -> Delivery:
        """Send a `webhook.test` event to one endpoint, subscribed to it or not."""
        payload = {"message": "Test event from Settler Jobs", "endpointId": endpoint_id}
        published = await self._publish(tenant_id, TEST_EVENT, payload, tier, endpoint_id)
        return published.deliveries[0]

    async def _publish(
        self,
        tenant_id: str,
        event_type: str,
        payload: dict[str, Any],
        tier: Tier,
        only_endpoint: str | None,
    ) -> Published:
        async with self._sessions() as session, session.begin():
            event, deliveries = await store.publish(
                session,
                tenant_id=tenant_id,
                event_type=event_type,
                payload=payload,
                now=self._now(),
                tier=Tier(tier).value,
                only_endpoint=only_endpoint,
            )
            if self._in_transaction is not None:
                await enqueue_in(session, self._in_transaction, deliveries)
                return Published(event, deliveries, True)
        return Published(event, deliveries, await self._enqueue(deliveries))

    async def _enqueue(self, deliveries: list[Delivery]) -> bool:
        try:
            await enqueue(self._sessions, self._submitter, deliveries)
        except errors.QueueUnavailable as exc:
            # Committed rows stay in the outbox; a worker enqueues them when Redis is back.
            log.warning("webhook.enqueue_deferred", extra={"error": str(exc)})
            return False
        return True

    # --- deliveries ------------------------------------------------------------------

    async def list_deliveries(
        self,
        tenant_id: str,
        *,
        endpoint_id: str | None = None,
        status: DeliveryStatus | str | None = None,
        limit: int = 50,
        before: str | None = None,
    ) -> list[Delivery]:
        """The tenant's deliveries, newest first; `before` is the last id of the previous page."""
        async with self._sessions() as session:
            return await store.list_deliveries(
                session,
                tenant_id=tenant_id,
                endpoint_id=endpoint_id,
                status=status,
                limit=limit,
                before=before,
            )

    async def get_delivery(self, tenant_id: str, delivery_id: str) -> DeliveryDetail:
        """A delivery and its attempts (NotFound if it is not the tenant's)."""
        async with self._sessions() as session:
            delivery = await store.get_delivery(session, delivery_id, tenant_id=tenant_id)
            attempts = await store.list_attempts(session, delivery_id, tenant_id=tenant_id)
        return DeliveryDetail(delivery, attempts)

    async def redeliver(self, tenant_id: str, delivery_id: str) -> Delivery:
        """Send a finished delivery again (same webhook-id, fresh attempts and signature)."""
        async with self._sessions() as session, session.begin():
            delivery = await store.redeliver(
                session, delivery_id, tenant_id=tenant_id, now=self._now()
            )
            if self._in_transaction is not None:
                await enqueue_in(session, self._in_transaction, [delivery])
                return delivery
        await self._enqueue([delivery])
        return delivery

    async def cancel_delivery(self, tenant_id: str, delivery_id: str) -> Delivery:
        """Stop a pending delivery; an attempt already in flight still completes."""
        async with self._sessions() as session, session.begin():
            return await store.cancel_delivery(
                session, delivery_id, tenant_id=tenant_id, now=self._now()
            )
