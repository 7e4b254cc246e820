"""Webhooks end to end in one process: `Webhooks.publish` -> outbox -> queue -> the worker
runtime's webhook-delivery lane -> a real loopback receiver that verifies every signature
with `standardwebhooks`. The queue and database are real; so is the SSRF-guarded HTTP client.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis.asyncio

from settler_jobs.config import Settings
from settler_jobs.dlq.capture import retry_entry
from settler_jobs.dlq.store import DlqEntry
from settler_jobs.domain import JobState, Tier
from settler_jobs.emails.outbox import list_outbox, read_outbox
from settler_jobs.errors import NotFound, QueueUnavailable
from settler_jobs.net_guard import GuardPolicy, Refused, outbound_policy
from settler_jobs.queue.pg import PgJobQueue
from settler_jobs.queue.pg.pool import quote_ident
from settler_jobs.records import JobRecord, Submission, Submitted
from settler_jobs.registry import default_registry
from settler_jobs.tenants.directory import TenantDirectory
from settler_jobs.webhooks import outbox as webhook_outbox
from settler_jobs.webhooks.service import Webhooks
from settler_jobs.webhooks.values import Delivery, DeliveryStatus
from tests.harness import System, system
from tests.helpers import eventually
from tests.integration.queue.pg.sql import sql
from tests.webhook_receiver import Reply, WebhookReceiver

TENANT = "acme"
KIND = "webhook-delivery"
BASE_DELAY_S = 0.2


@pytest.fixture
def hook_settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={
            "outbound_allow_http": True,
            "outbound_allow_networks": ["127.0.0.1/32"],
            "webhook_retry_base_s": BASE_DELAY_S,
            "webhook_deadline_s": 5.0,
        }
    )


@dataclass
class Flow:
    system: System
    hooks: Webhooks
    receiver: WebhookReceiver

    async def endpoint(self, **kwargs: Any) -> tuple[str, str]:
        endpoint, secret = await self.hooks.create_endpoint(TENANT, self.receiver.url(), **kwargs)
        self.receiver.secrets.append(secret)
        return endpoint.id, secret

    async def delivery(self, delivery_id: str) -> Delivery:
        return (await self.hooks.get_delivery(TENANT, delivery_id)).delivery

    async def settled(self, delivery_id: str, timeout_s: float = 15.0) -> Delivery:
        async def probe() -> Delivery:
            return await self.delivery(delivery_id)

        return await eventually(
            probe,
            lambda d: d.status not in (DeliveryStatus.PENDING, DeliveryStatus.DELIVERING),
            timeout_s=timeout_s,
        )

    async def dead_letters(self) -> list[DlqEntry]:
        async def probe() -> list[DlqEntry]:
            return await self.system.dead_letters(kind=KIND)

        return await eventually(probe, bool)


async def _open(settings: Settings, *, start: bool = True) -> AsyncIterator[Flow]:
    registry = default_registry().select([KIND])
    async with WebhookReceiver() as receiver, system(settings, registry, start=start) as sys_:
        hooks = Webhooks.from_settings(settings, sys_.sessions, sys_.queue)
        yield Flow(sys_, hooks, receiver)


@pytest.fixture
async def flow(hook_settings: Settings) -> AsyncIterator[Flow]:
    async for opened in _open(hook_settings):
        yield opened


async def test_published_event_arrives_signed_with_the_delivery_id(flow: Flow) -> None:
    await flow.endpoint(event_types=["invoice.paid"])
    published = await flow.hooks.publish(TENANT, "invoice.paid", {"invoiceId": "inv_1"})
    assert published.enqueued
    (delivery,) = published.deliveries
    (seen,) = await flow.receiver.wait_for(1)
    assert seen.verified and seen.webhook_id == delivery.id
    assert seen.headers["user-agent"].startswith("Settler-Webhooks/")
    assert seen.headers["content-type"] == "application/json"
    body = seen.json()
    assert body["type"] == "invoice.paid" and body["data"] == {"invoiceId": "inv_1"}
    done = await flow.settled(delivery.id)
    assert (done.status, done.attempts, done.last_status_code) == (DeliveryStatus.SUCCEEDED, 1, 200)
    detail = await flow.hooks.get_delivery(TENANT, delivery.id)
    assert [a.status_code for a in detail.attempts] == [200]
    assert detail.attempts[0].latency_ms >= 0


async def test_unsubscribed_and_disabled_endpoints_get_nothing(flow: Flow) -> None:
    await flow.endpoint(event_types=["export.ready"])
    disabled, _ = await flow.endpoint()
    await flow.hooks.disable(TENANT, disabled)
    published = await flow.hooks.publish(TENANT, "invoice.paid", {"n": 1})
    assert published.deliveries == []


async def test_retries_keep_the_id_back_off_and_honour_retry_after(flow: Flow) -> None:
    await flow.endpoint()
    flow.receiver.replies.extend(
        [
            Reply("500 Internal Server Error", b"boom"),
            Reply("500 Internal Server Error", b"boom"),
            Reply("503 Service Unavailable", b"", ("Retry-After: 2",)),
            Reply("429 Too Many Requests", b"", ("Retry-After: 1",)),
        ]
    )
    (delivery,) = (await flow.hooks.publish(TENANT, "invoice.paid", {"n": 1})).deliveries
    seen = await flow.receiver.wait_for(5, timeout=30)
    assert flow.receiver.ids() == [delivery.id] * 5
    assert all(s.verified for s in seen)
    timestamps = [int(s.headers["webhook-timestamp"]) for s in seen]
    assert timestamps == sorted(timestamps)
    gaps = [later.at - earlier.at for earlier, later in itertools.pairwise(seen)]
    # Backoff with jitter: the delay after attempt n lies in [base*2^(n-1)/2, base*2^(n-1)].
    assert gaps[0] >= BASE_DELAY_S / 2 and gaps[1] >= BASE_DELAY_S
    assert gaps[2] >= 2.0 and gaps[3] >= 1.0  # Retry-After, not the (shorter) backoff
    done = await flow.settled(delivery.id)
    assert (done.status, done.attempts) == (DeliveryStatus.SUCCEEDED, 5)
    detail = await flow.hooks.get_delivery(TENANT, delivery.id)
    assert [a.status_code for a in detail.attempts] == [500, 500, 503, 429, 200]
    assert all(a.next_retry_at is not None for a in detail.attempts[:4])


async def test_last_failure_fails_the_delivery_into_the_dlq(flow: Flow) -> None:
    _, secret = await flow.endpoint()
    flow.receiver.replies.extend([Reply("500 Internal Server Error", b"down")] * 5)
    (delivery,) = (await flow.hooks.publish(TENANT, "invoice.paid", {"n": 1})).deliveries
    done = await flow.settled(delivery.id, timeout_s=30)
    assert (done.status, done.attempts) == (DeliveryStatus.FAILED, 5)
    (entry,) = await flow.dead_letters()
    assert entry.tenant_id == TENANT and "HTTP 500" in entry.error_message
    assert secret not in json.dumps(entry.payload) + entry.error_message + entry.stacktrace
    # Retrying the dead job redelivers (a new generation), and it succeeds this time.
    _, submitted = await retry_entry(
        flow.system.queue, flow.system.sessions, entry.id, actor="ops", tenant_id=TENANT
    )
    assert submitted.created
    await flow.receiver.wait_for(6)
    again = await flow.settled(delivery.id)
    assert (again.status, again.generation) == (DeliveryStatus.SUCCEEDED, 2)
    assert set(flow.receiver.ids()) == {delivery.id}


async def test_410_gone_disables_the_endpoint(flow: Flow) -> None:
    endpoint_id, _ = await flow.endpoint()
    flow.receiver.replies.append(Reply("410 Gone", b"bye"))
    (delivery,) = (await flow.hooks.publish(TENANT, "invoice.paid", {"n": 1})).deliveries
    done = await flow.settled(delivery.id)
    assert (done.status, done.attempts) == (DeliveryStatus.FAILED, 1)
    endpoint = await flow.hooks.get_endpoint(TENANT, endpoint_id)
    assert not endpoint.enabled and "410" in (endpoint.disabled_reason or "")
    assert (await flow.hooks.publish(TENANT, "invoice.paid", {"n": 2})).deliveries == []


async def test_a_redirect_is_a_failure_and_is_not_followed(flow: Flow) -> None:
    await flow.endpoint()
    target = "http://169.254.169.254/latest/meta-data/"
    flow.receiver.replies.extend([Reply("302 Found", b"", (f"Location: {target}",))] * 5)
    (delivery,) = (await flow.hooks.publish(TENANT, "invoice.paid", {"n": 1})).deliveries
    done = await flow.settled(delivery.id, timeout_s=30)
    assert done.status is DeliveryStatus.FAILED
    assert [s.path for s in flow.receiver.seen] == ["/hooks"] * 5
    detail = await flow.hooks.get_delivery(TENANT, delivery.id)
    assert {a.error_class for a in detail.attempts} == {"redirect"}


async def test_send_test_event_and_redeliver_keep_the_webhook_id(flow: Flow) -> None:
    endpoint_id, _ = await flow.endpoint(event_types=["invoice.paid"])
    delivery = await flow.hooks.send_test(TENANT, endpoint_id)
    await flow.settled(delivery.id)
    again = await flow.hooks.redeliver(TENANT, delivery.id)
    assert again.generation == 2
    seen = await flow.receiver.wait_for(2)
    assert [s.json()["type"] for s in seen] == ["webhook.test"] * 2
    assert flow.receiver.ids() == [delivery.id] * 2
    assert all(s.verified for s in seen)
    done = await flow.settled(delivery.id)
    assert (done.status, done.attempts) == (DeliveryStatus.SUCCEEDED, 2)


async def test_other_tenants_see_nothing(flow: Flow) -> None:
    endpoint_id, _ = await flow.endpoint()
    (delivery,) = (await flow.hooks.publish(TENANT, "invoice.paid", {"n": 1})).deliveries
    with pytest.raises(NotFound):
        await flow.hooks.get_endpoint("globex", endpoint_id)
    with pytest.raises(NotFound):
        await flow.hooks.get_delivery("globex", delivery.id)
    with pytest.raises(NotFound):
        await flow.hooks.redeliver("globex", delivery.id)
    with pytest.raises(NotFound):
        await flow.hooks.send_test("globex", endpoint_id)
    assert await flow.hooks.list_deliveries("globex") == []
    assert await flow.hooks.list_endpoints("globex") == []


SSRF_URLS = [
    ("http://127.0.0.1/x", "loopback"),
    ("http://2130706433/x", "loopback"),
    ("http://0x7f.1/x", "loopback"),
    ("http://0177.0.0.1/x", "loopback"),
    ("http://[::1]/x", "loopback"),
    ("http://[::ffff:127.0.0.1]/x", "ipv4-embedded-in-ipv6"),
    ("http://[::ffff:7f00:1]/x", "ipv4-embedded-in-ipv6"),
    ("http://169.254.169.254/latest/meta-data/", "metadata"),
    ("http://[fd00:ec2::254]/x", "metadata"),
    ("http://10.0.0.5/x", "private"),
    ("http://100.64.0.1/x", "cgnat"),
    ("http://[64:ff9b::a00:1]/x", "ipv4-embedded-in-ipv6"),
    ("http://[2002:a00:1::]/x", "ipv4-embedded-in-ipv6"),
    ("http://192.0.2.10/x", "documentation"),
    ("http://224.0.0.1/x", "multicast"),
    ("http://240.0.0.1/x", "reserved"),
    ("http://metadata.google.internal/x", "metadata"),
    ("http://0.0.0.0/x", "unspecified"),
    ("http://localhost:9/x", "loopback"),
]


@pytest.mark.parametrize(("url", "rule"), SSRF_URLS)
async def test_ssrf_spellings_are_refused_at_registration(
    settings: Settings, url: str, rule: str
) -> None:
    strict = settings.model_copy(update={"outbound_allow_http": True})
    async for flow in _open(strict, start=False):
        with pytest.raises(Refused) as refused:
            await flow.hooks.create_endpoint(TENANT, url)
        assert refused.value.rule == rule and f"(rule: {rule})" in str(refused.value)
        assert await flow.hooks.list_endpoints(TENANT) == []


async def test_a_name_that_resolves_to_loopback_is_refused_at_connect_time(
    settings: Settings,
) -> None:
    # Registered while a permissive policy allowed it; the workers' policy allows nothing
    # local, so the send itself is refused: the guard runs again at connect time.
    strict = settings.model_copy(
        update={"outbound_allow_http": True, "webhook_retry_base_s": BASE_DELAY_S}
    )
    async for flow in _open(strict):
        lenient = Webhooks(
            flow.system.sessions,
            flow.system.queue,
            flow.hooks._box,
            GuardPolicy.from_strings(True, ["127.0.0.0/8"]),
        )
        url = f"http://localhost:{flow.receiver.port}/hooks"
        await lenient.create_endpoint(TENANT, url)
        (delivery,) = (await flow.hooks.publish(TENANT, "invoice.paid", {"n": 1})).deliveries
        done = await flow.settled(delivery.id)
        assert done.status is DeliveryStatus.FAILED and done.attempts == 1
        assert "loopback" in (done.last_error or "")
        assert flow.receiver.seen == []
        assert outbound_policy(strict).allow_networks == ()


class DownQueue:
    """A submitter whose Redis is down."""

    async def submit_bulk(self, subs: list[Submission]) -> list[Submitted]:
        raise QueueUnavailable("Redis is down")

    async def get(self, job_id: str, *, tenant_id: str | None = None) -> JobRecord:
        raise QueueUnavailable("Redis is down")


async def test_outbox_enqueues_what_publish_could_not(hook_settings: Settings) -> None:
    async for flow in _open(hook_settings, start=False):
        await flow.endpoint()
        offline = Webhooks(
            flow.system.sessions, DownQueue(), flow.hooks._box, outbound_policy(hook_settings)
        )
        published = await offline.publish(TENANT, "invoice.paid", {"n": 1})
        assert not published.enqueued
        (delivery,) = published.deliveries
        assert (await flow.delivery(delivery.id)).enqueued_generation == 0
        await flow.system.runtime.start()  # its outbox loop enqueues the waiting delivery
        (seen,) = await flow.receiver.wait_for(1)
        assert seen.webhook_id == delivery.id
        done = await flow.settled(delivery.id)
        assert (done.status, done.enqueued_generation) == (DeliveryStatus.SUCCEEDED, 1)


async def test_sweep_requeues_a_lost_job_exactly_once(hook_settings: Settings) -> None:
    async for flow in _open(hook_settings, start=False):
        await flow.endpoint()
        (delivery,) = (await flow.hooks.publish(TENANT, "invoice.paid", {"n": 1})).deliveries
        job_id = webhook_outbox.queue_job_id(delivery)
        assert (await flow.system.queue.get(job_id)).state is JobState.WAITING
        await _lose_job(flow.system, job_id)
        later = datetime.now(UTC) + timedelta(minutes=2)
        sweeps = [
            webhook_outbox.sweep(
                flow.system.sessions,
                flow.system.queue,
                now=later,
                stale_after=timedelta(minutes=5),
            )
            for _ in range(4)
        ]
        assert sum(await asyncio.gather(*sweeps)) == 1
        moved = await flow.delivery(delivery.id)
        assert (moved.generation, moved.enqueued_generation) == (2, 2)
        assert (await flow.system.queue.get(webhook_outbox.queue_job_id(moved))).state in (
            JobState.WAITING,
            JobState.ACTIVE,
        )
        # A live job is never duplicated: sweeping again moves nothing.
        again = await webhook_outbox.sweep(
            flow.system.sessions,
            flow.system.queue,
            now=later,
            stale_after=timedelta(minutes=5),
        )
        assert again == 0
        await flow.system.runtime.start()
        done = await flow.settled(delivery.id)
        assert done.status is DeliveryStatus.SUCCEEDED
        assert flow.receiver.ids() == [delivery.id]


async def _lose_job(s: System, job_id: str) -> None:
    """The job vanishes from the queue's storage, as when Redis loses data."""
    if isinstance(s.queue, PgJobQueue):
        queue = (await s.queue.get(job_id)).queue
        await sql(s.queue, "DELETE FROM job WHERE queue = %s AND id = %s", (queue, job_id))
        return
    settings = s.settings
    assert settings.redis_url is not None
    client = redis.asyncio.Redis.from_url(settings.redis_url)
    try:
        base = f"{settings.queue_prefix}:{KIND}"
        await client.delete(f"{base}:{job_id}")
        for key in ("wait", "paused"):
            await client.lrem(f"{base}:{key}", 0, job_id)
        await client.zrem(f"{base}:prioritized", job_id)
    finally:
        await client.aclose()


async def test_the_secret_never_reaches_logs_jobs_or_errors(
    hook_settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async for flow in _open(hook_settings):
        endpoint_id, secret = await flow.endpoint()
        flow.receiver.replies.extend([Reply("500 Internal Server Error", echo=True)] * 5)
        (delivery,) = (await flow.hooks.publish(TENANT, "invoice.paid", {"n": 1})).deliveries
        await flow.settled(delivery.id, timeout_s=30)
        _, rotated = await flow.hooks.rotate_secret(TENANT, endpoint_id)
        job = await flow.system.queue.get(webhook_outbox.queue_job_id(delivery))
        (entry,) = await flow.dead_letters()
        detail = await flow.hooks.get_delivery(TENANT, delivery.id)
        endpoint = await flow.hooks.get_endpoint(TENANT, endpoint_id)
        dumped = [
            caplog.text,
            json.dumps(job.as_dict(), default=str),
            repr(entry),
            repr(detail),
            repr(endpoint),
        ]
        for secret_text in (secret, rotated, secret.removeprefix("whsec_")):
            assert not any(secret_text in text for text in dumped)
        assert job.payload.keys() <= {
            "deliveryId",
            "generation",
            "tenantId",
            "tenantTier",
            "jobId",
            "priorityClass",
        }
        assert await _queue_holds(flow.system, delivery.id) is True  # the probe sees jobs
        assert await _queue_holds(flow.system, secret) is False


async def _queue_holds(s: System, needle: str) -> bool:
    """Whether any queue storage holds `needle`: a Redis hash, or a row in the PostgreSQL
    queue schema."""
    if isinstance(s.queue, PgJobQueue):
        tables = await sql(
            s.queue,
            "SELECT table_name AS t FROM information_schema.tables"
            " WHERE table_schema = %s AND table_type = 'BASE TABLE'",
            (s.queue.schema,),
        )
        assert any(row["t"] == "job" for row in tables)
        for row in tables:
            table = quote_ident(row["t"])
            query = f"SELECT 1 FROM {table} r WHERE strpos(r::text, %s) > 0 LIMIT 1"
            if await sql(s.queue, query, (needle,)):
                return True
        return False
    settings = s.settings
    assert settings.redis_url is not None
    client = redis.asyncio.Redis.from_url(settings.redis_url)
    try:
        async for key in client.scan_iter(match=f"{settings.queue_prefix}:*"):
            kind = await client.type(key)
            if kind == b"hash":
                values = await client.hvals(key)
                if any(needle.encode() in v for v in values):
                    return True
    finally:
        await client.aclose()
    return False


async def test_enterprise_deliveries_use_the_express_lane(flow: Flow) -> None:
    await flow.endpoint()
    published = await flow.hooks.publish(TENANT, "invoice.paid", {"n": 1}, tier=Tier.ENTERPRISE)
    (delivery,) = published.deliveries
    assert delivery.tier == "enterprise"
    job = await flow.system.queue.get(webhook_outbox.queue_job_id(delivery))
    assert job.queue == "webhook-delivery-express"
    await flow.settled(delivery.id)


async def test_a_disabled_endpoint_is_emailed_to_the_tenant_once(hook_settings: Settings) -> None:
    registry = default_registry().select([KIND, "email-sending"])
    async with WebhookReceiver() as receiver, system(hook_settings, registry) as sys_:
        await TenantDirectory(sys_.sessions).create_tenant(
            TENANT, Tier.GROWTH, contact_email="ops@acme.example"
        )
        hooks = Webhooks.from_settings(hook_settings, sys_.sessions, sys_.queue)
        endpoint, _ = await hooks.create_endpoint(TENANT, receiver.url("/hooks?token=s3cret"))
        receiver.replies.append(Reply("410 Gone", b"bye"))
        await hooks.publish(TENANT, "invoice.paid", {"n": 1})

        async def outbox() -> list[Any]:
            return list_outbox(hook_settings.outbox_dir)

        (mail,) = await eventually(outbox, bool, timeout_s=20)
        text = read_outbox(hook_settings.outbox_dir, mail.name)
        assert "ops@acme.example" in text and "410" in text
        assert "s3cret" not in text  # the URL is shown without its query
        assert len(await hooks.notifications(TENANT)) == 1
        assert not (await hooks.get_endpoint(TENANT, endpoint.id)).enabled
        assert len(list_outbox(hook_settings.outbox_dir)) == 1
