"""`send_delivery` end to end: the real store (SQLite and PostgreSQL), the SSRF-guarded client
and a loopback receiver that verifies every Standard Webhooks signature it gets.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import random
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from settler_jobs.domain import RetryPolicy
from settler_jobs.guarded_http import GuardedHttp1
from settler_jobs.net_guard import GuardPolicy
from settler_jobs.secrets_box import SecretBox
from settler_jobs.storage.db import Transactions
from settler_jobs.webhooks import endpoints as we
from settler_jobs.webhooks import store as ws
from settler_jobs.webhooks.send import SendConfig, SendResult, send_delivery
from settler_jobs.webhooks.values import GONE_REASON, Attempt, Delivery, DeliveryStatus, Endpoint
from tests.webhook_receiver import Reply, WebhookReceiver

Sessions = async_sessionmaker[AsyncSession]
BOX = SecretBox.from_key(SecretBox.generate_key())
POLICY = GuardPolicy(allow_http=True, allow_networks=(ipaddress.ip_network("127.0.0.1/32"),))
RETRY = RetryPolicy(attempts=5, base_delay_s=2.0, max_delay_s=600.0)
TENANT = "tenant-a"
PAYLOAD = {"orderId": "ord_1", "note": "naïve ✓"}


async def fake_dns(host: str, port: int) -> Sequence[str]:
    assert host == "receiver.test"
    return ["127.0.0.1"]


class Clock:
    """An injected `now`: starts at the real time (receivers check the timestamp) and
    moves one second per reading, so each attempt is signed at a different second."""

    def __init__(self) -> None:
        self.current = datetime.now(UTC).replace(microsecond=0)

    def __call__(self) -> datetime:
        self.current += timedelta(seconds=1)
        return self.current


@pytest.fixture
async def receiver() -> AsyncIterator[WebhookReceiver]:
    async with WebhookReceiver(host_name="receiver.test") as server:
        yield server


@pytest.fixture
async def client() -> AsyncIterator[GuardedHttp1]:
    http = GuardedHttp1(POLICY, resolver=fake_dns)
    yield http
    await http.aclose()


@dataclass
class Setup:
    sessions: Sessions
    client: GuardedHttp1
    receiver: WebhookReceiver
    clock: Clock
    endpoint: Endpoint
    secret: str
    delivery: Delivery
    transactions: Transactions

    async def send(self, *, limit: int = 5, generation: int | None = None) -> SendResult:
        """One attempt; the one numbered `limit` (counted on the delivery) is the last."""
        attempts_so_far = (await self.current()).attempts
        return await send_delivery(
            self.delivery.id,
            generation=self.delivery.generation if generation is None else generation,
            is_last=attempts_so_far + 1 >= limit,
            sessions=self.sessions,
            transactions=self.transactions,
            box=BOX,
            client=self.client,
            policy=RETRY,
            config=SendConfig(deadline_s=5.0),
            rng=random.Random(7),
            now=self.clock,
        )

    async def current(self) -> Delivery:
        async with self.sessions() as session:
            return await ws.get_delivery(session, self.delivery.id, tenant_id=TENANT)

    async def attempts(self) -> list[Attempt]:
        async with self.sessions() as session:
            return await ws.list_attempts(session, self.delivery.id, tenant_id=TENANT)

    async def endpoint_now(self) -> Endpoint:
        async with self.sessions() as session:
            return await we.get_endpoint(session, self.endpoint.id, tenant_id=TENANT)


@pytest.fixture
async def setup(
    db_session_factory: Sessions, client: GuardedHttp1, receiver: WebhookReceiver
) -> AsyncIterator[Setup]:
    clock = Clock()
    async with db_session_factory() as session, session.begin():
        endpoint, secret = await we.create_endpoint(
            session,
            BOX,
            tenant_id=TENANT,
            url=receiver.url(),
            event_types=None,
            description="loopback",
            policy=POLICY,
            resolver=fake_dns,
            now=clock(),
        )
        _event, (delivery,) = await ws.publish(
            session, tenant_id=TENANT, event_type="order.paid", payload=PAYLOAD, now=clock()
        )
    receiver.secrets.append(secret)
    transactions = Transactions(db_session_factory.kw["bind"])
    try:
        yield Setup(
            db_session_factory, client, receiver, clock, endpoint, secret, delivery, transactions
        )
    finally:
        await transactions.aclose()


async def test_success_is_signed_with_the_delivery_id(setup: Setup) -> None:
    result = await setup.send()

    expected = SendResult("succeeded", 200, None, True, None, endpoint_id=setup.endpoint.id)
    assert result == expected
    (seen,) = setup.receiver.seen
    assert seen.verified_by == (0,)
    assert seen.headers["webhook-id"] == setup.delivery.id
    assert seen.headers["user-agent"] == SendConfig().user_agent
    message = json.loads(seen.body)
    assert message["type"] == "order.paid" and message["data"] == PAYLOAD
    assert datetime.fromisoformat(message["timestamp"]).tzinfo is not None
    assert (await setup.current()).status is DeliveryStatus.SUCCEEDED
    (logged,) = await setup.attempts()
    assert (logged.attempt_no, logged.status_code) == (1, 200)


async def test_a_final_delivery_is_skipped_without_sending(setup: Setup) -> None:
    await setup.send()

    again = await setup.send()
    stale = await setup.send(generation=setup.delivery.generation + 1)

    assert again.skipped and again.outcome is None and again.final
    assert again.reason is not None and "succeeded" in again.reason
    assert stale.skipped
    assert len(setup.receiver.seen) == 1


async def test_retry_after_503_then_success_keeps_the_webhook_id(setup: Setup) -> None:
    setup.receiver.replies.append(Reply("503 Service Unavailable", b"", ("Retry-After: 7",)))

    first = await setup.send()
    pending = await setup.current()
    second = await setup.send()

    assert (first.outcome, first.status_code, first.retry_in_s, first.final) == (
        "retry",
        503,
        7.0,
        False,
    )
    assert pending.status is DeliveryStatus.PENDING
    assert pending.next_attempt_at is not None
    assert (second.outcome, second.final) == ("succeeded", True)
    one, two = setup.receiver.seen
    assert one.verified_by == two.verified_by == (0,)
    assert one.headers["webhook-id"] == two.headers["webhook-id"] == setup.delivery.id
    assert one.headers["webhook-timestamp"] != two.headers["webhook-timestamp"]
    assert one.headers["webhook-signature"] != two.headers["webhook-signature"]
    assert one.body == two.body
    logged = await setup.attempts()
    assert [(a.attempt_no, a.status_code) for a in logged] == [(1, 503), (2, 200)]
    assert logged[0].next_retry_at == pending.next_attempt_at
    assert (await setup.current()).status is DeliveryStatus.SUCCEEDED


async def test_410_disables_the_endpoint(setup: Setup) -> None:
    setup.receiver.replies.append(Reply("410 Gone", b"no such hook"))

    result = await setup.send()

    assert (result.outcome, result.status_code, result.final) == ("gone", 410, True)
    assert result.retry_in_s is None
    assert result.notification is not None and result.notification.tenant_id == TENANT
    endpoint = await setup.endpoint_now()
    assert not endpoint.enabled and endpoint.disabled_reason == GONE_REASON
    assert (await setup.current()).status is DeliveryStatus.FAILED


async def test_the_last_allowed_attempt_fails_the_delivery(setup: Setup) -> None:
    setup.receiver.replies.extend([Reply("500 Internal Server Error", b"boom")] * 2)

    first = await setup.send(limit=2)
    last = await setup.send(limit=2)

    assert (first.outcome, first.final) == ("retry", False)
    assert first.retry_in_s is not None and 0 < first.retry_in_s <= RETRY.base_delay_s
    assert (last.outcome, last.status_code, last.retry_in_s, last.final) == (
        "failed",
        500,
        None,
        True,
    )
    delivery = await setup.current()
    assert delivery.status is DeliveryStatus.FAILED and delivery.attempts == 2
    assert delivery.next_attempt_at is None


async def test_during_rotation_either_secret_verifies(setup: Setup) -> None:
    async with setup.sessions() as session, session.begin():
        _endpoint, new_secret = await we.rotate_secret(
            session,
            BOX,
            setup.endpoint.id,
            tenant_id=TENANT,
            grace=timedelta(hours=1),
            now=setup.clock(),
        )
    setup.receiver.secrets.append(new_secret)

    result = await setup.send()

    assert result.outcome == "succeeded"
    (seen,) = setup.receiver.seen
    assert seen.verified_by == (0, 1)  # the old secret and the new one
    assert len(seen.headers["webhook-signature"].split(" ")) == 2


async def test_secrets_never_leak(setup: Setup, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    setup.receiver.replies.append(Reply("500 Internal Server Error", echo=True))
    setup.receiver.replies.append(Reply("200 OK", echo=True))

    results: list[Any] = [await setup.send(), await setup.send()]

    assert [r.outcome for r in results] == ["retry", "succeeded"]
    excerpts = [a.response_excerpt for a in await setup.attempts()]
    assert all("webhook-signature" in text for text in excerpts)  # the echo did arrive
    key = setup.secret.removeprefix("whsec_")
    for text in [*map(repr, results), *excerpts, caplog.text]:
        assert setup.secret not in text and key not in text


async def test_a_refused_address_fails_at_once(setup: Setup) -> None:
    async def rebound_dns(host: str, port: int) -> Sequence[str]:
        return ["10.0.0.1"]  # the name now points inside the network: the guard refuses

    setup.client = GuardedHttp1(POLICY, resolver=rebound_dns)
    result = await setup.send()

    assert (result.outcome, result.status_code, result.final) == ("failed", None, True)
    assert setup.receiver.seen == []
    (logged,) = await setup.attempts()
    assert logged.error_class == "refused"
    assert (await setup.current()).status is DeliveryStatus.FAILED
