"""Jobs over HTTP: submit (idempotent), bulk, get, list, cancel, retry; tier from the key."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from settler_jobs.config import Settings
from settler_jobs.domain import Tier
from tests.api.kinds import registry
from tests.api.live import LiveApi, auth, live_api
from tests.harness import System, system
from tests.helpers import eventually


@pytest.fixture
async def stack(api_settings: Settings) -> AsyncIterator[tuple[LiveApi, System]]:
    """Workers for the test kinds and a live API over the same Redis and database."""
    async with (
        system(api_settings, registry()) as sys_,
        live_api(api_settings, registry=registry()) as live,
    ):
        yield live, sys_


async def _job(live: LiveApi, key: str, job_id: str) -> dict[str, Any]:
    response = await live.http.get(f"/v1/jobs/{job_id}", headers=auth(key))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_submit_runs_the_job_with_the_keys_tenant_and_tier(
    stack: tuple[LiveApi, System],
) -> None:
    live, _ = stack
    key = await live.tenant_key("acme", "scale")
    response = await live.http.post(
        "/v1/jobs", json={"kind": "echo", "data": {"n": 1}}, headers=auth(key)
    )
    assert response.status_code == 201, response.text
    job = response.json()["job"]
    assert job["tier"] == "scale" and job["data"] == {"n": 1}
    done = await eventually(lambda: _job(live, key, job["id"]), lambda j: j["state"] == "completed")
    assert done["result"] == {"echo": {"n": 1}}


async def test_a_body_cannot_choose_tenant_or_tier(stack: tuple[LiveApi, System]) -> None:
    live, _ = stack
    key = await live.tenant_key("acme", "free")
    for extra in ({"tenant_id": "other"}, {"tier": "enterprise"}):
        response = await live.http.post(
            "/v1/jobs", json={"kind": "echo", **extra}, headers=auth(key)
        )
        assert response.status_code == 422
        assert response.json()["detail"][0]["loc"] == ["body", next(iter(extra))]


async def test_tier_change_applies_to_the_next_request(stack: tuple[LiveApi, System]) -> None:
    live, _ = stack
    key = await live.tenant_key("acme", "free")
    await live.directory.set_tier("acme", Tier.GROWTH)
    response = await live.http.post("/v1/jobs", json={"kind": "echo"}, headers=auth(key))
    assert response.json()["job"]["tier"] == "growth"


async def test_idempotency_key_returns_the_same_job(stack: tuple[LiveApi, System]) -> None:
    live, _ = stack
    key = await live.tenant_key("acme")
    headers = auth(key) | {"Idempotency-Key": "order-42"}
    first = await live.http.post("/v1/jobs", json={"kind": "echo"}, headers=headers)
    again = await live.http.post("/v1/jobs", json={"kind": "echo"}, headers=headers)
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json()["job"]["id"] == again.json()["job"]["id"]
    assert again.json()["created"] is False
    # The same key of another tenant is another job.
    other = await live.tenant_key("globex")
    theirs = await live.http.post(
        "/v1/jobs", json={"kind": "echo"}, headers=auth(other) | {"Idempotency-Key": "order-42"}
    )
    assert theirs.status_code == 201 and theirs.json()["job"]["id"] != first.json()["job"]["id"]


async def test_bulk_submit_and_all_or_nothing_validation(stack: tuple[LiveApi, System]) -> None:
    live, _ = stack
    key = await live.tenant_key("acme")
    jobs = [{"kind": "echo", "data": {"i": i}} for i in range(50)]
    response = await live.http.post("/v1/jobs/bulk", json={"jobs": jobs}, headers=auth(key))
    assert response.status_code == 201
    ids = [j["id"] for j in response.json()["jobs"]]
    assert len(set(ids)) == 50
    bad = await live.http.post(
        "/v1/jobs/bulk",
        json={"jobs": [{"kind": "echo"}, {"kind": "echo", "attempts": 0}]},
        headers=auth(key),
    )
    assert bad.status_code == 422
    assert bad.json()["detail"][0]["loc"] == ["body", "jobs", 1, "attempts"]
    unknown = await live.http.post(
        "/v1/jobs/bulk", json={"jobs": [{"kind": "echo"}, {"kind": "nope"}]}, headers=auth(key)
    )
    assert unknown.status_code == 422 and "nope" in unknown.json()["detail"]


async def test_list_filters_pages_and_sees_only_the_tenants_jobs(
    api_settings: Settings,
) -> None:
    async with (
        system(api_settings, registry(), start=False),
        live_api(api_settings, registry=registry()) as live,
    ):
        mine, theirs = await live.tenant_key("acme"), await live.tenant_key("globex")
        for key, count in ((mine, 7), (theirs, 5)):
            jobs = [{"kind": "echo", "data": {"i": i}} for i in range(count)]
            await live.http.post("/v1/jobs/bulk", json={"jobs": jobs}, headers=auth(key))
        await live.http.post("/v1/jobs", json={"kind": "boom"}, headers=auth(mine))
        seen: list[str] = []
        offset: int | None = 0
        while offset is not None:
            page = await live.http.get(
                "/v1/jobs",
                params={"kind": "echo", "limit": 3, "offset": offset},
                headers=auth(mine),
            )
            assert page.status_code == 200
            seen += [j["id"] for j in page.json()["jobs"]]
            offset = page.json()["next_offset"]
        assert len(seen) == len(set(seen)) == 7
        waiting = await live.http.get("/v1/jobs", params={"state": "waiting"}, headers=auth(mine))
        assert len(waiting.json()["jobs"]) == 8
        none = await live.http.get("/v1/jobs", params={"state": "failed"}, headers=auth(mine))
        assert none.json() == {"jobs": [], "next_offset": None}
        assert (
            await live.http.get("/v1/jobs", params={"state": "cancelled"}, headers=auth(mine))
        ).status_code == 422


async def test_cancel_and_retry(api_settings: Settings) -> None:
    async with (
        system(api_settings, registry(), start=False) as sys_,
        live_api(api_settings, registry=registry()) as live,
    ):
        key = await live.tenant_key("acme")
        waiting = await live.http.post("/v1/jobs", json={"kind": "echo"}, headers=auth(key))
        job_id = waiting.json()["job"]["id"]
        cancelled = await live.http.post(f"/v1/jobs/{job_id}/cancel", headers=auth(key))
        assert cancelled.json() == {"id": job_id, "state": "cancelled"}
        gone = await live.http.get(f"/v1/jobs/{job_id}", headers=auth(key))
        assert gone.status_code == 404
        failing = await live.http.post("/v1/jobs", json={"kind": "boom"}, headers=auth(key))
        boom_id = failing.json()["job"]["id"]
        not_failed = await live.http.post(f"/v1/jobs/{boom_id}/retry", headers=auth(key))
        assert not_failed.status_code == 409 and not_failed.json()["error"] == "invalid_state"
        await sys_.runtime.start()
        await eventually(lambda: _job(live, key, boom_id), lambda j: j["state"] == "failed")
        retried = await live.http.post(f"/v1/jobs/{boom_id}/retry", headers=auth(key))
        assert retried.status_code == 200 and retried.json()["id"] == boom_id
        # The retried job ran (and failed) once more: a second dead letter of the same job.
        entries = await eventually(sys_.dead_letters, lambda found: len(found) == 2)
        assert {e.job_id for e in entries} == {boom_id}
