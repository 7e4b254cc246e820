"""Backlog quotas over HTTP: 429 with Retry-After and nothing enqueued; usage reads."""

from __future__ import annotations

from settler_jobs.config import Settings
from tests.api.kinds import registry
from tests.api.live import OPERATOR, auth, live_api


async def test_over_quota_answers_429_with_retry_after_and_enqueues_nothing(
    api_settings: Settings,
) -> None:
    tight = api_settings.model_copy(
        update={"tenant_backlog_quotas": {"starter": 5}, "quota_retry_after_s": 17}
    )
    async with live_api(tight, registry=registry()) as live:
        key = await live.tenant_key("acme", "starter")
        jobs = [{"kind": "echo", "data": {"i": i}} for i in range(4)]
        first = await live.http.post("/v1/jobs/bulk", json={"jobs": jobs}, headers=auth(key))
        assert first.status_code == 201, first.text
        refused = await live.http.post("/v1/jobs/bulk", json={"jobs": jobs}, headers=auth(key))
        assert refused.status_code == 429
        assert refused.headers["retry-after"] == "17"
        assert refused.json()["error"] == "quota_exceeded"
        assert "quota of 5" in refused.json()["detail"]
        usage = await live.http.get("/v1/usage", headers=auth(key))
        assert usage.status_code == 200
        body = usage.json()
        assert (body["waiting"], body["quota"], body["tier"]) == (4, 5, "starter")
        listed = await live.http.get("/v1/jobs", headers=auth(key))
        assert len(listed.json()["jobs"]) == 4  # the refused bulk left nothing behind
        one = await live.http.post("/v1/jobs", json={"kind": "echo"}, headers=auth(key))
        assert one.status_code == 201
        assert (
            await live.http.post("/v1/jobs", json={"kind": "echo"}, headers=auth(key))
        ).status_code == 429
        admin = await live.http.get("/v1/admin/tenants/acme/usage", headers=OPERATOR)
        assert admin.status_code == 200 and admin.json()["waiting"] == 5
        missing = await live.http.get("/v1/admin/tenants/nobody/usage", headers=OPERATOR)
        assert missing.status_code == 404
        assert (await live.http.get("/v1/admin/tenants/acme/usage")).status_code == 401
