"""The webhook store against real databases: SQLite and PostgreSQL (see conftest.py)."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, inspect, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

import settler_jobs.storage.schema  # noqa: F401 - the whole schema, as migrated
from settler_jobs import errors
from settler_jobs.domain import is_valid_job_id
from settler_jobs.net_guard import GuardPolicy, Refused
from settler_jobs.secrets_box import SecretBox, mask
from settler_jobs.storage.db import create_engine
from settler_jobs.storage.migrate import alembic_config, current_revision, upgrade
from settler_jobs.storage.tables import Base
from settler_jobs.storage.webhook_tables import WebhookAttemptRow, WebhookEndpointRow
from settler_jobs.webhooks import delivery_log as wl
from settler_jobs.webhooks import endpoints as we
from settler_jobs.webhooks import store as ws
from settler_jobs.webhooks import values as wr
from settler_jobs.webhooks.values import DeliveryStatus, Endpoint

Sessions = async_sessionmaker[AsyncSession]
T0 = datetime(2024, 12, 9, 12, 0, tzinfo=UTC)
BOX = SecretBox.from_key(SecretBox.generate_key())
POLICY = GuardPolicy()
URL = "https://hooks.example.test/in"
WEBHOOK_TABLES = {
    "webhook_endpoints",
    "webhook_events",
    "webhook_deliveries",
    "webhook_attempts",
    "tenant_notifications",
}


async def public_dns(host: str, port: int) -> Sequence[str]:
    return ["93.184.216.34"]


async def loopback_dns(host: str, port: int) -> Sequence[str]:
    return ["127.0.0.1"]


async def add_endpoint(
    sessions: Sessions, tenant: str = "tenant-a", types: list[str] | None = None
) -> tuple[Endpoint, str]:
    async with sessions() as session, session.begin():
        return await we.create_endpoint(
            session,
            BOX,
            tenant_id=tenant,
            url=URL,
            event_types=types,
            description="orders",
            policy=POLICY,
            resolver=public_dns,
            now=T0,
        )


async def publish(
    sessions: Sessions, tenant: str = "tenant-a", event_type: str = "invoice.paid"
) -> list[wr.Delivery]:
    async with sessions() as session, session.begin():
        _event, deliveries = await ws.publish(
            session, tenant_id=tenant, event_type=event_type, payload={"n": 1}, now=T0
        )
    return deliveries


async def one_delivery(sessions: Sessions) -> tuple[Endpoint, wr.Delivery]:
    endpoint, _secret = await add_endpoint(sessions)
    (delivery,) = await publish(sessions)
    return endpoint, delivery


async def attempt(
    sessions: Sessions, delivery_id: str, outcome: str, now: datetime = T0, **extra: Any
) -> wr.Delivery:
    async with sessions() as session, session.begin():
        started, _endpoint, _event = await wl.start_attempt(session, delivery_id, now=now)
        assert started.status is DeliveryStatus.DELIVERING
        fields: dict[str, Any] = {
            "status_code": 500,
            "latency_ms": 12,
            "error_class": "http_5xx",
            "response_excerpt": "boom",
            "next_retry_at": now + timedelta(minutes=1),
        }
        return await wl.record_attempt(
            session,
            delivery_id,
            attempt_no=started.attempts,
            started_at=now,
            outcome=outcome,
            now=now,
            **(fields | extra),
        )


async def endpoint_of(sessions: Sessions, endpoint_id: str, tenant: str = "tenant-a") -> Endpoint:
    async with sessions() as session:
        return await we.get_endpoint(session, endpoint_id, tenant_id=tenant)


def _schema(connection: Connection) -> tuple[set[str], list[Any]]:
    diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    return set(inspect(connection).get_table_names()), list(diff)


async def _read_schema(db_url: str) -> tuple[set[str], list[Any]]:
    engine = create_engine(db_url)
    try:
        async with engine.connect() as connection:
            return await connection.run_sync(_schema)
    finally:
        await engine.dispose()


async def test_migration_to_head_creates_the_webhook_tables(db_url: str) -> None:
    head = ScriptDirectory.from_config(alembic_config(db_url)).get_current_head()
    assert current_revision(db_url) == head
    tables, diff = await _read_schema(db_url)
    assert tables >= WEBHOOK_TABLES
    assert diff == []
    command.downgrade(alembic_config(db_url), "0001")
    tables, _diff = await _read_schema(db_url)
    assert not tables & WEBHOOK_TABLES and "dlq_entries" in tables
    upgrade(db_url)
    assert current_revision(db_url) == head


async def test_create_shows_the_secret_once_and_stores_it_sealed(
    db_session_factory: Sessions,
) -> None:
    endpoint, secret = await add_endpoint(db_session_factory)
    assert secret.startswith("whsec_")
    names = {f.name for f in dataclasses.fields(Endpoint)}
    assert "secret" not in names and not any("ciphertext" in name for name in names)
    assert endpoint.secret_hint == mask(secret) and secret not in repr(endpoint)
    async with db_session_factory() as session:
        stored = await session.scalar(
            select(WebhookEndpointRow.secret_ciphertext).where(WebhookEndpointRow.id == endpoint.id)
        )
        listed = await we.list_endpoints(session, tenant_id="tenant-a")
        revealed = await we.reveal_secrets(session, BOX, endpoint.id, now=T0)
    assert stored is not None and stored != secret
    assert secret not in stored and secret.removeprefix("whsec_") not in stored
    assert listed == [endpoint] and revealed == [secret]
    assert endpoint.event_types is None and endpoint.enabled and endpoint.description == "orders"


async def test_registration_refuses_unsafe_urls_by_rule(db_session_factory: Sessions) -> None:
    cases = [
        ("http://hooks.example.test/", public_dns, "scheme"),
        ("https://internal.example.test/", loopback_dns, "loopback"),
        ("https://10.0.0.5/hook", public_dns, "private"),
        ("https://169.254.169.254/latest", public_dns, "metadata"),
        ("https://user:pw@hooks.example.test/", public_dns, "credentials-in-url"),
    ]
    async with db_session_factory() as session, session.begin():
        for url, resolver, rule in cases:
            with pytest.raises(Refused) as caught:
                await we.create_endpoint(
                    session, BOX, tenant_id="tenant-a", url=url, event_types=None,
                    description="", policy=POLICY, resolver=resolver, now=T0,
                )  # fmt: skip
            assert caught.value.rule == rule
        allowed, _secret = await we.create_endpoint(
            session, BOX, tenant_id="tenant-a", url="http://hooks.example.test/",
            event_types=None, description="", policy=GuardPolicy(allow_http=True),
            resolver=public_dns, now=T0,
        )  # fmt: skip
        with pytest.raises(Refused, match="loopback"):
            await we.update_endpoint(
                session, allowed.id, tenant_id="tenant-a", url="https://internal.example.test/",
                policy=POLICY, resolver=loopback_dns, now=T0,
            )  # fmt: skip
        assert [e.url for e in await we.list_endpoints(session, tenant_id="tenant-a")] == [
            "http://hooks.example.test/"
        ]


@pytest.mark.parametrize(
    ("types", "description"),
    [
        (["Invoice.Paid"], ""),
        (["invoice paid"], ""),
        ([], ""),
        ([f"t{i}" for i in range(101)], ""),
        (["x" * 129], ""),
        (None, "d" * 501),
    ],
)
async def test_registration_validates_types_and_description(
    db_session_factory: Sessions, types: list[str] | None, description: str
) -> None:
    async with db_session_factory() as session, session.begin():
        with pytest.raises(ValueError):
            await we.create_endpoint(
                session, BOX, tenant_id="tenant-a", url=URL, event_types=types,
                description=description, policy=POLICY, resolver=public_dns, now=T0,
            )  # fmt: skip


async def test_update_endpoint_changes_only_what_is_given(db_session_factory: Sessions) -> None:
    endpoint, _secret = await add_endpoint(db_session_factory, types=["invoice.paid"])
    later = T0 + timedelta(minutes=1)
    async with db_session_factory() as session, session.begin():
        described = await we.update_endpoint(
            session, endpoint.id, tenant_id="tenant-a", description="new", policy=POLICY, now=later
        )
        everything = await we.update_endpoint(
            session, endpoint.id, tenant_id="tenant-a", event_types=["*"], policy=POLICY, now=later
        )
    assert described.event_types == ("invoice.paid",) and described.description == "new"
    assert everything.event_types is None and everything.updated_at == later


async def test_rotation_signs_with_both_secrets_during_the_grace(
    db_session_factory: Sessions,
) -> None:
    endpoint, old = await add_endpoint(db_session_factory)
    async with db_session_factory() as session, session.begin():
        rotated, new = await we.rotate_secret(
            session, BOX, endpoint.id, tenant_id="tenant-a", grace=timedelta(hours=1), now=T0
        )
    assert new != old and rotated.secret_hint == mask(new)
    assert rotated.previous_secret_expires_at == T0 + timedelta(hours=1)
    async with db_session_factory() as session:
        during = await we.reveal_secrets(session, BOX, endpoint.id, now=T0 + timedelta(minutes=30))
        after = await we.reveal_secrets(session, BOX, endpoint.id, now=T0 + timedelta(hours=2))
    assert during == [new, old]
    assert after == [new]


async def test_publish_fans_out_to_enabled_subscribed_endpoints_of_the_tenant(
    db_session_factory: Sessions,
) -> None:
    everything, _ = await add_endpoint(db_session_factory)
    subscribed, _ = await add_endpoint(db_session_factory, types=["invoice.paid", "a.b"])
    await add_endpoint(db_session_factory, types=["invoice.void"])
    disabled, _ = await add_endpoint(db_session_factory)
    await add_endpoint(db_session_factory, tenant="tenant-b")
    async with db_session_factory() as session, session.begin():
        await we.set_enabled(
            session, disabled.id, tenant_id="tenant-a", enabled=False, reason="paused", now=T0
        )
        event, deliveries = await ws.publish(
            session, tenant_id="tenant-a", event_type="invoice.paid", payload={"a": [1]}, now=T0
        )
    assert event.id.startswith("evt_") and event.payload == {"a": [1]}
    assert {d.endpoint_id for d in deliveries} == {everything.id, subscribed.id}
    for delivery in deliveries:
        assert delivery.id.startswith("msg_") and delivery.event_id == event.id
        assert delivery.status is DeliveryStatus.PENDING and delivery.generation == 1
        assert delivery.enqueued_generation == 0 and delivery.next_attempt_at == T0
        assert is_valid_job_id(delivery.job_id)


@pytest.mark.parametrize(
    ("event_type", "payload"),
    [
        ("invoice.paid", {"blob": "x" * (256 * 1024)}),
        ("invoice.paid", {"when": T0}),
        ("invoice.paid", {"bad": float("nan")}),
        ("invoice.paid", {"nul": "a\x00b"}),
        ("Invoice Paid", {}),
        ("*", {}),
    ],
)
async def test_publish_refuses_bad_events(
    db_session_factory: Sessions, event_type: str, payload: dict[str, Any]
) -> None:
    async with db_session_factory() as session, session.begin():
        with pytest.raises(ValueError):
            await ws.publish(
                session, tenant_id="tenant-a", event_type=event_type, payload=payload, now=T0
            )


async def test_outbox_lists_until_marked_and_the_sweep_finds_stuck_work(
    db_session_factory: Sessions,
) -> None:
    _endpoint, delivery = await one_delivery(db_session_factory)
    async with db_session_factory() as session, session.begin():
        assert [d.id for d in await ws.unenqueued(session)] == [delivery.id]
        assert await ws.due_without_job(session, now=T0, stale_before=T0) == []
        await ws.mark_enqueued(session, delivery.id, 1)
        await ws.mark_enqueued(session, delivery.id, 0)  # never moves back
        assert await ws.unenqueued(session) == []
        (due,) = await ws.due_without_job(session, now=T0, stale_before=T0)
        assert due.enqueued_generation == 1 and due.job_id == f"{delivery.id}-g1"
        assert (
            await ws.due_without_job(session, now=T0 - timedelta(seconds=1), stale_before=T0) == []
        )
        await wl.start_attempt(session, delivery.id, now=T0)
        later = T0 + timedelta(minutes=10)
        assert await ws.due_without_job(session, now=later, stale_before=T0) == []
        (stuck,) = await ws.due_without_job(session, now=later, stale_before=later)
    assert stuck.status is DeliveryStatus.DELIVERING


async def test_attempts_are_logged_and_steer_the_delivery(db_session_factory: Sessions) -> None:
    endpoint, delivery = await one_delivery(db_session_factory)
    retried = await attempt(db_session_factory, delivery.id, "retry", response_excerpt="e" * 5000)
    assert retried.status is DeliveryStatus.PENDING and retried.attempts == 1
    assert retried.next_attempt_at == T0 + timedelta(minutes=1)
    assert retried.last_status_code == 500 and retried.last_error is not None
    failing = await endpoint_of(db_session_factory, endpoint.id)
    assert failing.consecutive_failures == 0 and failing.failing_since == T0  # not failed yet
    later = T0 + timedelta(minutes=1)
    done = await attempt(
        db_session_factory, delivery.id, "succeeded", later, status_code=204, error_class=None,
        response_excerpt="", next_retry_at=None,
    )  # fmt: skip
    assert done.status is DeliveryStatus.SUCCEEDED and done.last_error is None
    assert done.next_attempt_at is None and done.attempts == 2
    healthy = await endpoint_of(db_session_factory, endpoint.id)
    assert healthy.consecutive_failures == 0 and healthy.failing_since is None
    assert healthy.last_success_at == later
    async with db_session_factory() as session:
        first, second = await ws.list_attempts(session, delivery.id, tenant_id="tenant-a")
    assert (first.attempt_no, first.status_code, first.error_class) == (1, 500, "http_5xx")
    assert first.response_excerpt == "e" * 1024 and first.next_retry_at == later
    assert (second.attempt_no, second.status_code, second.latency_ms) == (2, 204, 12)


async def test_410_gone_disables_the_endpoint_and_notifies_once(
    db_session_factory: Sessions,
) -> None:
    endpoint, delivery = await one_delivery(db_session_factory)
    gone = await attempt(db_session_factory, delivery.id, "gone", status_code=410)
    assert gone.status is DeliveryStatus.FAILED and gone.next_attempt_at is None
    disabled = await endpoint_of(db_session_factory, endpoint.id)
    assert not disabled.enabled and disabled.disabled_reason == wr.GONE_REASON
    assert disabled.disabled_at == T0
    async with db_session_factory() as session, session.begin():
        limits: dict[str, Any] = {"max_consecutive": 10, "max_failing": timedelta(days=3)}
        note = await we.disable_if_unhealthy(session, endpoint.id, now=T0, **limits)
        assert await we.disable_if_unhealthy(session, endpoint.id, now=T0, **limits) is None
    assert note is not None and wr.GONE_REASON in note.body
    assert "/in" not in note.subject  # no path: it may carry secrets


async def test_unhealthy_endpoint_is_disabled_after_n_failures_with_one_notice(
    db_session_factory: Sessions,
) -> None:
    endpoint, _secret = await add_endpoint(db_session_factory)
    for delivery in [*await publish(db_session_factory), *await publish(db_session_factory)]:
        await attempt(db_session_factory, delivery.id, "failed", error_class="refused")
    limits: dict[str, Any] = {"max_consecutive": 3, "max_failing": timedelta(days=3)}
    async with db_session_factory() as session, session.begin():
        assert await we.disable_if_unhealthy(session, endpoint.id, now=T0, **limits) is None
    (third,) = await publish(db_session_factory)
    await attempt(db_session_factory, third.id, "retry")  # a retry is not a failed delivery
    async with db_session_factory() as session, session.begin():
        assert await we.disable_if_unhealthy(session, endpoint.id, now=T0, **limits) is None
    await attempt(db_session_factory, third.id, "failed")
    async with db_session_factory() as session, session.begin():
        note = await we.disable_if_unhealthy(session, endpoint.id, now=T0, **limits)
        again = await we.disable_if_unhealthy(session, endpoint.id, now=T0, **limits)
        notes = await we.list_notifications(session, tenant_id="tenant-a")
        other = await we.list_notifications(session, tenant_id="tenant-b")
    assert note is not None and again is None and notes == [note] and other == []
    assert note.kind == wr.DISABLED_KIND and note.tenant_id == "tenant-a"
    disabled = await endpoint_of(db_session_factory, endpoint.id)
    assert not disabled.enabled and disabled.disabled_reason == "3 consecutive failed deliveries"


async def test_endpoint_failing_too_long_is_disabled_and_enabling_resets_health(
    db_session_factory: Sessions,
) -> None:
    endpoint, delivery = await one_delivery(db_session_factory)
    await attempt(db_session_factory, delivery.id, "retry")
    limits: dict[str, Any] = {"max_consecutive": 100, "max_failing": timedelta(days=3)}
    async with db_session_factory() as session, session.begin():
        soon = T0 + timedelta(days=2)
        assert await we.disable_if_unhealthy(session, endpoint.id, now=soon, **limits) is None
        note = await we.disable_if_unhealthy(
            session, endpoint.id, now=T0 + timedelta(days=3), **limits
        )
        enabled = await we.set_enabled(
            session, endpoint.id, tenant_id="tenant-a", enabled=True, reason=None, now=T0
        )
    assert note is not None and "failing without a success since" in note.body
    assert enabled.enabled and enabled.consecutive_failures == 0
    assert enabled.failing_since is None and enabled.disabled_notified_at is None


async def test_disabling_by_hand_owes_no_notice_and_stops_pending_work(
    db_session_factory: Sessions,
) -> None:
    endpoint, delivery = await one_delivery(db_session_factory)
    async with db_session_factory() as session, session.begin():
        await we.set_enabled(
            session, endpoint.id, tenant_id="tenant-a", enabled=False, reason=None, now=T0
        )
        limits: dict[str, Any] = {"max_consecutive": 1, "max_failing": timedelta(0)}
        assert await we.disable_if_unhealthy(session, endpoint.id, now=T0, **limits) is None
        skipped, _endpoint, _event = await wl.start_attempt(session, delivery.id, now=T0)
        with pytest.raises(errors.InvalidState, match="disabled"):
            await ws.redeliver(session, delivery.id, tenant_id="tenant-a", now=T0)
    assert skipped.status is DeliveryStatus.FAILED and skipped.attempts == 0
    assert skipped.last_error == "endpoint disabled: disabled by hand"


async def test_redeliver_bumps_the_generation_and_cancel_stops(
    db_session_factory: Sessions,
) -> None:
    _endpoint, delivery = await one_delivery(db_session_factory)
    later = T0 + timedelta(hours=1)
    async with db_session_factory() as session, session.begin():
        await ws.mark_enqueued(session, delivery.id, 1)
        with pytest.raises(errors.InvalidState):
            await ws.redeliver(session, delivery.id, tenant_id="tenant-a", now=later)
        cancelled = await ws.cancel_delivery(session, delivery.id, tenant_id="tenant-a", now=T0)
        with pytest.raises(errors.InvalidState):
            await ws.cancel_delivery(session, delivery.id, tenant_id="tenant-a", now=T0)
        again = await ws.redeliver(session, delivery.id, tenant_id="tenant-a", now=later)
        (queued,) = await ws.unenqueued(session)
        stale, _, _ = await wl.start_attempt(session, delivery.id, now=later, generation=1)
    assert cancelled.status is DeliveryStatus.CANCELLED and cancelled.next_attempt_at is None
    assert again.generation == 2 and again.status is DeliveryStatus.PENDING
    assert again.next_attempt_at == later and again.job_id != delivery.job_id
    assert queued.id == delivery.id and stale.status is DeliveryStatus.PENDING


async def test_list_deliveries_pages_newest_first(db_session_factory: Sessions) -> None:
    endpoint, _secret = await add_endpoint(db_session_factory)
    other, _secret = await add_endpoint(db_session_factory, types=["other.type"])
    ids = []
    for minute in range(5):
        async with db_session_factory() as session, session.begin():
            _e, (d,) = await ws.publish(
                session, tenant_id="tenant-a", event_type="invoice.paid", payload={},
                now=T0 + timedelta(minutes=minute),
            )  # fmt: skip
        ids.append(d.id)
    async with db_session_factory() as session:
        first = await ws.list_deliveries(session, tenant_id="tenant-a", limit=2)
        rest = await ws.list_deliveries(session, tenant_id="tenant-a", before=first[-1].id)
        by_endpoint = await ws.list_deliveries(session, tenant_id="tenant-a", endpoint_id=other.id)
        done = await ws.list_deliveries(session, tenant_id="tenant-a", status="succeeded")
    assert [d.id for d in first + rest] == ids[::-1]
    assert by_endpoint == [] and done == []
    assert all(d.endpoint_id == endpoint.id for d in rest)


async def test_other_tenants_get_not_found(db_session_factory: Sessions) -> None:
    endpoint, delivery = await one_delivery(db_session_factory)
    await attempt(db_session_factory, delivery.id, "succeeded")
    b: dict[str, Any] = {"tenant_id": "tenant-b"}
    calls: list[Callable[[AsyncSession], Awaitable[object]]] = [
        lambda s: we.get_endpoint(s, endpoint.id, **b),
        lambda s: we.update_endpoint(s, endpoint.id, description="x", policy=POLICY, now=T0, **b),
        lambda s: we.set_enabled(s, endpoint.id, enabled=False, reason=None, now=T0, **b),
        lambda s: we.rotate_secret(s, BOX, endpoint.id, grace=timedelta(0), now=T0, **b),
        lambda s: we.delete_endpoint(s, endpoint.id, **b),
        lambda s: ws.get_delivery(s, delivery.id, **b),
        lambda s: ws.list_attempts(s, delivery.id, **b),
        lambda s: ws.redeliver(s, delivery.id, now=T0, **b),
        lambda s: ws.cancel_delivery(s, delivery.id, now=T0, **b),
        lambda s: ws.list_deliveries(s, before=delivery.id, **b),
        lambda s: we.get_endpoint(s, "missing", tenant_id="tenant-a"),
    ]
    async with db_session_factory() as session, session.begin():
        for call in calls:
            with pytest.raises(errors.NotFound):
                await call(session)
        assert await we.list_endpoints(session, **b) == []
        assert await ws.list_deliveries(session, **b) == []
        assert (await ws.get_delivery(session, delivery.id, tenant_id="tenant-a")).attempts == 1


async def test_deleting_an_endpoint_removes_its_deliveries_and_attempts(
    db_session_factory: Sessions,
) -> None:
    endpoint, delivery = await one_delivery(db_session_factory)
    await attempt(db_session_factory, delivery.id, "retry")
    async with db_session_factory() as session, session.begin():
        await we.delete_endpoint(session, endpoint.id, tenant_id="tenant-a")
    async with db_session_factory() as session:
        with pytest.raises(errors.NotFound):
            await ws.get_delivery(session, delivery.id, tenant_id="tenant-a")
        with pytest.raises(errors.NotFound):
            await wl.start_attempt(session, delivery.id, now=T0)
        assert await session.scalar(select(WebhookAttemptRow.id)) is None


async def test_a_worker_can_run_every_step_in_one_session(db_session_factory: Sessions) -> None:
    endpoint, delivery = await one_delivery(db_session_factory)
    limits: dict[str, Any] = {"max_consecutive": 1, "max_failing": timedelta(days=3)}
    async with db_session_factory() as session, session.begin():
        started, target, event = await wl.start_attempt(session, delivery.id, now=T0)
        secrets = await we.reveal_secrets(session, BOX, target.id, now=T0)
        await ws.cancel_delivery(session, delivery.id, tenant_id="tenant-a", now=T0)
        recorded = await wl.record_attempt(
            session, delivery.id, attempt_no=started.attempts, started_at=T0, status_code=503,
            latency_ms=5, error_class="http_5xx", response_excerpt="", next_retry_at=None,
            outcome="failed_permanent", now=T0,
        )  # fmt: skip
        note = await we.disable_if_unhealthy(session, endpoint.id, now=T0, **limits)
        after = await we.get_endpoint(session, endpoint.id, tenant_id="tenant-a")
    assert event.payload == {"n": 1} and len(secrets) == 1 and target.enabled
    assert recorded.status is DeliveryStatus.CANCELLED and recorded.last_status_code == 503
    assert note is not None and not after.enabled and after.consecutive_failures == 1
