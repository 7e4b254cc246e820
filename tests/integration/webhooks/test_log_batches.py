"""The group-commit batches of the delivery log (`log_batches`), on SQLite and PostgreSQL:
many attempts begun and recorded in one transaction, each with the single-attempt result.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from settler_jobs import errors
from settler_jobs.net_guard import GuardPolicy
from settler_jobs.secrets_box import SecretBox
from settler_jobs.storage.db import Transactions
from settler_jobs.webhooks import endpoints as we
from settler_jobs.webhooks import store as ws
from settler_jobs.webhooks.delivery_log import Started
from settler_jobs.webhooks.log_batches import (
    BeginRequest,
    RecordRequest,
    begin_attempts_on,
    record_attempts_on,
)
from settler_jobs.webhooks.values import Delivery, DeliveryStatus

Sessions = async_sessionmaker[AsyncSession]
T0 = datetime(2024, 12, 9, 12, 0, tzinfo=UTC)
BOX = SecretBox.from_key(SecretBox.generate_key())
TENANT = "tenant-a"
MISSING = "msg_" + "0" * 32


async def public_dns(host: str, port: int) -> Sequence[str]:
    return ["93.184.216.34"]


@pytest.fixture
async def transactions(db_session_factory: Sessions) -> AsyncIterator[Transactions]:
    tx = Transactions(db_session_factory.kw["bind"])
    try:
        yield tx
    finally:
        await tx.aclose()


async def _deliveries(sessions: Sessions, count: int) -> list[Delivery]:
    async with sessions() as session, session.begin():
        await we.create_endpoint(
            session,
            BOX,
            tenant_id=TENANT,
            url="https://hooks.example.test/in",
            event_types=None,
            description="orders",
            policy=GuardPolicy(),
            resolver=public_dns,
            now=T0,
        )
        out = []
        for i in range(count):
            _event, (delivery,) = await ws.publish(
                session, tenant_id=TENANT, event_type="order.paid", payload={"n": i}, now=T0
            )
            out.append(delivery)
        return out


def _record(delivery_id: str, attempt_no: int, outcome: str, status: int | None) -> RecordRequest:
    return RecordRequest(
        delivery_id,
        attempt_no=attempt_no,
        started_at=T0,
        status_code=status,
        latency_ms=12,
        error_class=None if outcome == "succeeded" else "http_5xx",
        response_excerpt="ok" if outcome == "succeeded" else "down",
        next_retry_at=T0 + timedelta(minutes=1) if outcome == "retry" else None,
        outcome=outcome,
        now=T0 + timedelta(seconds=1),
    )


async def test_a_batch_begins_and_records_each_attempt_as_one_would(
    db_session_factory: Sessions, transactions: Transactions
) -> None:
    one, two, three = await _deliveries(db_session_factory, 3)
    begun = await transactions.run(
        begin_attempts_on,
        [
            BeginRequest(one.id, T0),
            BeginRequest(one.id, T0),  # a duplicate job of the same delivery
            BeginRequest(MISSING, T0),
            BeginRequest(two.id, T0, generation=two.generation + 1),  # another generation
            BeginRequest(three.id, T0, generation=three.generation),
        ],
    )

    first, again, missing, stale, third = begun
    assert isinstance(first, Started) and isinstance(again, Started)
    assert (first.delivery.status, first.delivery.attempts) == (DeliveryStatus.DELIVERING, 1)
    assert (again.delivery.status, again.delivery.attempts) == (DeliveryStatus.DELIVERING, 2)
    assert first.delivery.id == one.id and first.event.payload == {"n": 0}
    assert isinstance(missing, errors.NotFound)
    assert isinstance(stale, Started) and stale.delivery.status is DeliveryStatus.PENDING
    assert isinstance(third, Started) and third.delivery.attempts == 1

    recorded = await transactions.run(
        record_attempts_on,
        [
            _record(one.id, 2, "succeeded", 200),
            _record(MISSING, 1, "succeeded", 200),
            _record(three.id, 1, "retry", 503),
            _record(two.id, 1, "failed", 500),  # never begun: pending, keeps its status
        ],
    )

    done, gone, retry, untouched = recorded
    assert isinstance(done, Delivery) and done.status is DeliveryStatus.SUCCEEDED
    assert isinstance(gone, errors.NotFound)
    assert isinstance(retry, Delivery) and retry.status is DeliveryStatus.PENDING
    assert retry.next_attempt_at == T0 + timedelta(minutes=1)
    assert isinstance(untouched, Delivery) and untouched.status is DeliveryStatus.PENDING
    async with db_session_factory() as session:
        stored = {
            d.id: await ws.get_delivery(session, d.id, tenant_id=TENANT) for d in (one, three)
        }
        logged = await ws.list_attempts(session, one.id, tenant_id=TENANT)
        retried = await ws.list_attempts(session, three.id, tenant_id=TENANT)
    assert stored[one.id] == done and stored[three.id] == retry
    assert stored[one.id].attempts == 2 and stored[one.id].last_error is None
    assert stored[three.id].last_error == "http_5xx: down"
    assert [(a.attempt_no, a.status_code) for a in logged] == [(2, 200)]
    assert [(a.attempt_no, a.status_code) for a in retried] == [(1, 503)]
    assert retried[0].next_retry_at == T0 + timedelta(minutes=1)
