"""The HTTP API on a real Redis Cluster: readiness, a rate-limited submit, the job read back."""

from __future__ import annotations

from typing import Any

import httpx
from pydantic import SecretStr

from settler_jobs.config import Settings
from tests.api.kinds import registry
from tests.api.live import OPERATOR_TOKEN, auth, live_api
from tests.harness import system
from tests.helpers import eventually


async def test_submit_and_read_back_through_the_api(cluster_settings: Settings) -> None:
    settings = cluster_settings.model_copy(
        update={
            "operator_token": SecretStr(OPERATOR_TOKEN),
            "worker_heartbeat_s": 0.2,
            "api_rate_limits": {**cluster_settings.api_rate_limits, "growth": 0.0, "free": 1.0},
            "api_rate_burst_s": 1.0,
        }
    )
    async with (
        system(settings, registry()) as _,
        live_api(settings, registry=registry()) as live,
    ):
        ready = await eventually(lambda: live.http.get("/readyz"), lambda r: r.status_code == 200)
        assert ready.json()["checks"] == {"redis": "ok", "database": "ok", "workers": "ok"}

        key = await live.tenant_key("acme", tier="growth")
        body = {"kind": "echo", "data": {"n": 1}}
        created = await live.http.post("/v1/jobs", json=body, headers=auth(key))
        assert created.status_code == 201, created.text
        job_id = created.json()["job"]["id"]
        small = await live.tenant_key("small", tier="free")
        statuses = [
            (await live.http.post("/v1/jobs", json=body, headers=auth(small))).status_code
            for _ in range(2)
        ]
        assert statuses == [201, 429]  # the token bucket (a Lua script) on the cluster

        async def job() -> dict[str, Any]:
            response: httpx.Response = await live.http.get(f"/v1/jobs/{job_id}", headers=auth(key))
            assert response.status_code == 200, response.text
            found: dict[str, Any] = response.json()
            return found

        done = await eventually(job, lambda j: j["state"] == "completed")
        assert done["result"] == {"echo": {"n": 1}}
        other = await live.tenant_key("globex", tier="growth")
        assert (await live.http.get(f"/v1/jobs/{job_id}", headers=auth(other))).status_code == 404
