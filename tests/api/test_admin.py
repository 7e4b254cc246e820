"""Operator routes: queue counts, throughput, pause/resume; the dead-letter queue."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from settler_jobs.config import Settings
from tests.api.kinds import registry
from tests.api.live import OPERATOR, LiveApi, auth, live_api
from tests.harness import System, system
from tests.helpers import eventually


@pytest.fixture
async def stack(api_settings: Settings) -> AsyncIterator[tuple[LiveApi, System]]:
    async with (
        system(api_settings, registry()) as sys_,
        live_api(api_settings, registry=registry()) as live,
    ):
        yield live, sys_


def _kind(queues: list[dict[str, object]], name: str) -> dict[str, object]:
    return next(q for q in queues if q["kind"] == name)


async def test_queue_counts_throughput_and_pause(stack: tuple[LiveApi, System]) -> None:
    live, _ = stack
    key = await live.tenant_key("acme")
    paused = await live.http.post("/v1/admin/queues/echo/pause", headers=OPERATOR)
    assert paused.json() == {"kind": "echo", "paused": True}
    jobs = [{"kind": "echo"} for _ in range(3)]
    await live.http.post("/v1/jobs/bulk", json={"jobs": jobs}, headers=auth(key))
    queues = (await live.http.get("/v1/admin/queues", headers=OPERATOR)).json()
    echo = _kind(queues, "echo")
    assert echo["counts"]["waiting"] == 3  # type: ignore[index]
    assert isinstance(echo["oldest_waiting_ms"], int)
    assert [lane["queue"] for lane in echo["lanes"]] == ["echo", "echo-express"]  # type: ignore[attr-defined]
    await live.http.post("/v1/admin/queues/echo/resume", headers=OPERATOR)

    async def echo_now() -> dict[str, object]:
        found = (await live.http.get("/v1/admin/queues", headers=OPERATOR)).json()
        return _kind(found, "echo")

    done = await eventually(echo_now, lambda q: q["completed_per_min"] == 3)
    assert done["counts"]["waiting"] == 0 and done["oldest_waiting_ms"] is None  # type: ignore[index]
    unknown = await live.http.post("/v1/admin/queues/nope/pause", headers=OPERATOR)
    assert unknown.status_code == 422


async def test_dead_letters_for_operators_and_their_tenant(stack: tuple[LiveApi, System]) -> None:
    live, sys_ = stack
    key, other = await live.tenant_key("acme"), await live.tenant_key("globex")
    await live.http.post("/v1/jobs", json={"kind": "boom", "data": {"n": 1}}, headers=auth(key))
    entries = await eventually(sys_.dead_letters, lambda found: len(found) == 1)
    entry_id = entries[0].id
    own = await live.http.get("/v1/dlq", headers=auth(key))
    assert [e["id"] for e in own.json()] == [entry_id]
    assert (await live.http.get(f"/v1/dlq/{entry_id}", headers=auth(key))).json()[
        "error_message"
    ] == "boom on purpose"
    assert (await live.http.get("/v1/dlq", headers=auth(other))).json() == []
    listed = await live.http.get("/v1/admin/dlq", params={"tenant": "acme"}, headers=OPERATOR)
    assert [e["id"] for e in listed.json()] == [entry_id]
    shown = await live.http.get(f"/v1/admin/dlq/{entry_id}", headers=OPERATOR)
    assert shown.json()["tenant_id"] == "acme" and shown.json()["status"] == "open"
    retried = await live.http.post(
        f"/v1/admin/dlq/{entry_id}/retry", json={"actor": "ops-ann"}, headers=OPERATOR
    )
    assert retried.status_code == 200, retried.text
    assert retried.json()["entry"]["status"] == "retried"
    new_job = retried.json()["job_id"]
    # The retried job belongs to the same tenant (and fails again into the DLQ).
    assert (await live.http.get(f"/v1/jobs/{new_job}", headers=auth(key))).status_code == 200
    second = await eventually(sys_.dead_letters, lambda found: len(found) == 2)
    newest = next(e for e in second if e.id != entry_id)
    resolved = await live.http.post(
        f"/v1/admin/dlq/{newest.id}/resolve", json={"note": "known bug"}, headers=OPERATOR
    )
    assert resolved.json()["status"] == "resolved" and "known bug" in resolved.json()["notes"]
    again = await live.http.post(
        f"/v1/admin/dlq/{newest.id}/resolve", json={"note": "twice"}, headers=OPERATOR
    )
    assert again.status_code == 409
