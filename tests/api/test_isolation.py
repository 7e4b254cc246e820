"""Tenant isolation on every route that takes an id: another tenant's id answers exactly
like an id that does not exist (same status, same body but for the id, same headers).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx
import pytest

from settler_jobs.config import Settings
from settler_jobs.dlq import store as dlq
from tests.api.kinds import registry
from tests.api.live import LiveApi, auth, live_api
from tests.harness import system


async def public_dns(host: str, port: int) -> Sequence[str]:
    return ["93.184.215.14"]


# (method, path template, JSON body) of every tenant route with an object id.
ROUTES: tuple[tuple[str, str, dict[str, object] | None], ...] = (
    ("GET", "/v1/jobs/{job}", None),
    ("POST", "/v1/jobs/{job}/cancel", None),
    ("POST", "/v1/jobs/{job}/retry", None),
    ("GET", "/v1/dlq/{entry}", None),
    ("GET", "/v1/webhooks/endpoints/{endpoint}", None),
    ("PATCH", "/v1/webhooks/endpoints/{endpoint}", {"description": "mine now"}),
    ("POST", "/v1/webhooks/endpoints/{endpoint}/enable", None),
    ("POST", "/v1/webhooks/endpoints/{endpoint}/disable", {"reason": "x"}),
    ("POST", "/v1/webhooks/endpoints/{endpoint}/rotate-secret", {"grace_s": 0}),
    ("POST", "/v1/webhooks/endpoints/{endpoint}/test", None),
    ("DELETE", "/v1/webhooks/endpoints/{endpoint}", None),
    ("GET", "/v1/webhooks/deliveries/{delivery}", None),
    ("POST", "/v1/webhooks/deliveries/{delivery}/redeliver", None),
    ("POST", "/v1/webhooks/deliveries/{delivery}/cancel", None),
    ("GET", "/v1/dlq?before={entry}", None),
    ("GET", "/v1/webhooks/deliveries?before={delivery}", None),
)


@dataclass
class Owned:
    """Ids of objects tenant `acme` owns, and ids of the same shape that exist nowhere."""

    ids: dict[str, str]
    missing: dict[str, str]


@pytest.fixture
async def world(api_settings: Settings) -> AsyncIterator[tuple[LiveApi, Owned, str, str]]:
    async with (
        system(api_settings, registry(), start=False) as sys_,
        live_api(api_settings, registry=registry(), resolver=public_dns) as live,
    ):
        owner, intruder = await live.tenant_key("acme"), await live.tenant_key("globex")
        job = await live.http.post("/v1/jobs", json={"kind": "echo"}, headers=auth(owner))
        hook = await live.http.post(
            "/v1/webhooks/endpoints",
            json={"url": "https://hooks.example.com/in"},
            headers=auth(owner),
        )
        assert hook.status_code == 201, hook.text
        event = await live.http.post(
            "/v1/webhooks/events", json={"type": "invoice.paid", "payload": {}}, headers=auth(owner)
        )
        assert event.status_code == 201, event.text
        now = datetime.now(UTC)
        async with sys_.sessions() as session, session.begin():
            entry = await dlq.record_failure(
                session,
                dlq.FailureRecord(
                    "echo", "echo", "jdead", "acme", "starter", {}, "Boom", "x", "", 1, 1, now, now
                ),
                now,
            )
        assert entry is not None
        ids = {
            "job": job.json()["job"]["id"],
            "endpoint": hook.json()["endpoint"]["id"],
            "delivery": event.json()["deliveries"][0]["id"],
            "entry": entry.id,
        }
        missing = {
            "job": "j" + "A" * 21,
            "endpoint": "0" * 32,
            "delivery": "msg_" + "0" * 32,
            "entry": "0" * 32,
        }
        yield live, Owned(ids, missing), owner, intruder


def _comparable(response: httpx.Response, object_id: str) -> tuple[int, object, set[str]]:
    body = response.text.replace(object_id, "<id>")
    headers = {h for h in response.headers if h not in ("date", "content-length")}
    return response.status_code, body, headers


async def test_every_route_hides_other_tenants_objects(
    world: tuple[LiveApi, Owned, str, str],
) -> None:
    live, owned, owner, intruder = world
    for method, template, body in ROUTES:
        name = template.split("{")[1].split("}")[0]
        foreign_id, missing_id = owned.ids[name], owned.missing[name]
        foreign = await live.http.request(
            method, template.format(**{name: foreign_id}), json=body, headers=auth(intruder)
        )
        absent = await live.http.request(
            method, template.format(**{name: missing_id}), json=body, headers=auth(intruder)
        )
        assert foreign.status_code == 404, (template, foreign.text)
        assert _comparable(foreign, foreign_id) == _comparable(absent, missing_id), template
    # Nothing the intruder did touched the owner's objects.
    job = await live.http.get(f"/v1/jobs/{owned.ids['job']}", headers=auth(owner))
    assert job.json()["state"] == "waiting"
    hook = await live.http.get(
        f"/v1/webhooks/endpoints/{owned.ids['endpoint']}", headers=auth(owner)
    )
    assert hook.json()["description"] == "" and hook.json()["enabled"] is True


async def test_lists_show_only_the_callers_objects(
    world: tuple[LiveApi, Owned, str, str],
) -> None:
    live, _owned, owner, intruder = world
    for path in ("/v1/dlq", "/v1/webhooks/endpoints", "/v1/webhooks/deliveries"):
        assert (await live.http.get(path, headers=auth(intruder))).json() == [], path
        assert len((await live.http.get(path, headers=auth(owner))).json()) == 1, path
    jobs = await live.http.get("/v1/jobs", headers=auth(intruder))
    assert jobs.json()["jobs"] == []
    notes = await live.http.get("/v1/webhooks/notifications", headers=auth(intruder))
    assert notes.json() == []
