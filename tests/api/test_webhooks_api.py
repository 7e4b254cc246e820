"""Webhooks over HTTP: endpoints, publishing, deliveries to a real signed receiver."""

from __future__ import annotations

from settler_jobs.config import Settings
from tests.api.kinds import registry
from tests.api.live import auth, live_api
from tests.harness import system
from tests.helpers import eventually
from tests.webhook_receiver import WebhookReceiver


async def test_endpoint_lifecycle_publish_and_delivery_log(api_settings: Settings) -> None:
    local = api_settings.model_copy(
        update={"outbound_allow_http": True, "outbound_allow_networks": ["127.0.0.1/32"]}
    )
    async with (
        WebhookReceiver() as receiver,
        system(local, registry()),
        live_api(local, registry=registry()) as live,
    ):
        key = await live.tenant_key("acme", "growth")
        h = auth(key)
        created = await live.http.post(
            "/v1/webhooks/endpoints",
            json={"url": receiver.url(), "event_types": ["invoice.paid"], "description": "books"},
            headers=h,
        )
        assert created.status_code == 201, created.text
        endpoint, secret = created.json()["endpoint"], created.json()["secret"]
        receiver.secrets.append(secret)
        assert secret not in (await live.http.get("/v1/webhooks/endpoints", headers=h)).text
        refused = await live.http.post(
            "/v1/webhooks/endpoints", json={"url": "http://169.254.169.254/x"}, headers=h
        )
        assert refused.status_code == 422 and refused.json()["error"] == "refused_url"

        published = await live.http.post(
            "/v1/webhooks/events",
            json={"type": "invoice.paid", "payload": {"invoiceId": "inv_1"}},
            headers=h,
        )
        assert published.status_code == 201 and published.json()["enqueued"] is True
        delivery = published.json()["deliveries"][0]
        assert delivery["tier"] == "growth"
        (seen,) = await receiver.wait_for(1)
        assert seen.verified and seen.webhook_id == delivery["id"]

        async def detail() -> dict[str, object]:
            r = await live.http.get(f"/v1/webhooks/deliveries/{delivery['id']}", headers=h)
            body: dict[str, object] = r.json()
            return body

        done = await eventually(detail, lambda d: d["delivery"]["status"] == "succeeded")  # type: ignore[index]
        assert len(done["attempts"]) == 1  # type: ignore[arg-type]
        again = await live.http.post(
            f"/v1/webhooks/deliveries/{delivery['id']}/redeliver", headers=h
        )
        assert again.status_code == 200
        await receiver.wait_for(2)

        patched = await live.http.patch(
            f"/v1/webhooks/endpoints/{endpoint['id']}", json={"event_types": None}, headers=h
        )
        assert patched.json()["event_types"] is None and patched.json()["description"] == "books"
        disabled = await live.http.post(
            f"/v1/webhooks/endpoints/{endpoint['id']}/disable", json={"reason": "maint"}, headers=h
        )
        assert disabled.json()["enabled"] is False
        test_refused = await live.http.post(
            f"/v1/webhooks/endpoints/{endpoint['id']}/test", headers=h
        )
        assert test_refused.status_code == 409
        await live.http.post(f"/v1/webhooks/endpoints/{endpoint['id']}/enable", headers=h)
        rotated = await live.http.post(
            f"/v1/webhooks/endpoints/{endpoint['id']}/rotate-secret",
            json={"grace_s": 60},
            headers=h,
        )
        assert rotated.json()["secret"] != secret
        receiver.secrets.append(rotated.json()["secret"])
        test = await live.http.post(f"/v1/webhooks/endpoints/{endpoint['id']}/test", headers=h)
        assert test.status_code == 201
        seen_all = await receiver.wait_for(3)
        assert seen_all[-1].json()["type"] == "webhook.test"
        listed = await live.http.get(
            "/v1/webhooks/deliveries", params={"endpoint_id": endpoint["id"]}, headers=h
        )
        assert len(listed.json()) == 2
        deleted = await live.http.delete(f"/v1/webhooks/endpoints/{endpoint['id']}", headers=h)
        assert deleted.status_code == 204
        assert (await live.http.get("/v1/webhooks/endpoints", headers=h)).json() == []
